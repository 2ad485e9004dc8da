"""Reliability bins and ECE on hand-computed cases, merging bins over images, the field of view, the input checks
and the reliability diagram."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from medssl.engine.reliability_plot import draw_reliability_diagram, reliability_diagram
from medssl.errors import MedsslError
from medssl.metrics import Bins, calibration_bins, expected_calibration_error, merge_bins

# Edge values: 0.0 -> bin 0, 0.1 -> bin 1, 0.3 -> bin 3 (not 2, where 3 * 0.1 = 0.30000000000000004 would put
# it), 1.0 -> bin 9 (the last bin is closed).
PROB = np.array([0.0, 0.05, 0.1, 0.15, 0.3, 0.35, 0.6, 0.65, 0.95, 1.0])
TRUTH = np.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 0])


def test_bins_and_ece_hand_computed() -> None:
    bins = calibration_bins(PROB, TRUTH, n_bins=10)
    np.testing.assert_array_equal(bins.counts, [2, 2, 0, 2, 0, 0, 2, 0, 0, 2])
    full = bins.counts > 0
    np.testing.assert_allclose(bins.confidence[full], [0.025, 0.125, 0.325, 0.625, 0.975])
    np.testing.assert_allclose(bins.frequency[full], [0.0, 0.5, 0.5, 0.5, 0.5])
    assert np.isnan(bins.confidence[2]) and np.isnan(bins.frequency[2])
    np.testing.assert_allclose(bins.edges, np.arange(11) / 10)
    # each non-empty bin holds 2 of 10 pixels; gaps 0.025, 0.375, 0.175, 0.125, 0.475
    expected = 0.2 * (0.025 + 0.375 + 0.175 + 0.125 + 0.475)
    assert expected_calibration_error(PROB, TRUTH, n_bins=10) == pytest.approx(expected)
    assert bins.ece() == pytest.approx(0.235)


def test_ece_with_few_bins_and_soft_truth() -> None:
    # two bins [0, 0.5) and [0.5, 1]: 0.5 opens the upper one; soft truth: the frequency is its mean
    prob = np.array([0.2, 0.4, 0.5, 1.0])
    truth = np.array([0.0, 0.5, 1.0, 0.5])
    bins = calibration_bins(prob, truth, n_bins=2)
    np.testing.assert_array_equal(bins.counts, [2, 2])
    np.testing.assert_allclose(bins.frequency, [0.25, 0.75])
    assert bins.ece() == pytest.approx(0.5 * abs(0.3 - 0.25) + 0.5 * abs(0.75 - 0.75))


def test_ece_weights_bins_by_their_pixel_count() -> None:
    # bin 1: three pixels, gap 0.15; bin 8: one pixel, gap 0.85 (an unweighted mean of the gaps would be 0.5)
    prob = np.array([0.15, 0.15, 0.15, 0.85])
    truth = np.zeros(4)
    assert expected_calibration_error(prob, truth) == pytest.approx(0.75 * 0.15 + 0.25 * 0.85)


def test_perfectly_calibrated_is_zero() -> None:
    prob = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    truth = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(prob, truth, n_bins=4) == pytest.approx(0.0)


def test_merged_bins_equal_bins_of_the_concatenation() -> None:
    rng = np.random.default_rng(0)
    images = [(rng.random((4, 5)), rng.random((4, 5)) > 0.5) for _ in range(3)]
    images.append((np.array([[0.0, 1.0], [0.5, 0.1]]), np.array([[0, 1], [1, 0]])))
    merged = merge_bins((calibration_bins(p, t, n_bins=7) for p, t in images), n_bins=7)
    pooled = calibration_bins(
        np.concatenate([p.ravel() for p, _ in images]), np.concatenate([t.ravel() for _, t in images]), n_bins=7
    )
    np.testing.assert_array_equal(merged.counts, pooled.counts)
    np.testing.assert_allclose(merged.confidence_sum, pooled.confidence_sum)
    np.testing.assert_allclose(merged.truth_sum, pooled.truth_sum)
    assert merged.ece() == pytest.approx(pooled.ece())
    assert merged.total == 4 * 5 * 3 + 4
    # the merged ECE is not the mean of the per-image ECEs
    per_image = np.mean([expected_calibration_error(p, t, n_bins=7) for p, t in images])
    assert merged.ece() != pytest.approx(per_image)


def test_merge_refuses_different_bins_and_merging_nothing_is_empty() -> None:
    with pytest.raises(MedsslError, match="same n_bins"):
        Bins.empty(5).merge(Bins.empty(10))
    assert merge_bins([], n_bins=4).total == 0
    with pytest.raises(MedsslError, match="no pixels"):
        merge_bins([], n_bins=4).ece()


def test_field_of_view_restricts_the_pixels() -> None:
    prob = np.array([[0.9, 0.9], [0.1, 0.1]])
    truth = np.array([[1, 1], [1, 1]])
    fov = np.array([[True, True], [False, False]])
    assert expected_calibration_error(prob, truth, n_bins=10, mask=fov) == pytest.approx(0.1)
    assert expected_calibration_error(prob, truth, n_bins=10) == pytest.approx(0.5)
    assert calibration_bins(prob, truth, mask=fov).total == 2
    with pytest.raises(MedsslError, match="field-of-view mask is empty"):
        expected_calibration_error(prob, truth, mask=np.zeros((2, 2), dtype=bool))


@pytest.mark.parametrize(
    ("prob", "truth", "kwargs", "message"),
    [
        (np.array([0.5, 1.2]), np.array([0, 1]), {}, "prediction must lie in"),
        (np.array([0.5, np.nan]), np.array([0, 1]), {}, "prediction must lie in"),
        (np.array([0.5, 0.2]), np.array([0, 255]), {}, "truth must lie in"),
        (np.array([0.5, 0.2]), np.array([0, 1, 1]), {}, "does not match truth shape"),
        (np.array([0.5, 0.2]), np.array([0, 1]), {"mask": np.ones(3, dtype=bool)}, "field-of-view mask shape"),
        (np.array([0.5, 0.2]), np.array([0, 1]), {"n_bins": 0}, "n_bins"),
    ],
)
def test_inputs_are_checked(prob: np.ndarray, truth: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(MedsslError, match=message):
        expected_calibration_error(prob, truth, **kwargs)


def test_reliability_diagram_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    prob = rng.random((8, 8))
    truth = rng.random((8, 8)) < prob
    methods = {"calibrated": calibration_bins(prob, truth), "overconfident": calibration_bins(prob**3, truth)}
    out = reliability_diagram(methods, tmp_path / "reliability.png", title="test set")
    assert out == tmp_path / "reliability.png" and out.stat().st_size > 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    fig = draw_reliability_diagram(methods)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    texts = [t.get_text() for t in legend.get_texts()]
    for name, bins in methods.items():
        assert f"{name} (ECE {bins.ece():.4f})" in texts
    plt.close(fig)


def test_reliability_diagram_refuses_empty_input(tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match="at least one method"):
        reliability_diagram({}, tmp_path / "r.png")
    with pytest.raises(MedsslError, match="no pixels"):
        reliability_diagram({"a": Bins.empty(10)}, tmp_path / "r.png")
