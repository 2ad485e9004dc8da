"""A U-Net trained on the raters' mean (a soft label): MRNet's calibration baseline; registered as
"rater-mean"."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from medssl import registry
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.segment.inference import predict_logits
from medssl.segment.mrnet import raters_mean_dice
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import IMAGE, TARGET, Batch

__all__ = ["RaterMeanSegmentation", "soft_dice_ce"]

_SMOOTH = 1e-5


def soft_dice_ce(logits: Tensor, soft: Tensor) -> Tensor:
    """Cross-entropy against class probabilities plus the batch soft Dice of the foreground classes:
    ``logits`` and ``soft`` ``(B, K + 1, *S)``, ``soft`` summing to 1 over classes."""
    ce = cross_entropy(logits, soft)
    prob = torch.softmax(logits, 1)[:, 1:].transpose(0, 1).flatten(1)
    truth = soft[:, 1:].transpose(0, 1).flatten(1)
    dice = (2 * (prob * truth).sum(1) + _SMOOTH) / (prob.sum(1) + truth.sum(1) + _SMOOTH)
    return ce + (1 - dice).mean()


class RaterMeanSegmentation(SupervisedSegmentation):
    """The plan's U-Net trained on the mean of every rater's mask (``batch["target"]``: ``(B, R, *S)``), so that
    its probabilities estimate the share of raters who draw each pixel; validation: Dice against the raters'
    mean thresholded at 0.5.

    Args:
        settings: ``sw_overlap``, ``rotate_degrees``, ``scale_range``, ``affine_probability``, ``seed``: as
            ``SupervisedSegmentation``.
    """

    uses_raters = True

    def __init__(self, network: nn.Module, plan: Plan, **settings: Any) -> None:
        super().__init__(network, plan, **settings)
        if plan.task != "labelmap":
            raise MedsslError("the rater-mean system needs label-map masks (one per rater), not a multi-label dataset")

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``{"loss": soft cross-entropy + soft Dice}`` against the raters' mean of the augmented patches."""
        x, target = self.augment(batch[IMAGE], batch[TARGET])
        k = self.plan.out_channels
        soft = nn.functional.one_hot(target.long(), k).float().mean(1).movedim(-1, 1)  # (B, K, *S)
        return {"loss": soft_dice_ce(self.network(x), soft)}

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        logits = predict_logits(self.network, batch[IMAGE][0], self.plan, overlap=self.sw_overlap)
        return {"dice": raters_mean_dice(logits, batch[TARGET][0]).nanmean()}


registry.register_object(
    "segmentation",
    "rater-mean",
    RaterMeanSegmentation,
    description="several raters: the plan's U-Net trained on the raters' mean mask (soft label)",
)
