"""Scoring folders of cluster maps against ground truth under an evaluation protocol.

Cluster maps (one per image, ``0`` = not clustered, clusters ``1..K``) are matched to the references by file
stem, as in ``medssl.evaluation``; every reference needs a cluster map (maps without a reference are
ignored: a folder is often segmented whole while only some images have labels). The reference folder is a
label-map folder (each non-zero value is a structure, e.g. a 0/255 lesion mask) or has one sub-folder of
binary masks per structure. For every case and structure the protocol (``medssl.labelfree.protocols``) picks
one cluster, which is then scored like any prediction (Dice, HD95, HD, NSD, XOR, with the project's
empty-mask rules), or, for ``paper-code``, the way S3-Net's public code scores it (Dice, "hm" = 1 - IoU, XOR
after masking with the dilated truth).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medssl.data.io import read_image, read_label
from medssl.errors import MedsslError
from medssl.evaluation.folders import LABEL_MAP, image_files, reference_layout, structure_dirs
from medssl.labelfree.preprocess import image_lightness
from medssl.labelfree.protocols import cluster_ids, cluster_protocol, paper_code_scores, select_mask
from medssl.metrics.label_maps import METRICS, binary_metrics

PAPER_CODE_METRICS = ("dice", "hm", "xor")


def metric_names(protocol: str) -> tuple[str, ...]:
    """The metrics a protocol reports."""
    return PAPER_CODE_METRICS if cluster_protocol(protocol).paper_code else METRICS


def score_clusters(
    labels: npt.NDArray[np.integer],
    truth: npt.ArrayLike,
    protocol: str,
    *,
    lightness: npt.NDArray[np.floating] | None = None,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1.0,
) -> dict[str, Any]:
    """Select a cluster by ``protocol`` and score it against one binary structure.

    Args:
        labels: ``(H, W)`` cluster map.
        truth: ``(H, W)`` binary ground truth.
        protocol: a registered cluster-map protocol (``medssl.labelfree.protocols.cluster_protocols()``).
        lightness: ``(H, W)`` image lightness, needed by ``darkest`` and ``lesion``.
        spacing: pixel size for the distances (None: pixels).
        tolerance: NSD tolerance.

    Returns:
        ``{"cluster": value, "n_clusters": int, <metric>: value, ...}`` with ``metric_names(protocol)``; for a
        region rule (``lesion``) the metrics score the region and ``cluster`` is the cluster holding most of it.
    """
    chosen = cluster_protocol(protocol)
    mask = np.asarray(truth).astype(bool)
    cluster, pred = select_mask(protocol, labels, mask, lightness)
    values = paper_code_scores(pred, mask) if chosen.paper_code else binary_metrics(pred, mask, spacing, tolerance)
    return {"cluster": cluster, "n_clusters": len(cluster_ids(labels)), **values}


def evaluate_clusters(
    pred_dir: str | os.PathLike[str],
    truth_dir: str | os.PathLike[str],
    *,
    protocol: str = "best-cluster",
    images_dir: str | os.PathLike[str] | None = None,
    spacing_aware: bool = False,
    tolerance: float = 1.0,
) -> dict[str, Any]:
    """Score every cluster map in ``pred_dir`` against its reference under ``protocol``.

    Args:
        pred_dir: folder of cluster maps (``medssl segment`` output).
        truth_dir: reference folder (label maps, or one sub-folder of binary masks per structure).
        protocol: a registered cluster-map protocol (``medssl.labelfree.protocols.cluster_protocols()``).
        images_dir: the images, matched by stem (needed by ``darkest`` and ``lesion``).
        spacing_aware: distances in mm where the reference has physical spacing.
        tolerance: NSD tolerance (mm or px).

    Returns:
        ``{"cases": [{"case", "label", "cluster", "n_clusters", <metrics>}], "summary": {label: {metric: mean,
        "<metric>_median": median, "n_undefined_<metric>", "n_cases"}}, "settings": {..., "protocol", "note"}}``.

    Raises:
        MedsslError: unknown protocol, missing images for ``darkest``, unmatched files or shape mismatches.
    """
    chosen = cluster_protocol(protocol)
    if chosen.needs_images and images_dir is None:
        raise MedsslError(f"protocol {protocol} needs the images: pass --images DIR")
    layout = reference_layout(truth_dir)
    references = _references(Path(truth_dir), layout)
    preds = image_files(pred_dir)
    images = image_files(images_dir) if images_dir is not None else {}
    _check_matched(preds, references, Path(pred_dir))
    cases: list[dict[str, Any]] = []
    for case, structures in references.items():
        labels, _ = read_label(preds[case])
        lightness = _lightness(images, case, labels.shape) if chosen.needs_images else None
        for name, path in structures:
            truth, meta = read_label(path)
            if truth.shape != labels.shape:
                raise MedsslError(
                    f"shape mismatch: cluster map {preds[case]} {labels.shape}, reference {path} {truth.shape}"
                )
            spacing = tuple(float(s) for s in meta.spacing) if spacing_aware and meta.physical else None
            for key, mask in _structure_masks(truth, name):
                scores = score_clusters(
                    labels, mask, protocol, lightness=lightness, spacing=spacing, tolerance=tolerance
                )
                cases.append({"case": case, "label": key, **scores})
    settings = {
        "protocol": protocol,
        "note": chosen.description,
        "layout": layout,
        "pred_dir": str(pred_dir),
        "truth_dir": str(truth_dir),
        "images_dir": None if images_dir is None else str(images_dir),
        "spacing_aware": bool(spacing_aware),
        "tolerance": float(tolerance),
    }
    return {"cases": cases, "summary": summarize_with_medians(cases, metric_names(protocol)), "settings": settings}


def summarize_with_medians(
    cases: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> dict[str, dict[str, float | int | None]]:
    """Per label: mean and median of each metric over the cases where it is defined, and the undefined count.

    Returns:
        ``{label: {"n_cases", metric: mean, "<metric>_median": median, "n_undefined_<metric>": count}}``.
    """
    summary: dict[str, dict[str, float | int | None]] = {}
    for label in dict.fromkeys(row["label"] for row in cases):
        rows = [row for row in cases if row["label"] == label]
        entry: dict[str, float | int | None] = {"n_cases": len(rows)}
        for metric in metrics:
            defined = [float(row[metric]) for row in rows if row.get(metric) is not None]
            entry[metric] = float(np.mean(defined)) if defined else None
            entry[f"{metric}_median"] = float(np.median(defined)) if defined else None
            entry[f"n_undefined_{metric}"] = len(rows) - len(defined)
        summary[label] = entry
    return summary


def _references(truth_root: Path, layout: str) -> dict[str, list[tuple[str | None, Path]]]:
    """Case -> [(structure name or None for a label map, reference file)], cases sorted by stem."""
    if layout == LABEL_MAP:
        return {case: [(None, path)] for case, path in sorted(image_files(truth_root).items())}
    references: dict[str, list[tuple[str | None, Path]]] = {}
    for folder in structure_dirs(truth_root):
        for case, path in image_files(folder).items():
            references.setdefault(case, []).append((folder.name, path))
    return dict(sorted(references.items()))


def _structure_masks(truth: npt.NDArray[np.int64], name: str | None) -> list[tuple[str, npt.NDArray[np.bool_]]]:
    """(label key, binary mask) pairs: every non-zero value of a label map, or the structure's mask."""
    if name is not None:
        return [(name, truth > 0)]
    return [(str(int(v)), truth == v) for v in np.unique(truth) if v != 0]


def _check_matched(preds: Mapping[str, Path], references: Mapping[str, Any], pred_dir: Path) -> None:
    missing = sorted(references.keys() - preds.keys())
    if missing:
        shown = ", ".join(missing[:10]) + (f", ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise MedsslError(f"no cluster map in {pred_dir} for {len(missing)} reference case(s): {shown}")


def _lightness(images: Mapping[str, Path], case: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    if case not in images:
        raise MedsslError(f"no image for case {case} in the --images folder")
    image, _ = read_image(images[case])
    lightness = image_lightness(image)
    if lightness.shape != shape:
        raise MedsslError(f"image {images[case]} has shape {lightness.shape}, its cluster map {shape}")
    return lightness
