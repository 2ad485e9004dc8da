"""The "rater-mean" baseline: a U-Net on the raters' mean mask."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import cross_entropy

from medssl.config import FinetuneConfig
from medssl.segment.mrnet import raters_mean_dice
from medssl.segment.rater_mean import RaterMeanSegmentation, soft_dice_ce
from tests.segment.test_mrnet import _batch, _plan


def test_soft_dice_ce_by_hand() -> None:
    logits = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]]]])  # (1, 2, 1, 2)
    soft = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])
    p = torch.softmax(logits, 1)[0, 1, 0]
    dice = (2 * (p * soft[0, 1, 0]).sum() + 1e-5) / (p.sum() + soft[0, 1, 0].sum() + 1e-5)
    want = cross_entropy(logits, soft) + 1 - dice
    torch.testing.assert_close(soft_dice_ce(logits, soft), want)


def test_the_target_is_the_raters_mean() -> None:
    torch.manual_seed(0)
    system = RaterMeanSegmentation.for_run(_plan(), FinetuneConfig(affine_probability=0.0))
    batch = _batch()
    mean = batch["target"].mean(1)  # two raters: 0, 0.5 or 1 per pixel
    soft = torch.stack([1 - mean, mean], 1)
    want = soft_dice_ce(system.network(batch["image"]), soft)
    assert system.training_step(batch, 0)["loss"].item() == pytest.approx(want.item(), rel=1e-6)


def test_raters_mean_dice_thresholds_the_mean() -> None:
    raters = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 0, 0]]])  # (R=2, 1, 4): mean 1, .5, 0, 0; > 0.5: the first
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0]], [[5.0, 5.0, -5.0, -5.0]]])  # predicts the first two
    assert raters_mean_dice(logits, raters).item() == pytest.approx(2 / 3)
    logits[1, 0, 1] = -5.0
    assert raters_mean_dice(logits, raters).item() == pytest.approx(1.0)
