"""Cluster-map housekeeping shared by the label-free methods: merging clusters down to a number, absorbing
small regions into their surroundings, ordering cluster labels, and mapping a working-size map back to the
input size.

Label maps are integer arrays ``(h, w)``: 0 marks pixels outside the field of view (not clustered), clusters are
1, 2, ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from medssl.labelfree.preprocess import PreparedImage

LabelArray = npt.NDArray[np.int64]


def merge_clusters(labels: LabelArray, features: npt.NDArray[np.floating], clusters: int, seed: int = 0) -> LabelArray:
    """Group the clusters of a map into at most ``clusters`` by their mean features: k-means over the pixels,
    each pixel standing for its cluster's mean (so every cluster weighs by its size and stays whole).

    Args:
        labels: ``(h, w)`` cluster map (0 = not clustered, left alone).
        features: ``(F, h, w)`` features whose cluster means decide the grouping.
        clusters: the number to reach (>= 1).
        seed: seed of the k-means.

    Returns:
        ``(h, w)`` map with clusters ``1..n``, ``n <= clusters``; unchanged when it already has few enough.
    """
    from medssl.labelfree.kmeans import kmeans

    ids = np.unique(labels[labels > 0])
    if len(ids) <= clusters:
        return labels.copy()
    flat = features.reshape(features.shape[0], -1)
    means = np.stack([flat[:, labels.ravel() == i].mean(axis=1) for i in ids])
    index = np.searchsorted(ids, labels[labels > 0])
    group, _ = kmeans(means[index], clusters, seed=seed)
    out = np.zeros_like(labels)
    out[labels > 0] = group + 1
    return out


def absorb_small_regions(labels: LabelArray, min_size: int) -> LabelArray:
    """Give every connected region (8-connected) smaller than ``min_size`` pixels the most common cluster
    around it; smallest regions first, so specks and holes vanish while the number of clusters stays.

    Args:
        labels: ``(h, w)`` cluster map; 0 (outside the field of view) is never changed nor given.
        min_size: regions below this many pixels are absorbed (<= 1: nothing changes).

    Returns:
        The cleaned ``(h, w)`` map.
    """
    out = labels.copy()
    if min_size <= 1:
        return out
    regions: list[tuple[int, int, tuple[slice, slice]]] = []
    structure = np.ones((3, 3), dtype=bool)
    for value in np.unique(out[out > 0]):
        components, n = ndimage.label(out == value, structure=structure)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is not None and sizes[index] < min_size:
                regions.append((int(sizes[index]), int(value), box))
    for _, value, box in sorted(regions, key=lambda r: r[0]):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        window = out[grown]
        region = _region_at(window, value)
        if region is None:
            continue
        ring = ndimage.binary_dilation(region, structure=structure) & ~region
        around = window[ring]
        around = around[(around > 0) & (around != value)]
        if around.size:
            window[region] = np.bincount(around).argmax()
    return out


def _region_at(window: LabelArray, value: int) -> npt.NDArray[np.bool_] | None:
    """The largest ``value`` region in a window grown by one pixel around a region's box (it may have been
    absorbed or joined by an earlier, smaller one)."""
    components, n = ndimage.label(window == value, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def order_by_lightness(labels: LabelArray, luminance: npt.NDArray[np.floating]) -> LabelArray:
    """Renumber clusters 1..n from the darkest (lowest mean ``luminance``) to the brightest; 0 stays 0."""
    ids = np.unique(labels[labels > 0])
    means = [float(luminance[labels == i].mean()) for i in ids]
    lookup = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    for rank, index in enumerate(np.argsort(means), start=1):
        lookup[ids[index]] = rank
    return lookup[labels]


def to_input_size(labels: LabelArray, shape: tuple[int, int]) -> LabelArray:
    """Map a working-size cluster map ``(h, w)`` to ``shape``: each label's indicator is resized bilinearly and
    every pixel takes the label with the largest value (smooth boundaries, and never a label that was not there).
    """
    if labels.shape == shape:
        return labels.copy()
    values = np.unique(labels)
    one_hot = torch.from_numpy(labels[None] == values[:, None, None]).float()[None]
    resized = F.interpolate(one_hot, size=shape, mode="bilinear", align_corners=False)[0]
    return values[resized.argmax(dim=0).numpy()]


@dataclass
class ClusterResult:
    """The output of a label-free method for one picture.

    Attributes:
        labels: ``(H, W)`` cluster map at the input size: clusters ``1..K`` ordered from darkest to brightest,
            0 outside the field of view.
        working_labels: the same at the working size, ``(h, w)``.
        prepared: the working-size features, field of view and hair mask.
        iterations: optimisation steps taken (0 for k-means).
        seconds: wall-clock time from the input picture to ``labels``.
        losses: per-step loss values (S3-Net), else empty.
    """

    labels: LabelArray
    working_labels: LabelArray
    prepared: PreparedImage
    iterations: int
    seconds: float
    losses: list[dict[str, float]] = field(default_factory=list)


def finish_clusters(
    labels: LabelArray,
    prepared: PreparedImage,
    clusters: int,
    min_region: float,
    *,
    iterations: int,
    start: float,
    losses: list[dict[str, float]] | None = None,
) -> ClusterResult:
    """Merge to ``clusters``, absorb regions below ``min_region`` of the field of view, order the clusters from
    dark to bright and map to the input size.

    Args:
        labels: ``(h, w)`` working-size map (0 outside the field of view).
        prepared: the picture's ``PreparedImage``.
        clusters: the number of clusters to keep at most.
        min_region: share of the field of view below which a region is absorbed.
        iterations: optimisation steps taken, for the record.
        start: ``time.perf_counter()`` when the picture's processing began.
        losses: per-step losses, for the record.

    Returns:
        The ``ClusterResult``.
    """
    merged = merge_clusters(labels, prepared.features, clusters)
    cleaned = absorb_small_regions(merged, round(min_region * int(prepared.valid.sum())))
    ordered = order_by_lightness(cleaned, prepared.luminance)
    full = to_input_size(ordered, prepared.input_shape)
    return ClusterResult(full, ordered, prepared, iterations, time.perf_counter() - start, losses or [])
