"""Figures written into run folders: training curves and prediction overlays."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def plot_training_curves(metrics_csv: str | Path | Sequence[str | Path], out_png: str | Path) -> Path | None:
    """Training losses (``train_*`` columns) and validation Dice against optimiser step from Lightning's CSV logs
    (several files: one run and its resumptions, in order); None if nothing was logged. Without ``val_dice``
    (pretraining) only the loss panel is drawn."""
    series = read_curves(metrics_csv)
    if not series:
        return None
    fig = draw_training_curves(series)
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_curves(metrics_csv: str | Path | Sequence[str | Path]) -> dict[str, tuple[list[int], list[float]]]:
    """``{column: (steps, values)}`` of the ``train_*`` and ``val_*`` columns (``val_dice``, a super-resolution
    run's ``val_psnr``) of Lightning's CSV logs.

    Steps are optimiser steps taken, counted from 1, as in checkpoints and ``global_step``: Lightning's ``step``
    column is the 0-based index of the step (a value logged after the 10th step, and the validation after it,
    carry ``step`` 9).
    """
    paths = [Path(metrics_csv)] if isinstance(metrics_csv, str | Path) else [Path(p) for p in metrics_csv]
    series: dict[str, tuple[list[int], list[float]]] = {}
    for path in paths:
        if not path.is_file():
            continue
        with path.open() as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.get("step") or 0)) + 1
                for key in row:
                    if key.startswith(("train_", "val_")) and row.get(key):
                        series.setdefault(key, ([], []))
                        series[key][0].append(step)
                        series[key][1].append(float(row[key]))
    return series


def draw_training_curves(series: dict[str, tuple[list[int], list[float]]]) -> Figure:
    """The figure of ``plot_training_curves`` from ``read_curves`` output: each loss raw (faint) and as its
    ``moving_average``; the validation score (``val_dice``, or another ``val_*`` such as a super-resolution run's
    ``val_psnr``) with its best value marked. Series of one point are drawn as a marker."""
    scores = sorted((k for k in series if k.startswith("val_")), key=lambda k: (k != "val_dice", k))
    has_val = bool(scores)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 3.6), squeeze=False)
    axes = axes[0]
    losses = sorted((k for k in series if k.startswith("train_")), key=lambda k: (k != "train_loss", k))
    for colour, key in enumerate(losses):
        s, v = series[key]
        name = key.removeprefix("train_").replace("_", " ")
        if len(v) == 1:
            axes[0].plot(s, v, "o", color=f"C{colour}", label=name)
            continue
        axes[0].plot(s, v, lw=0.6, alpha=0.4, color=f"C{colour}")
        axes[0].plot(s, moving_average(v), lw=1.5, color=f"C{colour}", label=f"{name} (smoothed)")
    if losses and all(min(series[k][1]) > 0 for k in losses):
        axes[0].set_yscale("log")
    if len(losses) > 1:
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="optimiser step", ylabel="loss", title="training loss")
    if has_val:
        s, v = series[scores[0]]  # val_dice first; every score monitored is "higher is better"
        axes[1].plot(s, v, "o-", color="C1")
        best = int(np.argmax(v))
        axes[1].annotate(f"best {v[best]:.3f}", (s[best], v[best]), textcoords="offset points", xytext=(0, -14))
        label, limits = _SCORE_AXES.get(scores[0], (scores[0].removeprefix("val_"), None))
        axes[1].set(xlabel="optimiser step", ylabel=label, title=f"validation {label}", ylim=limits)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


_SCORE_AXES: dict[str, tuple[str, tuple[float, float] | None]] = {
    "val_dice": ("mean foreground Dice", (0.0, 1.0)),
    "val_psnr": ("PSNR (dB)", None),
}


def moving_average(values: Sequence[float], window: int | None = None) -> np.ndarray:
    """Trailing mean over the last ``window`` values, same length as ``values``; the first ``window - 1`` points
    average the values so far (no padding, which would pull the start towards the first value).

    Args:
        values: the series.
        window: points averaged; default: a tenth of the series, between 1 and 25.
    """
    v = np.asarray(values, dtype=float)
    if window is None:
        window = max(1, min(25, math.ceil(v.size / 10)))
    if v.size == 0 or window <= 1:
        return v
    total = np.cumsum(v)
    total[window:] = total[window:] - total[:-window]
    return total / np.minimum(np.arange(1, v.size + 1), window)


@dataclass
class OverlayCase:
    """One panel: image ``(C, *spatial)``, prediction and truth as ``(S, *spatial)`` boolean masks.

    ``physical`` images are in RAS index order (x, y[, z]) and are shown with x to the right and y (anterior)
    up; pictures are in (row, column) order and shown as stored.
    """

    name: str
    image: np.ndarray
    prediction: np.ndarray
    truth: np.ndarray | None = None
    score: float | None = None
    physical: bool = False


def save_overlays(
    cases: Sequence[OverlayCase],
    labels: Sequence[str],
    out_png: str | Path,
    title: str = "prediction (filled) and truth (outline)",
) -> Path:
    """Grid of images with the prediction filled and the truth outlined, one colour per structure.

    3D cases show the slice of the third array axis with the most truth (else prediction) foreground; the panel
    title names it (``overlay_slice``).
    """
    fig = draw_overlays(cases, labels, title)
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def draw_overlays(
    cases: Sequence[OverlayCase], labels: Sequence[str], title: str = "prediction (filled) and truth (outline)"
) -> Figure:
    """The figure of ``save_overlays``."""
    n = len(cases)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, case in zip(axes.ravel(), cases, strict=False):
        img, pred, truth, where = _plane(case)
        origin = "lower" if case.physical else "upper"
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", interpolation="nearest", origin=origin)
        for s in range(pred.shape[0]):
            colour = matplotlib.colors.to_rgb(_COLOURS[s % len(_COLOURS)])
            rgba = np.zeros((*pred.shape[1:], 4))
            rgba[pred[s]] = (*colour, 0.35)
            ax.imshow(rgba, interpolation="nearest", origin=origin)
            if truth is not None and truth[s].any():
                ax.contour(truth[s].astype(float), levels=[0.5], colors=[colour], linewidths=1.0, origin=origin)
        panel = case.name if case.score is None else f"{case.name}  Dice {case.score:.3f}"
        ax.set_title(panel + (f"\n{where}" if where else ""), fontsize=9)
    handles = [matplotlib.patches.Patch(color=_COLOURS[i % len(_COLOURS)], label=lab) for i, lab in enumerate(labels)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return fig


def overlay_slice(case: OverlayCase) -> int | None:
    """Index on the third array axis of the slice a 3D case is drawn at: the one with the most truth foreground
    (else prediction; else the middle one); None for 2D cases."""
    if case.image.ndim != 4:
        return None
    ref = case.truth if case.truth is not None and case.truth.any() else case.prediction.astype(bool)
    return int(np.argmax(ref.reshape(-1, ref.shape[-1]).sum(0))) if ref.any() else case.image.shape[-1] // 2


def _plane(case: OverlayCase) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    """The 2D image, prediction and truth drawn for ``case``, and which slice they are ("" for 2D cases)."""
    image, pred, truth = case.image, case.prediction.astype(bool), case.truth
    k = overlay_slice(case)
    where = ""
    if k is not None:  # (C, X, Y, Z): one slice along the third axis
        where = f"slice {k} of 0-{image.shape[-1] - 1} on the 3rd array axis"
        image, pred = image[..., k], pred[..., k]
        truth = truth[..., k] if truth is not None else None
    if case.physical:  # (x, y) index order: rows must be y for display
        image, pred = np.swapaxes(image, -1, -2), np.swapaxes(pred, -1, -2)
        truth = np.swapaxes(truth, -1, -2) if truth is not None else None
    img = np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0]
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)
    return img, pred, truth.astype(bool) if truth is not None else None, where
