"""Scoring a folder of predictions against a folder of references."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medssl import registry
from medssl.evaluation.checks import _check_pairs, _read_pair, _refuse_cluster_maps
from medssl.evaluation.folders import (
    LABEL_MAP,
    _detect_layout,
    _display,
    _existing_dir,
    _label_map_pairs,
    _listing,
    _multi_label_pairs,
    _Pair,
)
from medssl.metrics.label_maps import binary_metrics, evaluate_arrays, summarize


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    truth_dir: str | os.PathLike[str],
    spacing_aware: bool = False,
    tolerance: float = 1.0,
    labels: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against its reference in ``truth_dir``.

    Args:
        pred_dir: folder of predictions, same layout as ``truth_dir``.
        truth_dir: folder of references (``label_map`` or ``multi_label`` layout, see the module docs).
        spacing_aware: measure distances in mm using each reference file's spacing when the file has physical
            geometry; otherwise (and always when False) in pixels/voxels.
        tolerance: NSD tolerance, in the unit used for the case (mm or px).
        labels: label value -> name for the ``label_map`` layout (see ``evaluate_arrays``); unused in the
            ``multi_label`` layout, where sub-folder names are the labels.

    Returns:
        ``{"cases": [{"case", "label", "dice", "hd95", "hd", "nsd", "xor"}, ...], "summary": {label: {metric:
        mean over defined cases or None, "n_undefined_<metric>": int, "n_cases": int}}, "settings": {...}}``
        with ``settings["units"]`` mapping each case to "mm" or "px". Values are plain floats or None.
    """
    pred_root, truth_root = _existing_dir(pred_dir, "prediction"), _existing_dir(truth_dir, "reference")
    _refuse_cluster_maps(pred_root)
    layout = _detect_layout(truth_root)
    unused: list[Path] = []
    pairs = (
        _label_map_pairs(pred_root, truth_root, unused)
        if layout == LABEL_MAP
        else _multi_label_pairs(pred_root, truth_root, unused)
    )
    warnings = _check_pairs(pairs, labels)
    if unused:
        names = [_display(p, truth_root) for p in unused]
        warnings.insert(
            0,
            f"{len(unused)} reference file(s) in {truth_root} have no prediction and were not scored: "
            f"{_listing(names)}",
        )
    cases, units = _score_pairs(pairs, spacing_aware, tolerance, labels)
    settings = {
        "layout": layout,
        "pred_dir": str(pred_root),
        "truth_dir": str(truth_root),
        "spacing_aware": bool(spacing_aware),
        "tolerance": float(tolerance),
        "labels": None if labels is None else {str(int(v)): str(n) for v, n in labels.items()},
        "surface": "foreground voxels with a background face-neighbour; image border counts as background",
        "hd95": "max of the two directed 95th percentiles of surface distances (linear interpolation)",
        "nsd": "surface voxels within tolerance (inclusive) of the other surface / all surface voxels",
        "units": units,
        "n_unused_references": len(unused),
        "unused_references": [_display(p, truth_root) for p in unused],
    }
    return {"cases": cases, "summary": summarize(cases), "settings": settings, "warnings": warnings}


def _score_pairs(
    pairs: Sequence[_Pair], spacing_aware: bool, tolerance: float, labels: Mapping[int, str] | None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One row per case and label, and the unit ("mm", "px" or "mixed") of each case."""
    cases: list[dict[str, Any]] = []
    units: dict[str, str] = {}
    for pair in pairs:
        pred, truth, spacing, unit = _read_pair(pair, spacing_aware)
        if pair.structure is None:
            per_label = evaluate_arrays(pred, truth, spacing, labels, tolerance)
        else:
            per_label = {pair.structure: binary_metrics(pred > 0, truth > 0, spacing, tolerance)}
        cases.extend({"case": pair.case, "label": label, **values} for label, values in per_label.items())
        units[pair.case] = unit if units.get(pair.case, unit) == unit else "mixed"
    return cases, units


registry.register_object(
    "evaluation",
    "label-map",
    evaluate_folders,
    description="label maps scored as they are: Dice, HD95, HD, NSD and XOR per structure",
)
