"""Output folders that are never overwritten by accident, and the rank test for multi-process runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medssl.errors import MedsslError


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
