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

_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def plot_training_curves(metrics_csv: str | Path | Sequence[str | Path], out_png: str | Path) -> Path | None:
    """Training losses (``train_*`` columns) and validation Dice against step from Lightning's CSV logs (several
    files: one run and its resumptions, in order); None if nothing was logged. Without ``val_dice`` (pretraining)
    only the loss panel is drawn."""
    paths = [Path(metrics_csv)] if isinstance(metrics_csv, str | Path) else [Path(p) for p in metrics_csv]
    series: dict[str, tuple[list[int], list[float]]] = {}
    for path in paths:
        if not path.is_file():
            continue
        with path.open() as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.get("step") or 0))
                for key in row:
                    if (key.startswith("train_") or key == "val_dice") and row.get(key):
                        series.setdefault(key, ([], []))
                        series[key][0].append(step)
                        series[key][1].append(float(row[key]))
    if not series:
        return None
    has_val = "val_dice" in series
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 3.6), squeeze=False)
    axes = axes[0]
    losses = sorted((k for k in series if k.startswith("train_")), key=lambda k: (k != "train_loss", k))
    for colour, key in enumerate(losses):
        s, v = series[key]
        name = key.removeprefix("train_").replace("_", " ")
        axes[0].plot(s, v, lw=0.6, alpha=0.4, color=f"C{colour}")
        axes[0].plot(s, _smooth(v), lw=1.5, color=f"C{colour}", label=f"{name} (smoothed)")
    if losses and all(min(series[k][1]) > 0 for k in losses):
        axes[0].set_yscale("log")
    if len(losses) > 1:
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="step", ylabel="loss", title="training loss")
    if has_val:
        s, v = series["val_dice"]
        axes[1].plot(s, v, "o-", color="C1")
        best = int(np.argmax(v))
        axes[1].annotate(f"best {v[best]:.3f}", (s[best], v[best]), textcoords="offset points", xytext=(0, -14))
        axes[1].set(xlabel="step", ylabel="mean foreground Dice", title="validation Dice", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _smooth(values: list[float], window: int = 25) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.size < window:
        return v
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode="valid")


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

    3D cases show the slice (last axis) with the most truth (else prediction) foreground.
    """
    n = len(cases)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, case in zip(axes.ravel(), cases, strict=False):
        img, pred, truth = _plane(case)
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
        ax.set_title(panel, fontsize=9)
    handles = [matplotlib.patches.Patch(color=_COLOURS[i % len(_COLOURS)], label=lab) for i, lab in enumerate(labels)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _plane(case: OverlayCase) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image, pred, truth = case.image, case.prediction.astype(bool), case.truth
    if image.ndim == 4:  # (C, X, Y, Z): pick the most informative slice along Z
        ref = truth if truth is not None and truth.any() else pred
        k = int(np.argmax(ref.reshape(-1, ref.shape[-1]).sum(0))) if ref.any() else image.shape[-1] // 2
        image, pred = image[..., k], pred[..., k]
        truth = truth[..., k] if truth is not None else None
    if case.physical:  # (x, y) index order: rows must be y for display
        image, pred = np.swapaxes(image, -1, -2), np.swapaxes(pred, -1, -2)
        truth = np.swapaxes(truth, -1, -2) if truth is not None else None
    img = np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0]
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1)
    return img, pred, truth.astype(bool) if truth is not None else None
