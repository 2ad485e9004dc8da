"""Output folders that are never overwritten by accident, the rank test for multi-process runs, and the small
writers and progress bars that the training workflows share."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import track

from medssl.data.plan import Fingerprint
from medssl.errors import MedsslError

T = TypeVar("T")
console = Console(stderr=True)


def is_main_process() -> bool:
    """True in the process that owns output folders (rank 0, or a run without DDP).

    Lightning's re-launched DDP workers and ``torchrun`` workers carry their rank in the environment.
    """
    return all(int(os.environ.get(var, "0") or 0) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def prepare_output_dir(path: str | Path, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``path``; refuse a non-empty existing folder unless ``overwrite`` (wipe) or ``resume`` (reuse)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MedsslError(f"output path {out} exists and is not a folder")
    if not is_main_process():
        return out
    if out.exists() and any(out.iterdir()):
        if resume:
            return out
        if not overwrite:
            raise MedsslError(f"output folder {out} already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    elif resume:
        raise MedsslError(f"--resume given but {out} holds no earlier run")
    out.mkdir(parents=True, exist_ok=True)
    return out


def log_version(run: Path) -> str:
    """``logs/metrics.csv`` for a fresh run; ``logs/resume-<k>/metrics.csv`` for the k-th resumption, so that a
    resumed run keeps the earlier curves (the CSV logger would overwrite them)."""
    if not (run / "logs" / "metrics.csv").is_file():
        return ""
    return f"resume-{len(list((run / 'logs').glob('resume-*'))) + 1}"


def metric_logs(run: Path) -> list[Path]:
    """The run's CSV metric logs in order: the first run, then its resumptions."""
    resumed = sorted((run / "logs").glob("resume-*/metrics.csv"), key=_resume_index)
    return [run / "logs" / "metrics.csv", *resumed]


def _resume_index(path: Path) -> int:
    return int(path.parent.name.removeprefix("resume-"))


def progress_bar(quiet: bool) -> Callable[[Iterable[T], str], Iterable[T]]:
    """``wrap(items, what)``: ``items`` with a transient progress bar on stderr, or as they are when ``quiet``."""

    def wrap(items: Iterable[T], what: str) -> Iterable[T]:
        return items if quiet else track(items, description=what, console=console, transient=True)

    return wrap


def save_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON."""
    path.write_text(json.dumps(obj, indent=2))


def save_fingerprint(fp: Fingerprint, path: Path) -> None:
    """Write a dataset fingerprint as JSON."""
    save_json(path, asdict(fp))
