"""Output folders that are never overwritten by accident, the rank test for multi-process runs, and the small
writers and progress bars that the training workflows share."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import track

from medssl import __version__
from medssl.data.plan import Fingerprint
from medssl.errors import MedsslError
from medssl.evaluation.report import json_safe
from medssl.ranks import is_main_process as is_main_process  # here for the engine's modules

T = TypeVar("T")
console = Console(stderr=True)


MARKER = ".medssl-output.json"
KINDS = ("finetune", "pretrain", "predict", "segment", "experiment", "demo", "superres", "superres-apply")
# Run folders written before the marker existed, recognised for --resume by the files every such run has.
_LEGACY = {
    "finetune": ("plan.json", "config.yaml", "checkpoints/last.ckpt"),
    "pretrain": ("plan.json", "config.yaml", "checkpoints/last.ckpt"),
    "experiment": ("experiment.yaml", "split.json"),
}


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker that medssl writes into every output folder it creates, or None (no marker, or unreadable)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def check_output_location(path: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output path that, replaced or written into, would destroy or mix with something else.

    Raises:
        MedsslError: ``path`` is, contains or lies inside one of ``inputs`` (data, model, image folders or files),
            or is the working directory, the home folder, or a folder above either (``/`` included).
    """
    out = Path(path).expanduser().resolve()
    for name, protected in (("the working directory", Path.cwd()), ("your home folder", Path.home())):
        protected = protected.resolve()
        if out == protected or out in protected.parents:
            above = "" if out == protected else " or a folder above it"
            raise MedsslError(f"--out {path} is {name}{above}; give a new folder for the output")
    for item in inputs:
        if item is None:
            continue
        source = Path(item).expanduser().resolve()
        if out == source or out in source.parents or source in out.parents:
            relation = "is" if out == source else "contains" if out in source.parents else "lies inside"
            raise MedsslError(
                f"--out {path} {relation} the input {item}; medssl never writes into or replaces its inputs, "
                "give an output folder outside them"
            )


def prepare_output_dir(
    path: str | Path,
    *,
    kind: str,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Create the output folder ``path`` of a ``medssl <kind>`` command and mark it as medssl's.

    A new or empty folder is used as it is. A non-empty one is replaced with ``overwrite`` and reused with
    ``resume`` only if it carries the marker of the same kind (``resume`` also takes a run folder of that kind
    written before markers existed); anything else is refused, so that no option ever deletes a folder medssl did
    not create. ``check_output_location`` is applied first, also with ``resume``.

    Args:
        path: the output folder.
        kind: the command, one of ``KINDS``; written into the marker ``MARKER``.
        overwrite: replace an existing output of the same kind.
        resume: continue the run of the same kind in ``path``.
        inputs: the command's input files and folders (None entries are skipped).

    Raises:
        MedsslError: the location is refused, or the folder exists and cannot be used as asked.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    check_output_location(path, inputs)
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MedsslError(f"output path {out} exists and is not a folder")
    if not is_main_process():
        return out
    marker = read_marker(out)
    ours = marker is not None and marker.get("kind") == kind
    if out.exists() and any(out.iterdir()):
        if resume:
            if not ours and not all((out / f).is_file() for f in _LEGACY.get(kind, ("-",))):
                raise MedsslError(f"--resume given but {out} holds no medssl {kind} run; check --out")
            if marker is None:
                _write_marker(out, kind)
            return out
        if not ours:
            other = f"holds the output of `medssl {marker['kind']}`" if marker and "kind" in marker else "is not empty"
            raise MedsslError(
                f"output folder {out} {other} and was not created by `medssl {kind}`, so --overwrite will not "
                "delete it; choose another --out or remove it yourself"
            )
        if not overwrite:
            also = " or --resume to continue it" if kind in _LEGACY else ""
            raise MedsslError(
                f"output folder {out} already exists (a medssl {kind} output); pass --overwrite to replace it{also}"
            )
        shutil.rmtree(out)
    elif resume:
        raise MedsslError(f"--resume given but {out} holds no earlier run")
    out.mkdir(parents=True, exist_ok=True)
    _write_marker(out, kind)
    return out


def _write_marker(folder: Path, kind: str) -> None:
    created = datetime.now(UTC).isoformat()
    save_json(folder / MARKER, {"kind": kind, "created": created, "medssl_version": __version__})


@contextmanager
def removed_on_failure(path: str | Path, *, resume: bool = False) -> Iterator[None]:
    """Remove the output folder that the enclosed command created or replaced, when it fails before writing any
    checkpoint, so that the corrected command can run again without ``--overwrite``.

    Only a folder whose marker was written inside the block is touched: a folder that existed before keeps its
    (now emptied) self, a new one is removed with the parents the block created. Nothing is removed on
    ``resume``, or once a ``*.ckpt`` file lies in the folder (an interrupted run stays resumable).
    """
    out = Path(path)
    marker_before = read_marker(out)
    created_top = next((p for p in reversed([out, *out.parents]) if not p.exists()), None)
    try:
        yield
    except BaseException:
        if not resume and is_main_process() and out.is_dir():
            marker = read_marker(out)
            if marker is not None and marker != marker_before and not any(out.rglob("*.ckpt")):
                _remove(out, created_top)
        raise


def _remove(out: Path, created_top: Path | None) -> None:
    """Empty ``out`` if it existed before (``created_top`` None); else remove it and the parents created with it."""
    if created_top is None:
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return
    shutil.rmtree(out)
    for parent in out.parents:
        if parent != created_top and created_top not in parent.parents:
            break  # above what the command created
        if any(parent.iterdir()):
            break
        parent.rmdir()


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
    """Write ``obj`` as indented, valid JSON: non-finite numbers (an infinite HD95, a NaN score) become null."""
    path.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False))


def save_fingerprint(fp: Fingerprint, path: Path) -> None:
    """Write a dataset fingerprint as JSON."""
    save_json(path, asdict(fp))
