"""``dice_scores``, the one Dice implementation behind the test metric (``dice``) and validation
(``foreground_dice``): hand-counted values per leading index in 2D and 3D, and the both-empty rule as an argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medssl.errors import MedsslError
from medssl.metrics import dice, dice_scores


def test_2d_per_class_hand_counted_and_empty_rule() -> None:
    pred = torch.zeros(3, 4, 5, dtype=torch.bool)
    truth = torch.zeros(3, 4, 5, dtype=torch.bool)
    pred[0, 0:2, 0:2] = True  # 4 voxels
    truth[0, 1:3, 0:3] = True  # 6 voxels, overlap 2 -> 4 / 10
    truth[1, 0, 0] = True  # prediction empty -> 0
    # class 2 empty in both: the rule is the caller's
    nan_rule = dice_scores(pred, truth, spatial_dims=2, empty=float("nan"))
    one_rule = dice_scores(pred, truth, spatial_dims=2, empty=1.0, dtype=torch.float64)
    assert nan_rule.dtype == torch.float32 and one_rule.dtype == torch.float64
    assert nan_rule[:2].tolist() == pytest.approx([0.4, 0.0]) and math.isnan(nan_rule[2].item())
    assert one_rule.tolist() == [0.4, 0.0, 1.0]


def test_3d_sums_over_all_three_spatial_axes() -> None:
    # overlap spread over different z, y and x: summing over fewer axes, or the wrong ones, gives other values
    pred = torch.zeros(2, 3, 3, 3, dtype=torch.bool)
    truth = torch.zeros(2, 3, 3, 3, dtype=torch.bool)
    pred[0, 0, 0, 0] = pred[0, 1, 1, 1] = pred[0, 2, 2, 2] = True
    truth[0, 0, 0, 0] = truth[0, 2, 2, 2] = truth[0, 2, 0, 1] = truth[0, 1, 2, 0] = True  # |P ∩ G| = 2
    pred[1, :, :, 0] = True  # 9 voxels
    truth[1, 0] = True  # 9 voxels, overlap 3
    got = dice_scores(pred, truth, spatial_dims=3, empty=1.0, dtype=torch.float64)
    assert got.tolist() == [2 * 2 / 7, 2 * 3 / 18]


def test_numpy_dice_is_dice_scores_in_float64() -> None:
    rng = np.random.default_rng(0)
    p, t = rng.random((5, 6, 7)) > 0.6, rng.random((5, 6, 7)) > 0.4
    inter, total = int((p & t).sum()), int(p.sum()) + int(t.sum())
    assert dice(p, t) == 2.0 * inter / total  # exactly, as before the test metric called dice_scores
    assert dice(p[::-1], t[::-1]) == dice(p, t)  # negative strides (flipped arrays) are accepted
    assert dice(np.array(True), np.array(False)) == 0.0


def test_refuses_mismatched_shapes_and_axes() -> None:
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(MedsslError, match="does not match"):
        dice_scores(a, a[:1], spatial_dims=2, empty=1.0)
    with pytest.raises(MedsslError, match="spatial_dims"):
        dice_scores(a, a, spatial_dims=4, empty=1.0)
