"""Dice and XOR error on hand-computed cases and the empty-mask rules."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.metrics.overlap import dice, xor_error


def test_dice_and_xor_1d_hand_computed() -> None:
    pred = np.array([1, 1, 0, 0], dtype=bool)
    truth = np.array([0, 1, 1, 0], dtype=bool)
    # |P ∩ G| = 1, |P| = |G| = 2 -> dice 2/4; |P xor G| = 2 -> xor 2/2.
    assert dice(pred, truth) == pytest.approx(0.5)
    assert xor_error(pred, truth) == pytest.approx(1.0)


def test_dice_and_xor_2d_hand_computed() -> None:
    truth = np.zeros((4, 5), dtype=bool)
    truth[0:2, 0:3] = True  # 6 voxels
    pred = np.zeros((4, 5), dtype=bool)
    pred[1:3, 0:2] = True  # 4 voxels, overlap 2 ((1,0), (1,1))
    assert dice(pred, truth) == pytest.approx(2 * 2 / 10)
    assert xor_error(pred, truth) == pytest.approx((6 + 4 - 2 * 2) / 6)


def test_dice_3d_integer_masks_nonzero_is_foreground() -> None:
    truth = np.zeros((3, 3, 3), dtype=np.int64)
    truth[1, 1, :] = 7
    pred = np.zeros((3, 3, 3), dtype=np.uint8)
    pred[1, 1, 1:] = 1
    assert dice(pred, truth) == pytest.approx(2 * 2 / 5)
    assert xor_error(pred, truth) == pytest.approx(1 / 3)


def test_identical_masks() -> None:
    mask = np.random.default_rng(0).random((6, 7, 3)) > 0.5
    assert dice(mask, mask) == 1.0
    assert xor_error(mask, mask) == 0.0


def test_xor_can_exceed_one() -> None:
    truth = np.array([1, 0, 0, 0], dtype=bool)
    pred = np.array([0, 1, 1, 1], dtype=bool)
    assert xor_error(pred, truth) == pytest.approx(4.0)


def test_empty_rules() -> None:
    empty = np.zeros((3, 4), dtype=bool)
    full = np.ones((3, 4), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert xor_error(empty, empty) is None
    assert xor_error(full, empty) is None
    assert xor_error(empty, full) == 1.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(MedsslError, match="shape"):
        dice(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(MedsslError, match="shape"):
        xor_error(np.zeros((3, 4)), np.zeros((3, 4, 1)))
