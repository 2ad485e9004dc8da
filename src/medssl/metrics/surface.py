"""Surface-distance metrics: Hausdorff distance (and its percentiles) and normalized surface dice.

Conventions:
- a surface voxel is a foreground voxel with at least one background face-neighbour (2*ndim neighbours); the
  image border counts as background, so foreground touching the border is surface there;
- distances run between surface-voxel centres, scaled per axis by ``spacing`` (any unit; default 1 = voxels);
- the directed distances from surface A to surface B hold, for every voxel of A, the distance to the nearest
  voxel of B (``inf`` when B is empty); the directed sets are never pooled: HD-p is the larger of the two
  directed p-th percentiles (numpy's linear interpolation; MONAI's convention), HD is HD-100;
- NSD counts surface voxels (each voxel weighs 1, no surfel areas) within ``tolerance`` of the other surface.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medssl.errors import MedsslError
from medssl.metrics.overlap import as_mask_pair

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
SpacingLike = float | Sequence[float] | None

# Margin (voxels) kept around the union bounding box. Surfaces and exact EDT distances are already invariant
# to cropping away pure background (surfaces pad with background); the margin is a cheap safety belt.
_CROP_MARGIN = 1


def surface_voxels(mask: npt.ArrayLike) -> BoolArray:
    """Surface of a binary mask: foreground voxels with a background face-neighbour.

    Args:
        mask: binary mask, shape ``(*spatial)`` with at least one axis; non-zero is foreground.

    Returns:
        Boolean array of shape ``(*spatial)``, True on surface voxels.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim == 0:
        raise MedsslError("surface extraction needs an array with at least one spatial axis")
    padded = np.pad(m, 1, mode="constant", constant_values=False)  # the border counts as background
    interior = m.copy()
    for axis in range(m.ndim):
        for shift in (-1, 1):
            window = [slice(1, n - 1) for n in padded.shape]
            window[axis] = slice(1 + shift, padded.shape[axis] - 1 + shift)
            interior &= padded[tuple(window)]
    return m & ~interior


def surface_distances(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: SpacingLike = None, *, crop: bool = True
) -> tuple[FloatArray, FloatArray]:
    """Directed surface distances in both directions.

    Args:
        pred: predicted mask, shape ``(*spatial)``.
        truth: reference mask, same shape.
        spacing: voxel size per axis (or one number for all axes); None means 1.
        crop: crop both masks to their union bounding box (plus a margin) before the distance transforms;
            it changes only the cost, never the result.

    Returns:
        ``(pred_to_truth, truth_to_pred)``: float64 arrays of shape ``(n_pred_surface,)`` and
        ``(n_truth_surface,)`` in raster order; entries are ``inf`` when the other surface is empty.
    """
    p, t = as_mask_pair(pred, truth)
    sampling = normalize_spacing(spacing, p.ndim)
    if not (p.any() or t.any()):
        return np.zeros(0), np.zeros(0)
    if crop:
        box = _union_box(p | t, _CROP_MARGIN)
        p, t = p[box], t[box]
    surface_p, surface_t = surface_voxels(p), surface_voxels(t)
    return _directed(surface_p, surface_t, sampling), _directed(surface_t, surface_p, sampling)


def hausdorff(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: SpacingLike = None, percentile: float = 100.0
) -> float | None:
    """Symmetric Hausdorff distance between the surfaces of two masks.

    Args:
        pred: predicted mask, shape ``(*spatial)``.
        truth: reference mask, same shape.
        spacing: voxel size per axis; None means 1 (result in voxels).
        percentile: 100 gives the Hausdorff distance; 95 gives HD95 = max of the two directed 95th percentiles.

    Returns:
        Distance in the unit of ``spacing``; 0.0 when both masks are empty, None when exactly one is.
    """
    return hausdorff_from_distances(*surface_distances(pred, truth, spacing), percentile=percentile)


def normalized_surface_dice(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: SpacingLike = None, tolerance: float = 1.0
) -> float:
    """Normalized surface dice (Nikolov et al. 2021) with voxel-counted surfaces.

    Args:
        pred: predicted mask, shape ``(*spatial)``.
        truth: reference mask, same shape.
        spacing: voxel size per axis; None means 1.
        tolerance: accepted surface deviation, in the unit of ``spacing`` (inclusive: ``d <= tolerance``).

    Returns:
        Fraction in [0, 1] of both surfaces lying within ``tolerance`` of the other; 1.0 when both masks are
        empty, 0.0 when exactly one is. Never None (the contract's ``float | None`` is satisfied).
    """
    return nsd_from_distances(*surface_distances(pred, truth, spacing), tolerance=tolerance)


def hausdorff_from_distances(
    pred_to_truth: FloatArray, truth_to_pred: FloatArray, percentile: float = 100.0
) -> float | None:
    """Hausdorff distance (or percentile) from the output of ``surface_distances``.

    Args:
        pred_to_truth: directed distances, shape ``(n_pred_surface,)``.
        truth_to_pred: directed distances, shape ``(n_truth_surface,)``.
        percentile: in [0, 100]; the larger of the two directed percentiles is returned.

    Returns:
        0.0 when both surfaces are empty, None when one is (infinite distances), else a float.
    """
    if not 0.0 <= percentile <= 100.0:
        raise MedsslError(f"percentile must be in [0, 100], got {percentile}")
    if pred_to_truth.size == 0 and truth_to_pred.size == 0:
        return 0.0
    directed = (pred_to_truth, truth_to_pred)
    if any(d.size == 0 or not np.isfinite(d).all() for d in directed):
        return None
    return float(max(np.percentile(d, percentile) for d in directed))


def nsd_from_distances(pred_to_truth: FloatArray, truth_to_pred: FloatArray, tolerance: float = 1.0) -> float:
    """Normalized surface dice from the output of ``surface_distances``.

    Args:
        pred_to_truth: directed distances, shape ``(n_pred_surface,)``.
        truth_to_pred: directed distances, shape ``(n_truth_surface,)``.
        tolerance: finite, >= 0, same unit as the distances.

    Returns:
        ``(#pred_to_truth <= tol + #truth_to_pred <= tol) / (n_pred_surface + n_truth_surface)``; 1.0 if both
        surfaces are empty.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise MedsslError(f"NSD tolerance must be a finite number >= 0, got {tolerance}")
    total = pred_to_truth.size + truth_to_pred.size
    if total == 0:
        return 1.0
    within = int(np.count_nonzero(pred_to_truth <= tolerance)) + int(np.count_nonzero(truth_to_pred <= tolerance))
    return within / total


def normalize_spacing(spacing: SpacingLike, ndim: int) -> tuple[float, ...]:
    """Per-axis spacing as a tuple of ``ndim`` positive floats.

    Args:
        spacing: None (all 1), one number (isotropic) or one number per axis.
        ndim: number of spatial axes.

    Returns:
        Tuple of length ``ndim``.
    """
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float)).ravel())
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise MedsslError(f"spacing {spacing} has {len(values)} values for a {ndim}D image")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise MedsslError(f"spacing must be finite and positive, got {spacing}")
    return values


def _union_box(union: BoolArray, margin: int) -> tuple[slice, ...]:
    """Bounding box of a non-empty mask, grown by ``margin`` and clipped to the array."""
    box = []
    for axis, size in enumerate(union.shape):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, size)))
    return tuple(box)


def _directed(source: BoolArray, target: BoolArray, spacing: tuple[float, ...]) -> FloatArray:
    """Distance from every ``source`` voxel to the nearest ``target`` voxel, shape ``(n_source,)``."""
    n_source = int(source.sum())
    if n_source == 0:
        return np.zeros(0)
    if not target.any():
        return np.full(n_source, np.inf)
    # Exact EDT: distance of each voxel to the nearest zero of the input, i.e. to the nearest target voxel.
    distance = ndimage.distance_transform_edt(~target, sampling=spacing)
    return np.asarray(distance[source], dtype=np.float64)
