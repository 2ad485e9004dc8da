"""Choosing the lesion in a cluster map without ground truth: one binary mask from a score over connected regions.

Candidates are the connected regions (8-connected, holes filled) of every single cluster and of every union of
the ``t`` darkest clusters (a lesion often spans a dark core and a lighter rim, which more than two clusters
split). Each region is scored by:

- **contrast** with the ring of clustered pixels around it: ``|mean inside - mean ring|`` of the lightness over
  its spread over the whole map, capped at ``_CONTRAST_CAP`` and halved for regions brighter than their ring
  (a lesion differs from the skin around it, and is mostly darker; a piece of skin does not differ; the dark
  core of a lesion differs less from the lesion's rim than the whole lesion from the skin, so the whole wins);
- **compactness**: area over the area of its convex hull (lesions are blob-like; leftovers of the background
  and rings are not);
- **distance of its centroid from the image centre**, as a share of the half diagonal, with a small weight
  (photographs centre the lesion, but one touching a border must still win);
- **contact with excluded pixels**: the share of its ring that lies on label 0 (field of view, excluded
  artefacts) plus the share outside the image, the latter scaled, for a region darker than its ring, by the
  centroid's distance from the centre up to ``_CENTRED`` (a dark corner or a strip along the edge is off-centre,
  a lesion filling the frame touches every edge but is centred; skin around an off-centre lesion is centred
  too, but brighter), penalised only beyond ``_FREE_CONTACT`` (a lesion touching one border has a small share,
  a dark corner or a strip along the edge half or more); ring pixels within ``_EDGE_MARGIN`` of the edge count
  as outside the image (a thin border line of another cluster does not hide the contact);
- **size**: regions below ``_MIN_SHARE`` of the clustered pixels are not candidates (specks); above
  ``_LARGE_SHARE`` they are penalised (the skin), scaled like the image edge for a region darker than its ring
  (a lesion filling the frame, centred, beside skin left in a corner); a small bonus (**presence**) grows up to
  ``_PRESENT_SHARE`` and then stays, so a lesion of a few percent outweighs a clump of hair of one percent, and
  beyond that size does not count.

``score = contrast + 0.5 compactness - 0.5 centre - 2 excess contact - 2 excess size + 0.3 presence w``, where
``w = min(contrast / _PRESENT_CONTRAST, 1)``: a faint blob of skin of another shade has a lesion's size too, and
must not outscore a contrasted lesion that the image edge cuts. The weights were set on synthetic pictures, the
first 40 PH2 images and corrupted copies of the first 10, and ``_CENTRED``, ``_EDGE_MARGIN``,
``_PRESENT_CONTRAST`` and the size relief on the corrupted copies of the first 40
(``benchmarks/labelfree_robustness.py --images first40``, artefact seeds 0-3, and 4-7 of the border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from medssl.errors import MedsslError

BoolArray = npt.NDArray[np.bool_]
_WORKING_SIDE = 256  # larger maps are scored on a strided copy
_MIN_SHARE = 0.002
_LARGE_SHARE = 0.8
_PRESENT_SHARE = 0.03  # the size bonus grows up to this share (a hair clump or speck is smaller than a lesion)
_FREE_CONTACT = 0.3
_CENTRED = 0.15  # image-edge contact and size count in full from this distance from the centre on
_EDGE_MARGIN = 0.01  # ring pixels this near the image edge (a share of the short side, >= 2 px) count as beyond it
_RING_SHARE = 0.2  # ring width as a share of the region's equivalent radius (at least 2 pixels)
_CONTRAST_CAP = 3.0
_PRESENT_CONTRAST = 0.3  # the size bonus counts in full from this scaled contrast on, less below
_BRIGHTER = 0.5  # contrast counts this much for a region brighter than its ring (lesions are mostly darker)
_WEIGHTS = {"contrast": 1.0, "compactness": 0.5, "centre": 0.5, "contact": 2.0, "size": 2.0, "presence": 0.3}


@dataclass(frozen=True)
class RegionScore:
    """One candidate region and its score terms.

    Attributes:
        clusters: the cluster values whose union holds the region.
        mask: ``(h, w)`` the region (holes filled), at the scoring size.
        terms: ``contrast`` (capped, scaled to [0, 1]), ``compactness``, ``centre``, ``contact`` (excess over
            ``_FREE_CONTACT``), ``size`` (excess over ``_LARGE_SHARE``), ``presence`` (share up to
            ``_PRESENT_SHARE``, scaled to [0, 1]).
        score: the weighted sum.
    """

    clusters: tuple[int, ...]
    mask: BoolArray
    terms: dict[str, float]
    score: float


def _cluster_sets(labels: npt.NDArray[np.integer], lightness: npt.NDArray[np.floating]) -> list[tuple[int, ...]]:
    """Every single cluster and every union of the ``t`` darkest (``1 < t < K``)."""
    ids = [int(v) for v in np.unique(labels) if v > 0]
    means = {i: float(lightness[labels == i].mean()) for i in ids}
    dark_first = sorted(ids, key=lambda i: (means[i], i))
    sets: list[tuple[int, ...]] = [(i,) for i in ids]
    sets += [tuple(sorted(dark_first[:t])) for t in range(2, len(ids))]
    return sets


def score_region(
    region: BoolArray, clustered: BoolArray, lightness: npt.NDArray[np.floating], spread: float
) -> dict[str, float]:
    """The score terms of one region (see the module docstring).

    Args:
        region: ``(h, w)`` the region.
        clustered: ``(h, w)`` pixels with a cluster (not label 0).
        lightness: ``(h, w)`` image lightness.
        spread: standard deviation of the lightness over the clustered pixels.

    Returns:
        ``{"contrast", "compactness", "centre", "contact", "size", "presence"}``.
    """
    h, w = region.shape
    area = int(region.sum())
    width = max(2.0, _RING_SHARE * math.sqrt(area / math.pi))
    distance = ndimage.distance_transform_edt(~np.pad(region, 1))[1:-1, 1:-1]
    pad = math.ceil(width) + 1
    padded_distance = ndimage.distance_transform_edt(~np.pad(region, pad))
    ring_all = (padded_distance > 0) & (padded_distance <= width)  # the ring, also where it leaves the image
    n_ring = max(int(ring_all.sum()), 1)
    # Ring pixels within a few pixels of the image edge count as beyond it, as those outside do: a thin line of
    # another cluster along the edge (a scanner's or a resize's border line) must not hide a dark corner's contact.
    margin = max(2, round(_EDGE_MARGIN * min(h, w)))
    ring_inner = ring_all[pad + margin : -(pad + margin), pad + margin : -(pad + margin)]
    excluded = float((ring_inner & ~clustered[margin:-margin, margin:-margin]).sum()) / n_ring
    beyond_image = float(ring_all.sum() - ring_inner.sum()) / n_ring
    ring = (distance > 0) & (distance <= width) & clustered
    contrast, difference = 0.0, 0.0
    if ring.any():
        difference = float(lightness[ring].mean()) - float(lightness[region].mean())
        polarity = 1.0 if difference > 0 else _BRIGHTER
        contrast = min(abs(difference) / (spread + 1e-6), _CONTRAST_CAP) / _CONTRAST_CAP * polarity
    rows, cols = np.nonzero(region)
    centre = math.hypot((rows.mean() - (h - 1) / 2) / (h / 2), (cols.mean() - (w - 1) / 2) / (w / 2)) / math.sqrt(2)
    edge = region & ~ndimage.binary_erosion(region)
    points = np.argwhere(edge).astype(np.float64)
    try:
        hull = ConvexHull(np.concatenate([points + d for d in ((0, 0), (0, 1), (1, 0), (1, 1))]))
        compactness = min(area / float(hull.volume), 1.0)
    except (QhullError, ValueError):
        compactness = 1.0  # a line or a point: too few pixels to say
    share = area / max(int(clustered.sum()), 1)
    # The image edge and a large size count in full for an off-centre region (a dark strip or corner) or a
    # brighter one (skin), and less and less towards the centre for a darker one (a lesion filling the frame).
    relief = min(centre / _CENTRED, 1.0) if difference > 0 else 1.0
    contact = excluded + beyond_image * relief
    return {
        "contrast": contrast,
        "compactness": compactness,
        "centre": centre,
        "contact": max(contact - _FREE_CONTACT, 0.0) / (1.0 - _FREE_CONTACT),
        "size": max(share - _LARGE_SHARE, 0.0) / (1.0 - _LARGE_SHARE) * relief,
        "presence": min(share / _PRESENT_SHARE, 1.0),
    }


def presence_weight(contrast: float) -> float:
    """How much the size bonus counts: in full from ``_PRESENT_CONTRAST`` (scaled contrast) on, in proportion
    below. A faint blob of skin of another shade has the size of a lesion too, but does not stand out."""
    return min(contrast / _PRESENT_CONTRAST, 1.0) if _PRESENT_CONTRAST > 0 else 1.0


def score_regions(labels: npt.NDArray[np.integer], lightness: npt.NDArray[np.floating]) -> list[RegionScore]:
    """Every candidate region of a ``(h, w)`` cluster map with its score, best first."""
    clustered = labels > 0
    area_total = int(clustered.sum())
    spread = float(lightness[clustered].std()) if area_total else 0.0
    found: list[RegionScore] = []
    for members in _cluster_sets(labels, lightness):
        union = np.isin(labels, members)
        components, n = ndimage.label(union, structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        for index in np.flatnonzero(sizes >= max(_MIN_SHARE * area_total, 4)):
            if index == 0:
                continue
            region = ndimage.binary_fill_holes(components == index) & clustered
            terms = score_region(region, clustered, lightness, spread)
            score = (
                _WEIGHTS["contrast"] * terms["contrast"]
                + _WEIGHTS["compactness"] * terms["compactness"]
                - _WEIGHTS["centre"] * terms["centre"]
                - _WEIGHTS["contact"] * terms["contact"]
                - _WEIGHTS["size"] * terms["size"]
                + _WEIGHTS["presence"] * terms["presence"] * presence_weight(terms["contrast"])
            )
            found.append(RegionScore(members, region, terms, score))
    return sorted(found, key=lambda r: -r.score)


def lesion_mask(labels: npt.NDArray[np.integer], lightness: npt.NDArray[np.floating]) -> tuple[int, BoolArray]:
    """The lesion of a cluster map: the best-scoring candidate region, at the map's size.

    Maps with a side over ``_WORKING_SIDE`` are scored on a strided copy; the chosen region is then the connected
    region of the same clusters at full size that overlaps it most.

    Args:
        labels: ``(H, W)`` cluster map, 0 = not clustered (outside the field of view, excluded artefacts).
        lightness: ``(H, W)`` image lightness (CIELAB L* or the grey value).

    Returns:
        ``(cluster, mask)``: the cluster holding most of the region (0 when the map has none) and the ``(H, W)``
        mask.

    Raises:
        MedsslError: the map and the lightness differ in shape.
    """
    if labels.shape != lightness.shape:
        raise MedsslError(f"cluster map shape {labels.shape} does not match image shape {lightness.shape}")
    stride = max(1, math.ceil(max(labels.shape) / _WORKING_SIDE))
    ranked = score_regions(labels[::stride, ::stride], lightness[::stride, ::stride])
    if not ranked:
        return 0, np.zeros(labels.shape, dtype=bool)
    best = ranked[0]
    mask = best.mask
    if stride > 1:
        union = np.isin(labels, best.clusters)
        components, _ = ndimage.label(union, structure=np.ones((3, 3), dtype=bool))
        rows, cols = np.nonzero(best.mask)
        hits = components[rows * stride, cols * stride]
        hits = hits[hits > 0]
        index = int(np.bincount(hits).argmax()) if hits.size else 0
        mask = ndimage.binary_fill_holes(components == index) & (labels > 0) if index else np.zeros_like(union)
    counts = np.bincount(labels[mask].ravel(), minlength=int(labels.max()) + 1)
    counts[0] = 0
    return (int(counts.argmax()) if counts.any() else 0), mask
