"""Reading and checking prediction/reference pairs before anything is scored."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medssl.data.check import geometry_difference
from medssl.data.io import read_label
from medssl.errors import MedsslError
from medssl.evaluation.folders import _MAX_LISTED, _Pair


def _refuse_cluster_maps(pred_root: Path) -> None:
    """Refuse the output folder of ``medssl segment``: its maps number clusters, they are not labels."""
    marker = _json_object(pred_root / ".medssl-output.json")
    run = _json_object(pred_root / "run.json")
    if marker.get("kind") == "segment" or ("method" in run and "images" in run):
        raise MedsslError(
            f"{pred_root} holds cluster maps of `medssl segment` (clusters 1..K numbered by brightness, not labels); "
            "score them with --protocol best-cluster (or border, darkest, paper-code), or evaluate the masks of "
            f"its selected/ sub-folder (written with --select) against the truth"
        )


def _json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _check_pairs(pairs: Sequence[_Pair], labels: Mapping[int, str] | None) -> list[str]:
    """Read every pair once before scoring: errors (unreadable, non-integer or non-finite values, shapes) are
    raised together; geometry differences and prediction values absent from every reference are returned as
    warnings."""
    errors: list[str] = []
    warnings: list[str] = []
    pred_values: dict[int, Path] = {}  # value -> first prediction holding it
    truth_values: set[int] = set()
    for pair in pairs:
        read = []
        for path in (pair.pred, pair.truth):
            try:
                read.append(read_label(path))
            except MedsslError as exc:
                errors.append(str(exc))
        if len(read) < 2:
            continue
        (pred, pred_meta), (truth, truth_meta) = read
        if pred.shape != truth.shape:
            errors.append(
                f"shape mismatch: prediction {pair.pred} has shape {pred.shape}, reference {pair.truth} has "
                f"{truth.shape}"
            )
            continue
        diff = geometry_difference(truth_meta, pred_meta)
        if diff:
            warnings.append(
                f"geometry of prediction {pair.pred} differs from reference {pair.truth} ({diff}); "
                "scored voxel by voxel as if aligned"
            )
        if pair.structure is None:
            for v in np.unique(pred).tolist():
                pred_values.setdefault(int(v), pair.pred)
            truth_values.update(int(v) for v in np.unique(truth).tolist())
    if errors:
        shown = "\n  ".join(errors[:_MAX_LISTED])
        more = f"\n  ... and {len(errors) - _MAX_LISTED} more" if len(errors) > _MAX_LISTED else ""
        raise MedsslError(f"{len(errors)} problem(s) with the files to evaluate, nothing scored:\n  {shown}{more}")
    known = truth_values | (set(labels) if labels is not None else set())
    strange = sorted(v for v in pred_values if v not in known)
    if strange:
        warnings.append(
            f"prediction value(s) {strange} occur in no reference (references hold {sorted(truth_values)}; e.g. "
            f"{pred_values[strange[0]]}): scored as labels that are never right; cluster maps of `medssl segment` "
            "need --protocol best-cluster"
        )
    return warnings


def _read_pair(
    pair: _Pair, spacing_aware: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], tuple[float, ...] | None, str]:
    """Read both label files; the spacing (and unit) comes from the reference."""
    pred, _ = read_label(pair.pred)
    truth, meta = read_label(pair.truth)
    if pred.shape != truth.shape:
        raise MedsslError(
            f"shape mismatch: prediction {pair.pred} has shape {pred.shape}, reference {pair.truth} has {truth.shape}"
        )
    if spacing_aware and meta.physical:
        return pred, truth, tuple(float(s) for s in meta.spacing), "mm"
    return pred, truth, None, "px"
