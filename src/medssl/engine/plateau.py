"""The plateau stop of a run: Lightning's ``EarlyStopping`` on the monitored score, whose patience starts counting
only after a system's warm-up.

A system with ``warmup_steps`` (the adversarial system: the supervised loss alone for those steps) is a different
objective afterwards; validations during the warm-up measure the warm-up, so validations without a gain there
must not use up the patience that the full loss gets. The best score reached during the warm-up still is the one
to beat (its checkpoint stays ``best.ckpt`` if nothing beats it).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

__all__ = ["PlateauStop"]


class PlateauStop(EarlyStopping):
    """``EarlyStopping`` (mode ``max``) that ignores ``patience`` until ``start`` batches have been trained.

    Args:
        start: batches of warm-up (validations after at most this many batches count no wait).
        groups: optimiser groups of the system (Lightning's ``global_step`` counts each group's step).
        **kwargs: ``EarlyStopping``'s (``monitor``, ``patience``, ``min_delta``, ...).
    """

    def __init__(self, *, start: int = 0, groups: int = 1, **kwargs: Any) -> None:
        super().__init__(mode="max", **kwargs)
        self.start, self.groups = start, max(1, groups)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step // self.groups > self.start:
            super().on_validation_end(trainer, pl_module)
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None or not torch.isfinite(current):
            return
        # the same rule for a gain as after the warm-up (EarlyStopping's min_delta, mode max), but no wait counted
        if self.monitor_op(current - self.min_delta, self.best_score.to(current.device)):
            self.best_score = current.detach().clone()
