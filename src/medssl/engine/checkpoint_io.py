"""Checkpoint files that survive a kill and never execute code when read.

Saves go to a temporary file in the same folder and are renamed over the target (atomic on POSIX), so an
interrupted save leaves the previous checkpoint intact. Loads use ``weights_only`` loading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medssl.networks.weights import load_checkpoint_file


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, target)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, ``weights_only`` reads with clear errors."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        return load_checkpoint_file(path)
