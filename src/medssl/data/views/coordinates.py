"""Homogeneous maps between a view's and its input's coordinates: crop, flips, quarter turns, ``affine_grid``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def _homogeneous(diag: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``(D+1, D+1)`` matrix of ``y = diag * x + offset``."""
    d = len(diag)
    m = np.eye(d + 1)
    m[np.arange(d), np.arange(d)] = diag
    m[:d, d] = offset
    return m


def _crop_shape(out_size: tuple[int, ...], k: int, plane: tuple[int, int]) -> tuple[int, ...]:
    """Shape of the resized crop before ``k`` quarter turns that end in ``out_size``."""
    shape = list(out_size)
    if k % 2:
        shape[plane[0]], shape[plane[1]] = shape[plane[1]], shape[plane[0]]
    return tuple(shape)


@lru_cache(maxsize=256)
def _unturn(k: int, plane: tuple[int, int], out_size: tuple[int, ...]) -> np.ndarray:
    """View -> resized-crop box coordinates, ``(D+1, D+1)``, for ``k`` quarter turns (``torch.rot90`` sense)."""
    d = len(out_size)
    a, b = plane
    shape = list(_crop_shape(out_size, k, plane))
    turn = np.eye(d + 1)
    for _ in range(k):
        # torch.rot90 k=1 is flip(b) then transpose(a, b): view_a = size_b - crop_b, view_b = crop_a.
        step = np.eye(d + 1)
        step[[a, b]] = 0.0
        step[a, b], step[a, d], step[b, a] = -1.0, shape[b], 1.0
        turn = step @ turn
        shape[a], shape[b] = shape[b], shape[a]
    unturn = np.linalg.inv(turn)
    unturn.setflags(write=False)  # shared by the cache
    return unturn


def _crop_maps(start: np.ndarray, size: np.ndarray, crop_shape: np.ndarray) -> np.ndarray:
    """``(n, D+1, D+1)`` resized-crop -> input box coordinates from ``(n, D)`` starts, sizes and crop shapes."""
    n, d = start.shape
    m = np.zeros((n, d + 1, d + 1))
    m[:, np.arange(d), np.arange(d)] = size / crop_shape
    m[:, :d, d] = start
    m[:, d, d] = 1.0
    return m


def _view_maps(crop: np.ndarray, crop_shape: np.ndarray, flips: np.ndarray, unturn: np.ndarray) -> np.ndarray:
    """``(n, D+1, D+1)`` view -> input box coordinates: undo the turn ``unturn``, the flips, then the crop."""
    n, d = flips.shape
    unflip = np.zeros((n, d + 1, d + 1))
    unflip[:, np.arange(d), np.arange(d)] = np.where(flips, -1.0, 1.0)
    unflip[:, :d, d] = np.where(flips, crop_shape, 0.0)
    unflip[:, d, d] = 1.0
    return crop @ unflip @ unturn


def _grid_thetas(
    start: np.ndarray,
    size: np.ndarray,
    flips: np.ndarray,
    ks: list[int],
    input_shape: Sequence[int],
    out_size: tuple[int, ...],
    plane: tuple[int, int],
) -> np.ndarray:
    """``(n, D, D+1)`` matrices for ``affine_grid``: normalised view -> normalised input, axes reversed (x first).

    The same maps as ``ViewRecord`` uses, built for the whole batch at once.
    """
    d = len(out_size)
    crop_shape = np.asarray([_crop_shape(out_size, k, plane) for k in ks], dtype=np.float64)
    unturn = np.stack([_unturn(k, plane, out_size) for k in ks])
    edges = _view_maps(_crop_maps(start, size, crop_shape), crop_shape, flips, unturn)
    size_in, size_out = np.asarray(input_shape, dtype=np.float64), np.asarray(out_size, dtype=np.float64)
    to_norm = _homogeneous(2.0 / size_in, -np.ones(d))  # align_corners=False: n = 2 e / S - 1
    from_norm = _homogeneous(size_out / 2.0, size_out / 2.0)
    order = [*reversed(range(d)), d]
    return (to_norm @ edges @ from_norm)[:, order][:, :, order][:, :d]


def _shift(d: int, by: float) -> np.ndarray:
    return _homogeneous(np.ones(d), np.full(d, by))


def _apply(m: np.ndarray, points: Tensor | Sequence[float]) -> Tensor:
    """Apply a homogeneous matrix to points ``(..., D)``; float tensors keep their dtype, the rest becomes float64."""
    pts = points if isinstance(points, Tensor) else torch.tensor(points, dtype=torch.float64)
    dtype = pts.dtype if pts.is_floating_point() else torch.float64
    mt = torch.from_numpy(m).to(pts.device)
    d = m.shape[0] - 1
    return (pts.to(torch.float64) @ mt[:d, :d].T + mt[:d, d]).to(dtype)
