"""Soft Dice, Dice per rater, inter-rater agreement and the generalized energy distance on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.metrics import generalized_energy_distance, rater_agreement, rater_dice, soft_dice, soft_truth

PROB = np.array([0.9, 0.6, 0.4, 0.1, 0.7, 0.2])  # > 0.5: pixels 0, 1, 4
RATERS = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 1, 0],
        [1, 1, 1, 0, 0, 1],
    ]
)  # mean > 0.5: pixels 0, 1, 2


def test_soft_dice_thresholds_prediction_and_truth() -> None:
    prob = np.array([0.2, 0.6, 0.8, 0.0])
    soft = np.array([0.5, 0.5, 1.0, 0.0])
    # t = 0.1: {0,1,2} vs {0,1,2} -> 1;  0.3: {1,2} vs {0,1,2} -> 4/5;  0.5: {1,2} vs {2} -> 2/3 (0.5 is not > 0.5)
    # t = 0.7: {2} vs {2} -> 1;  0.9: {} vs {2} -> 0
    expected = (1 + 0.8 + 2 / 3 + 1 + 0) / 5
    assert soft_dice(prob, soft) == pytest.approx(expected)
    # thresholding only the prediction, against the truth binarised once at 0.5 ({2}), would give
    # (1/2 + 2/3 + 2/3 + 1 + 0) / 5 instead
    assert soft_dice(prob, soft) != pytest.approx((0.5 + 2 / 3 + 2 / 3 + 1 + 0) / 5)
    assert soft_dice(prob, soft, thresholds=(0.3,)) == pytest.approx(0.8)


def test_soft_dice_both_empty_at_a_threshold_is_one() -> None:
    prob = np.full((2, 2), 0.05)
    soft = np.zeros((2, 2))
    assert soft_dice(prob, soft) == pytest.approx(1.0)
    # at 0.1 and 0.3 the prediction is foreground and the truth empty (0), at 0.5, 0.7, 0.9 both empty (1)
    assert soft_dice(np.full((2, 2), 0.4), soft) == pytest.approx(3 / 5)


def test_soft_dice_field_of_view() -> None:
    prob = np.array([[0.95, 0.95], [0.95, 0.0]])
    soft = np.array([[1.0, 1.0], [0.0, 0.0]])
    fov = np.array([[True, True], [False, True]])
    assert soft_dice(prob, soft, mask=fov) == pytest.approx(1.0)
    assert soft_dice(prob, soft) == pytest.approx(0.8)  # 2*2 / (3 + 2) at every threshold


def test_rater_dice_hand_computed() -> None:
    scores = rater_dice(PROB, RATERS)
    assert list(scores) == ["rater0", "rater1", "rater2", "mean"]
    assert scores["rater0"] == pytest.approx(2 * 2 / (3 + 2))  # overlap {0, 1}
    assert scores["rater1"] == pytest.approx(2 * 2 / (3 + 3))  # overlap {0, 4}
    assert scores["rater2"] == pytest.approx(2 * 2 / (3 + 4))  # overlap {0, 1}
    assert scores["mean"] == pytest.approx(2 * 2 / (3 + 3))  # mean mask {0, 1, 2}
    named = rater_dice(PROB, RATERS, names=["a", "b", "c"], threshold=0.65)  # prediction {0, 4}
    assert named["a"] == pytest.approx(2 * 1 / (2 + 2))
    assert named["b"] == pytest.approx(2 * 2 / (2 + 3))
    # field of view: the first four pixels, prediction {0, 1}
    assert rater_dice(PROB, RATERS, mask=np.arange(6) < 4)["rater0"] == pytest.approx(1.0)


def test_rater_dice_mean_tie_is_background() -> None:
    raters = np.array([[1, 1, 0], [1, 0, 0]])  # mean 1, 0.5, 0 -> mask {0}
    scores = rater_dice(np.array([0.9, 0.9, 0.1]), raters)
    assert scores["mean"] == pytest.approx(2 * 1 / (2 + 1))


def test_rater_dice_checks_names_and_inputs() -> None:
    with pytest.raises(MedsslError, match="distinct names"):
        rater_dice(PROB, RATERS, names=["a", "b"])
    with pytest.raises(MedsslError, match="distinct names"):
        rater_dice(PROB, RATERS, names=["a", "b", "mean"])
    with pytest.raises(MedsslError, match="does not match prediction shape"):
        rater_dice(PROB[:5], RATERS)
    with pytest.raises(MedsslError, match="binary masks"):
        rater_dice(PROB, RATERS * 255)
    with pytest.raises(MedsslError, match="prediction must lie in"):
        rater_dice(PROB * 2, RATERS)
    with pytest.raises(MedsslError, match="stack of masks"):
        rater_dice(PROB, RATERS[0])


def test_rater_agreement_is_the_mean_over_distinct_pairs() -> None:
    # (0, 1): overlap {0} -> 2/5;  (0, 2): overlap {0, 1} -> 4/6;  (1, 2): overlap {0, 2} -> 4/7
    assert rater_agreement(RATERS) == pytest.approx((2 / 5 + 4 / 6 + 4 / 7) / 3)
    assert rater_agreement(RATERS[:2], mask=np.arange(6) < 2) == pytest.approx(2 * 1 / (2 + 1))
    with pytest.raises(MedsslError, match="at least two raters"):
        rater_agreement(RATERS[:1])


def test_soft_truth_mean_and_weights() -> None:
    np.testing.assert_allclose(soft_truth(RATERS), [1, 2 / 3, 2 / 3, 0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(soft_truth(RATERS[:2], weights=[3, 1]), [1, 0.75, 0.25, 0, 0.25, 0])
    with pytest.raises(MedsslError, match="weights"):
        soft_truth(RATERS, weights=[1, 1])


def test_ged_hand_computed_on_2x2_masks() -> None:
    top, left = np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])
    bottom = np.array([[0, 0], [1, 1]])
    samples, raters = np.stack([top, left]), np.stack([top, bottom])
    # d(S, Y): top-top 0, top-bottom 1, left-top 1/2, left-bottom 1 -> mean 5/8
    # d(S, S'): top-left 1/2;  d(Y, Y'): top-bottom 1 (distinct pairs only)
    assert generalized_energy_distance(samples, raters) == pytest.approx(2 * 5 / 8 - 1 / 2 - 1)
    # a single sample has no pair: its term is 0
    assert generalized_energy_distance(top[None], raters) == pytest.approx(2 * 1 / 2 - 0 - 1)


def test_ged_is_zero_when_everything_agrees_and_empty_pairs_have_distance_zero() -> None:
    mask = np.array([[0, 1], [1, 1]])
    assert generalized_energy_distance(np.stack([mask, mask]), np.stack([mask, mask, mask])) == pytest.approx(0.0)
    empty = np.zeros((2, 2), dtype=int)
    # d(empty, empty) = 0, d(empty, top) = 1: 2 * 1/2 - 0 - 1
    top = np.array([[1, 1], [0, 0]])
    assert generalized_energy_distance(empty[None], np.stack([empty, top])) == pytest.approx(0.0)
    assert generalized_energy_distance(np.stack([empty, empty]), np.stack([empty, empty])) == pytest.approx(0.0)


def test_ged_field_of_view_and_checks() -> None:
    samples = np.array([[[1, 1], [0, 0]]])
    raters = np.array([[[1, 1], [1, 0]], [[1, 1], [0, 1]]])
    fov = np.array([[True, True], [False, False]])
    assert generalized_energy_distance(samples, raters, mask=fov) == pytest.approx(0.0)
    assert generalized_energy_distance(samples, raters) > 0
    with pytest.raises(MedsslError, match="does not match raters' mask shape"):
        generalized_energy_distance(samples, raters[:, :1])
    with pytest.raises(MedsslError, match="samples must be binary"):
        generalized_energy_distance(samples * 0.5, raters)
