"""The Lightning module that trains a segmentation network: losses, augmentation, validation Dice."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from torch import nn

from medssl.data.plan import Plan
from medssl.segment.augment import apply_affine, random_affine_matrices
from medssl.segment.inference import predict_logits
from medssl.segment.losses import SegmentationLoss


class SegmentationModule(L.LightningModule):
    """Supervised training of ``network`` on patches, validated on whole images with a sliding window.

    Args:
        network: maps ``(B, C, *patch)`` to ``(B, K, *patch)`` logits.
        plan: the dataset plan (task, classes, patch size).
        lr: AdamW learning rate, decayed as ``(1 - step / max_steps) ** 0.9``.
        weight_decay: AdamW weight decay.
        max_steps: length of the schedule.
        sw_overlap: sliding-window overlap at validation.
        rotate_degrees, scale_range, affine_probability: random affine augmentation.
        seed: seed of the augmentation stream.
    """

    def __init__(
        self,
        network: nn.Module,
        plan: Plan,
        *,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        max_steps: int = 1000,
        sw_overlap: float = 0.25,
        rotate_degrees: float = 15.0,
        scale_range: tuple[float, float] = (0.85, 1.2),
        affine_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = network
        self.plan = plan
        self.loss = SegmentationLoss(multilabel=plan.task == "multilabel")
        self.lr, self.weight_decay, self.max_steps = lr, weight_decay, max_steps
        self.sw_overlap = sw_overlap
        self.rotate_degrees, self.scale_range, self.affine_probability = rotate_degrees, scale_range, affine_probability
        self.generator = torch.Generator().manual_seed(seed)
        self._val_dice: list[torch.Tensor] = []
        self._fit_started = time.perf_counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.affine_probability > 0:
            mats = random_affine_matrices(
                x.shape[0],
                x.ndim - 2,
                max_degrees=self.rotate_degrees,
                scale_range=self.scale_range,
                probability=self.affine_probability,
                generator=self.generator,
            )
            x, y = apply_affine(x, y, mats.to(x.device))
        loss = self.loss(self.model(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = predict_logits(self.model, x[0], self.plan, overlap=self.sw_overlap)
        self._val_dice.append(foreground_dice(logits, y[0], multilabel=self.plan.task == "multilabel"))

    def on_validation_epoch_end(self) -> None:
        if self._val_dice:
            per_case = torch.stack([d.nanmean() for d in self._val_dice])
            self.log("val_dice", per_case.nanmean(), prog_bar=True, sync_dist=True)
            # wall-clock seconds since training started, for time-to-Dice curves
            self.log("elapsed_s", float(time.perf_counter() - self._fit_started), sync_dist=True)
        self._val_dice.clear()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the augmentation stream, so that a resumed run draws the augmentations of an uninterrupted one
        checkpoint["augmentation_generator"] = self.generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "augmentation_generator" in checkpoint:  # absent from checkpoints of older versions
            self.generator.set_state(checkpoint["augmentation_generator"])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, self.max_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total) ** 0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def foreground_dice(logits: torch.Tensor, target: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """Dice of each foreground class/structure of one image (``(K, *spatial)`` logits, ``(T, *spatial)``
    target); NaN where both prediction and truth are empty."""
    if multilabel:
        pred = logits > 0
        truth = target > 0
    else:
        k = logits.shape[0]
        pred = nn.functional.one_hot(logits.argmax(0), k).movedim(-1, 0)[1:].bool()
        truth = nn.functional.one_hot(target[0].long(), k).movedim(-1, 0)[1:].bool()
    dims = tuple(range(1, pred.ndim))
    inter = (pred & truth).sum(dims).float()
    total = pred.sum(dims).float() + truth.sum(dims).float()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, float("nan")))
