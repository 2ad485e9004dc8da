"""Per-label metrics of label maps (arrays in, numbers out) and their means over cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medssl.errors import MedsslError
from medssl.metrics.overlap import as_mask_pair, dice, xor_error
from medssl.metrics.surface import hausdorff_from_distances, nsd_from_distances, surface_distances

METRICS = ("dice", "hd95", "hd", "nsd", "xor")

MetricValues = dict[str, float | None]


def binary_metrics(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Sequence[float] | None = None, tolerance: float = 1.0
) -> MetricValues:
    """All metrics for one binary structure, sharing one surface-distance computation.

    Args:
        pred: predicted mask, shape ``(*spatial)``; non-zero is foreground.
        truth: reference mask, same shape.
        spacing: voxel size per axis (None: voxels).
        tolerance: NSD tolerance in the unit of ``spacing``.

    Returns:
        ``{"dice", "hd95", "hd", "nsd", "xor"}`` as floats, or None where undefined (see the contract rules).
    """
    p, t = as_mask_pair(pred, truth)
    to_truth, to_pred = surface_distances(p, t, spacing)
    return {
        "dice": dice(p, t),
        "hd95": hausdorff_from_distances(to_truth, to_pred, percentile=95.0),
        "hd": hausdorff_from_distances(to_truth, to_pred, percentile=100.0),
        "nsd": nsd_from_distances(to_truth, to_pred, tolerance=tolerance),
        "xor": xor_error(p, t),
    }


def evaluate_arrays(
    pred_map: npt.ArrayLike,
    truth_map: npt.ArrayLike,
    spacing: Sequence[float] | None = None,
    labels: Mapping[int, str] | None = None,
    tolerance: float = 1.0,
) -> dict[str, MetricValues]:
    """Per-label metrics between two integer label maps.

    Args:
        pred_map: predicted label map, shape ``(*spatial)``; 0 is background.
        truth_map: reference label map, same shape.
        spacing: voxel size per axis (None: voxels); surface metrics and ``tolerance`` use its unit.
        labels: label value -> name. When given, exactly these labels are evaluated (absent from both maps:
            the both-empty rules apply); when None, every non-zero value present in either map.
        tolerance: NSD tolerance.

    Returns:
        ``{label_key: {"dice", "hd95", "hd", "nsd", "xor"}}`` in increasing label value; the key is the name
        from ``labels`` or ``str(value)``.
    """
    pred, truth = np.asarray(pred_map), np.asarray(truth_map)
    if pred.shape != truth.shape:
        raise MedsslError(f"prediction shape {pred.shape} does not match reference shape {truth.shape}")
    return {
        name: binary_metrics(pred == value, truth == value, spacing, tolerance)
        for value, name in _label_items(pred, truth, labels)
    }


def summarize(cases: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per-label means over the cases where each metric is defined.

    Args:
        cases: rows with ``"label"`` and the ``METRICS`` keys.

    Returns:
        ``{label: {"n_cases", metric: mean or None, "n_undefined_<metric>": count}}``, labels in first-seen order.
    """
    summary: dict[str, dict[str, float | int | None]] = {}
    for label in dict.fromkeys(row["label"] for row in cases):
        rows = [row for row in cases if row["label"] == label]
        entry: dict[str, float | int | None] = {"n_cases": len(rows)}
        for metric in METRICS:
            defined = [float(row[metric]) for row in rows if row[metric] is not None]
            entry[metric] = float(np.mean(defined)) if defined else None
            entry[f"n_undefined_{metric}"] = len(rows) - len(defined)
        summary[label] = entry
    return summary


def _label_items(
    pred: npt.NDArray[Any], truth: npt.NDArray[Any], labels: Mapping[int, str] | None
) -> list[tuple[int, str]]:
    """(value, key) pairs to evaluate, in increasing value."""
    if labels is not None:
        return sorted((int(value), str(name)) for value, name in labels.items())
    present = set(np.unique(pred).tolist()) | set(np.unique(truth).tolist())
    return [(int(v), str(int(v))) for v in sorted(present) if v != 0]
