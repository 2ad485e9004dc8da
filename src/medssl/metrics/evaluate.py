"""Evaluate predicted segmentations against references: arrays, folders, and CSV/JSON reports.

Two folder layouts are understood (the layout is read from the reference folder):
- ``label_map``: label images directly in the folder (``truth/case1.nii.gz``); each non-zero value is a label;
- ``multi_label``: one sub-folder per structure holding binary masks (``truth/heart/case1.png``, ``> 0`` is
  foreground); the label key is the sub-folder name.
Predictions and references are matched by file stem (``medssl.data.io.stem``), so formats may differ; stems
that match no file are then paired by their first ``_``/``-``-separated token where it is unique on both sides
(DRIVE's ``01_test`` prediction with its ``01_manual1`` truth, as ``medssl.data.layouts`` pairs them). Every
prediction needs a reference (otherwise ``MedsslError`` names the files); references without a prediction are
not scored, and are counted and named in the result (``settings["unused_references"]``) and in its warnings.

Every pair is read and checked before anything is scored: all unreadable files, non-integer or non-finite values
and shape mismatches are reported together in one ``MedsslError``. A geometry difference (spacing, origin,
direction; ``medssl.data.check.geometry_difference``) between a prediction and its reference, and prediction
values that occur in no reference, are warnings (``result["warnings"]``). A prediction folder written by
``medssl segment`` (cluster maps ``1..K``, not labels) is refused with the protocols that score it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medssl.data.check import geometry_difference
from medssl.data.io import is_image_path, read_label, stem
from medssl.errors import MedsslError
from medssl.metrics.overlap import as_mask_pair, dice, xor_error
from medssl.metrics.surface import hausdorff_from_distances, nsd_from_distances, surface_distances

METRICS = ("dice", "hd95", "hd", "nsd", "xor")
LABEL_MAP = "label_map"
MULTI_LABEL = "multi_label"
_MAX_LISTED = 10  # file names listed in an error message before "... and N more"

MetricValues = dict[str, float | None]


@dataclass(frozen=True)
class _Pair:
    """One prediction/reference file pair; ``structure`` is set in the multi-label layout."""

    case: str
    pred: Path
    truth: Path
    structure: str | None = None


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


def write_evaluation(result: Mapping[str, Any], out_file: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write an evaluation as JSON (``out_file``) and a per-case CSV beside it (same stem, ``.csv``).

    Args:
        result: the output of ``evaluate_folders``.
        out_file: path ending in ``.json``; parent folders are created.

    Returns:
        ``(json_path, csv_path)``.
    """
    json_path = Path(out_file)
    if json_path.suffix.lower() != ".json":
        raise MedsslError(f"evaluation output must be a .json file, got {json_path}")
    csv_path = json_path.with_suffix(".csv")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN that slipped past _plain would be a bug, never silently invalid JSON.
    _write_text(json_path, json.dumps(_plain(result), indent=2, allow_nan=False) + "\n")
    _write_text(csv_path, _cases_csv(result.get("cases", [])))
    return json_path, csv_path


def reference_layout(truth_dir: str | os.PathLike[str]) -> str:
    """The layout of a reference folder: ``LABEL_MAP`` or ``MULTI_LABEL`` (see the module docs).

    Raises:
        MedsslError: the folder is missing, holds no label image, or mixes files and structure sub-folders.
    """
    return _detect_layout(_existing_dir(truth_dir, "reference"))


def image_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The image files of a folder by stem (sorted by name); two files with one stem raise ``MedsslError``."""
    return _image_files(_existing_dir(folder, "image"))


def structure_dirs(truth_dir: str | os.PathLike[str]) -> list[Path]:
    """The structure sub-folders of a ``MULTI_LABEL`` reference folder, sorted by name."""
    return [p for p in _entries(Path(truth_dir)) if _is_structure_dir(p)]


def _label_items(
    pred: npt.NDArray[Any], truth: npt.NDArray[Any], labels: Mapping[int, str] | None
) -> list[tuple[int, str]]:
    """(value, key) pairs to evaluate, in increasing value."""
    if labels is not None:
        return sorted((int(value), str(name)) for value, name in labels.items())
    present = set(np.unique(pred).tolist()) | set(np.unique(truth).tolist())
    return [(int(v), str(int(v))) for v in sorted(present) if v != 0]


def _existing_dir(path: str | os.PathLike[str], role: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise MedsslError(f"{role} folder not found: {folder}")
    return folder


def _entries(folder: Path) -> list[Path]:
    """Visible entries of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_structure_dir(path: Path) -> bool:
    # A DICOM series folder is an image, not a structure sub-folder.
    return path.is_dir() and not is_image_path(path)


def _detect_layout(truth_root: Path) -> str:
    entries = _entries(truth_root)
    has_images = any(is_image_path(p) for p in entries)
    has_structures = any(_is_structure_dir(p) for p in entries)
    if has_images and has_structures:
        raise MedsslError(
            f"{truth_root} holds both label files and sub-folders; use either label maps directly in the folder "
            "or one sub-folder of binary masks per structure"
        )
    if has_structures:
        return MULTI_LABEL
    if has_images:
        return LABEL_MAP
    raise MedsslError(f"no label images found in reference folder {truth_root}")


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem; two files with one stem are ambiguous."""
    files: dict[str, Path] = {}
    for path in _entries(folder):
        if not is_image_path(path):
            continue
        key = stem(path)
        if key in files:
            raise MedsslError(f"{folder} holds two files for case '{key}': {files[key].name} and {path.name}")
        files[key] = path
    return files


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown}, ... and {len(names) - _MAX_LISTED} more"


def _match(pred_folder: Path, truth_folder: Path, unused: list[Path], structure: str | None = None) -> list[_Pair]:
    """Pair files by stem, else by the first ``_``/``-`` token of the stem when unique on both sides (DRIVE:
    ``01_test`` with ``01_manual1``); a prediction without reference is an error, references without prediction
    go to ``unused``."""
    preds, truths = _image_files(pred_folder), _image_files(truth_folder)
    pairs = {k: k for k in preds if k in truths}
    lone_preds = [k for k in preds if k not in pairs]
    lone_truths = [k for k in truths if k not in pairs]
    pred_tokens, truth_tokens = Counter(map(_token, lone_preds)), Counter(map(_token, lone_truths))
    by_token = {_token(k): k for k in lone_truths}
    for k in lone_preds:
        if pred_tokens[_token(k)] == 1 and truth_tokens[_token(k)] == 1:
            pairs[k] = by_token[_token(k)]
    extra = sorted(preds.keys() - pairs.keys())
    if extra:
        names = [preds[k].name for k in extra]
        raise MedsslError(
            f"{len(extra)} prediction file(s) in {pred_folder} match no reference in {truth_folder}: {_listing(names)}"
        )
    unused.extend(truths[k] for k in sorted(truths.keys() - set(pairs.values())))
    return [_Pair(case, preds[case], truths[pairs[case]], structure) for case in sorted(preds)]


def _token(name: str) -> str:
    return re.split(r"[_-]", name, maxsplit=1)[0]


def _label_map_pairs(pred_root: Path, truth_root: Path, unused: list[Path]) -> list[_Pair]:
    pairs = _match(pred_root, truth_root, unused)
    if not pairs:
        raise MedsslError(f"no prediction in {pred_root} (nothing to score against {truth_root})")
    return pairs


def _multi_label_pairs(pred_root: Path, truth_root: Path, unused: list[Path]) -> list[_Pair]:
    """Pairs of every structure sub-folder, ordered by case, then structure."""
    structures = [p.name for p in _entries(truth_root) if _is_structure_dir(p)]
    predicted = {p.name for p in _entries(pred_root) if _is_structure_dir(p)}
    missing = [s for s in structures if s not in predicted]
    extra = sorted(predicted - set(structures))
    stray = [p.name for p in _entries(pred_root) if is_image_path(p)]
    if stray:
        raise MedsslError(
            f"{pred_root} holds label files ({_listing(stray)}) beside structure sub-folders; use sub-folders only"
        )
    if missing or extra:
        raise MedsslError(
            f"structure sub-folders differ: reference {truth_root} has {structures}, prediction {pred_root} "
            f"lacks {missing} and has unmatched {extra}"
        )
    pairs = [pair for s in structures for pair in _match(pred_root / s, truth_root / s, unused, s)]
    if not pairs:
        raise MedsslError(f"no prediction in the structure sub-folders of {pred_root} (nothing to score)")
    order = {s: i for i, s in enumerate(structures)}
    return sorted(pairs, key=lambda pair: (pair.case, order[pair.structure or ""]))


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (a structure's file as ``heart/case1.png``)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


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


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None, paths to strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _cases_csv(cases: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # Other numeric columns of the rows (e.g. the selected cluster, or "hm" of the paper-code protocol) follow.
    extra = [k for k in dict.fromkeys(k for row in cases for k in row) if k not in ("case", "label", *METRICS)]
    writer.writerow(["case", "label", *METRICS, *extra])
    for row in cases:
        values = [_plain(row.get(m)) for m in (*METRICS, *extra)]
        writer.writerow([row["case"], row["label"], *("" if v is None else repr(float(v)) for v in values)])
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
