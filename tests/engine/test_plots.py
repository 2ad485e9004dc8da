"""Training curves and overlays: the numbers and positions drawn, not only that a PNG exists."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from medssl.engine.plots import (
    OverlayCase,
    draw_overlays,
    draw_training_curves,
    moving_average,
    overlay_slice,
    plot_training_curves,
    read_curves,
)


def test_moving_average_has_no_padding_bias() -> None:
    np.testing.assert_allclose(moving_average([4.0, 2.0, 0.0, 0.0, 0.0], window=2), [4.0, 3.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(moving_average([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], window=3), [1, 1.5, 2, 3, 4, 5])
    # a loss that falls from 10 to 1 at once: padding with the first value kept the smoothed curve near 10
    values = [10.0] + [1.0] * 49
    smoothed = moving_average(values, window=25)
    np.testing.assert_allclose(smoothed[25:], 1.0)
    assert smoothed[10] == pytest.approx((10 + 10 * 1) / 11)


def test_moving_average_default_window_follows_the_length() -> None:
    np.testing.assert_allclose(moving_average([3.0, 1.0]), [3.0, 1.0])  # 2 points: window 1
    values = np.arange(1000, dtype=float)
    np.testing.assert_allclose(moving_average(values)[-1], values[-25:].mean())  # at most 25


def _write_log(path: Path) -> None:
    path.write_text("epoch,step,train_loss,val_dice\n0,9,0.9,\n0,9,,0.5\n1,19,0.7,\n1,19,,0.6\n2,29,0.5,\n")


def test_steps_are_optimiser_steps_taken(tmp_path: Path) -> None:
    """Lightning logs the 10th step (and the validation after it) as step 9; checkpoints say 10."""
    _write_log(tmp_path / "metrics.csv")
    series = read_curves(tmp_path / "metrics.csv")
    assert series["train_loss"] == ([10, 20, 30], [0.9, 0.7, 0.5])
    assert series["val_dice"] == ([10, 20], [0.5, 0.6])
    fig = draw_training_curves(series)
    try:
        loss_ax, dice_ax = fig.axes
        raw, smoothed = loss_ax.lines
        np.testing.assert_array_equal(raw.get_xdata(), [10, 20, 30])
        np.testing.assert_allclose(smoothed.get_ydata(), moving_average([0.9, 0.7, 0.5]))
        np.testing.assert_array_equal(dice_ax.lines[0].get_xdata(), [10, 20])
        assert loss_ax.get_xlabel() == "optimiser step"
    finally:
        plt.close(fig)


def test_one_logged_point_is_drawn_as_a_marker(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("epoch,step,train_loss\n0,0,0.8\n")
    series = read_curves(tmp_path / "metrics.csv")
    fig = draw_training_curves(series)
    try:
        (line,) = fig.axes[0].lines
        assert line.get_marker() == "o"
        np.testing.assert_array_equal(line.get_xdata(), [1])
        np.testing.assert_array_equal(line.get_ydata(), [0.8])
    finally:
        plt.close(fig)
    assert plot_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png") == tmp_path / "curves.png"


def test_resumed_logs_continue_the_steps(tmp_path: Path) -> None:
    _write_log(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("epoch,step,train_loss\n3,39,0.4\n")
    assert read_curves([tmp_path / "a.csv", tmp_path / "b.csv"])["train_loss"][0] == [10, 20, 30, 40]


def test_3d_overlay_names_its_slice() -> None:
    image = np.zeros((1, 8, 8, 12), np.float32)
    truth = np.zeros((1, 8, 8, 12), bool)
    truth[0, 2:5, 2:5, 7] = True
    truth[0, 3, 3, 2] = True
    case = OverlayCase("vol_001", image, truth.copy(), truth, score=1.0, physical=True)
    assert overlay_slice(case) == 7
    fig = draw_overlays([case], ["tumour"])
    try:
        title = fig.axes[0].get_title()
        assert "vol_001" in title and "slice 7 of 0-11" in title and "3rd array axis" in title
    finally:
        plt.close(fig)


def test_2d_overlay_has_no_slice() -> None:
    case = OverlayCase("case", np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 8), bool))
    assert overlay_slice(case) is None
    fig = draw_overlays([case], ["fg"])
    try:
        assert fig.axes[0].get_title() == "case"
    finally:
        plt.close(fig)


def test_a_super_resolution_run_draws_its_validation_psnr(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train_loss,val_psnr\n0,9,0.2,\n0,9,,31.5\n0,19,0.1,\n0,19,,32.25\n"
    )
    fig = draw_training_curves(read_curves(tmp_path / "metrics.csv"))
    try:
        _, score_ax = fig.axes
        np.testing.assert_array_equal(score_ax.lines[0].get_ydata(), [31.5, 32.25])
        assert score_ax.get_ylabel() == "PSNR (dB)"
        assert score_ax.get_ylim()[1] > 32.25  # not clipped to a Dice's [0, 1]
    finally:
        plt.close(fig)
