"""Supervised segmentation losses: Dice + cross-entropy, softmax for label maps, sigmoid for overlapping
structures."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn


class SegmentationLoss(nn.Module):
    """Dice + cross-entropy for ``(B, K, *spatial)`` logits.

    Args:
        multilabel: ``True`` for overlapping binary structures (sigmoid Dice + binary cross-entropy per
            structure, target ``(B, K, *spatial)``), ``False`` for one label map (softmax Dice + cross-entropy,
            target ``(B, 1, *spatial)`` class indices).

    Dice is computed over the whole batch (nnU-Net's batch Dice) so that patches without a structure do not
    produce a degenerate per-sample Dice.
    """

    def __init__(self, multilabel: bool) -> None:
        super().__init__()
        self.multilabel = multilabel
        if multilabel:
            self.dice: nn.Module = DiceLoss(sigmoid=True, batch=True)
            self.bce = nn.BCEWithLogitsLoss()
        else:
            self.dice = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            t = target.to(logits.dtype)
            return self.dice(logits, t) + self.bce(logits, t)
        return self.dice(logits, target.long())
