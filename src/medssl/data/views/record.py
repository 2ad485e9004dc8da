"""``ViewRecord``: what one view went through, mapping points and boxes between view and input; crop overlaps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from medssl.data.views.coordinates import _apply, _crop_maps, _crop_shape, _shift, _unturn, _view_maps

Params = dict[str, float | tuple[float, ...]]


@dataclass(frozen=True)
class ViewRecord:
    """What one view of one sample went through; enough to map coordinates both ways.

    Args:
        crop_start: crop box start per spatial axis (box convention, input voxels).
        crop_size: crop box size per spatial axis in input voxels; may exceed the input (padded).
        input_shape: spatial shape of the input.
        out_size: spatial shape of the view.
        flips: whether each axis of the resized crop was mirrored.
        rot90_k: quarter turns applied after the flips, ``torch.rot90(view, k, dims=rot90_plane)`` sense.
        rot90_plane: the two spatial axes of the rotation plane.
        intensity: intensity ops applied, in the order applied, name -> parameters (``"noise": {"variance"}``,
            ``"blur": {"sigma"}`` in view voxels, ``"contrast": {"factor"}``, ``"gamma": {"gamma"}``,
            ``"channel_gain": {"gain"}`` one per channel, ``"saturation": {"factor"}``).
    """

    crop_start: tuple[float, ...]
    crop_size: tuple[float, ...]
    input_shape: tuple[int, ...]
    out_size: tuple[int, ...]
    flips: tuple[bool, ...]
    rot90_k: int = 0
    rot90_plane: tuple[int, int] = (0, 1)
    intensity: dict[str, Params] = field(default_factory=dict)

    @property
    def spatial_dims(self) -> int:
        """Number of spatial axes."""
        return len(self.input_shape)

    @property
    def crop_end(self) -> tuple[float, ...]:
        """Crop box end per axis (exclusive, box convention)."""
        return tuple(s + z for s, z in zip(self.crop_start, self.crop_size, strict=True))

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """Shape of the resized crop before the rotation (``out_size`` with the plane swapped for odd ``k``)."""
        return _crop_shape(self.out_size, self.rot90_k, self.rot90_plane)

    @cached_property
    def _crop_edges(self) -> np.ndarray:
        """Resized-crop box coordinates -> input box coordinates, ``(D+1, D+1)``."""
        return _crop_maps(np.asarray([self.crop_start]), np.asarray([self.crop_size]), np.asarray([self.crop_shape]))[0]

    @cached_property
    def _edges(self) -> np.ndarray:
        """View box coordinates -> input box coordinates, ``(D+1, D+1)``: undo the turn, the flips, the crop."""
        unturn = _unturn(self.rot90_k % 4, self.rot90_plane, self.out_size)
        return _view_maps(self._crop_edges[None], np.asarray([self.crop_shape]), np.asarray([self.flips]), unturn)[0]

    @cached_property
    def _points(self) -> np.ndarray:
        """View points -> input points: box coordinates are points + 0.5."""
        d = self.spatial_dims
        return _shift(d, -0.5) @ self._edges @ _shift(d, 0.5)

    def affine(self) -> Tensor:
        """``(D+1, D+1)`` float64 homogeneous matrix taking view points to input points (voxel centres at integers)."""
        return torch.from_numpy(self._points.copy())

    def view_to_input(self, points: Tensor | Sequence[float]) -> Tensor:
        """Map view points ``(N, D)`` or ``(D,)`` to input points; exact inverse of ``input_to_view``."""
        return _apply(self._points, points)

    def input_to_view(self, points: Tensor | Sequence[float]) -> Tensor:
        """Map input points ``(N, D)`` or ``(D,)`` to where the sampling grid put them in the view."""
        return _apply(np.linalg.inv(self._points), points)

    def box_in_view(
        self, box_lo: Tensor | Sequence[float], box_hi: Tensor | Sequence[float], *, oriented: bool = True
    ) -> tuple[Tensor, Tensor]:
        """The region of an input box ``[box_lo, box_hi)`` in view box coordinates (for RoI alignment).

        Args:
            box_lo: box start in input box coordinates, ``(D,)`` or ``(N, D)``.
            box_hi: box end, same shape.
            oriented: True: in the view as returned (flipped and turned); False: in the resized crop before flips and
                turn, i.e. on a map passed through ``to_crop_frame`` (PGL's FlipAlign then CSAlign).

        Returns:
            ``(lo, hi)`` with ``lo <= hi`` per axis; parts outside ``[0, out_size)`` are not clipped.
        """
        m = np.linalg.inv(self._edges if oriented else self._crop_edges)
        lo, hi = _apply(m, box_lo), _apply(m, box_hi)
        return torch.minimum(lo, hi), torch.maximum(lo, hi)

    def to_crop_frame(self, t: Tensor) -> Tensor:
        """Undo the turn and the flips on a view-aligned map ``(..., *spatial)`` of any resolution."""
        off = t.ndim - self.spatial_dims
        a, b = self.rot90_plane
        if self.rot90_k % 4:
            t = torch.rot90(t, -self.rot90_k, dims=(off + a, off + b))
        flipped = [off + i for i, f in enumerate(self.flips) if f]
        return t.flip(flipped) if flipped else t

    def from_crop_frame(self, t: Tensor) -> Tensor:
        """Apply the flips then the turn to a crop-frame map ``(..., *spatial)`` (inverse of ``to_crop_frame``)."""
        off = t.ndim - self.spatial_dims
        flipped = [off + i for i, f in enumerate(self.flips) if f]
        t = t.flip(flipped) if flipped else t
        a, b = self.rot90_plane
        return torch.rot90(t, self.rot90_k, dims=(off + a, off + b)) if self.rot90_k % 4 else t


def overlap_box(rec1: ViewRecord, rec2: ViewRecord) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The overlap of two views' crop boxes in input box coordinates, or None when they do not overlap.

    The overlap starts at the larger start and ends at the smaller end (METHODS.md notes the PGL document's typo).
    """
    lo = tuple(max(a, b) for a, b in zip(rec1.crop_start, rec2.crop_start, strict=True))
    hi = tuple(min(a, b) for a, b in zip(rec1.crop_end, rec2.crop_end, strict=True))
    return None if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)) else (lo, hi)


def overlap_fraction(rec1: ViewRecord, rec2: ViewRecord) -> float:
    """The smaller of the two shares of each crop box covered by the other: overlap volume / larger box volume.

    This is the quantity ``min_overlap`` bounds. Boxes may extend past the input; their padded parts count.
    """
    box = overlap_box(rec1, rec2)
    if box is None:
        return 0.0
    inter = math.prod(h - lo for lo, h in zip(*box, strict=True))
    return inter / max(math.prod(rec1.crop_size), math.prod(rec2.crop_size))
