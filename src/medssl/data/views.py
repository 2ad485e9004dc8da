"""Random views for self-supervised pretraining that record what was done to them.

One ``ViewGenerator`` serves SimCLR, BYOL, PGL, PCRL and S3-Net, in 2D and 3D: a batch ``(B, C, *spatial)`` goes
in, views ``(B, C, *out_size)`` come out together with one ``ViewRecord`` per sample and view. The records are what
prior-guided methods need: PGL aligns the feature maps of two views on the overlap of their crop boxes
(Xie et al., MICCAI 2021, https://arxiv.org/abs/2109.13243), PCRL conditions its decoder on the flips and
rotations that were applied (Zhou et al., ICCV 2021, https://arxiv.org/abs/2106.14038).

Making a view, in this order:
    1. crop a box of the input (the box may extend past the input: outside is padded, ``padding_mode``);
    2. resize the crop to the output size (linear interpolation);
    3. mirror each axis with probability ``flip_p``;
    4. turn by ``k`` quarter turns in ``rot90_plane`` (``torch.rot90`` sense);
    5. intensity ops on the view: per-channel gain and saturation (``rgb=True`` only), Gaussian noise, Gaussian blur,
       multiplicative brightness/contrast, gamma.
Steps 1-4 are one ``affine_grid`` + ``grid_sample`` call per batch.

Coordinate conventions (every record and function here):
    - Points are voxel coordinates per spatial axis, in array order, with voxel centres at integer indices: voxel
      ``i`` covers ``[i - 0.5, i + 0.5)``. ``view_to_input`` / ``input_to_view`` map points.
    - Boxes are ``[lo, hi)`` in voxel-edge coordinates, the convention of array slicing: the box ``[2, 5)`` holds
      voxels 2, 3 and 4, the whole input is ``[0, shape)``, and box coordinates are point coordinates + 0.5. Crop
      boxes, ``overlap_box`` and ``box_in_view`` all use it, which is also what ``torchvision.ops.roi_align`` expects
      with ``aligned=True`` (divide by the feature stride to get feature-map boxes).
    - Sampling follows ``align_corners=False``: the view's extent ``[0, out_size)`` maps linearly onto the crop box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.data.intensity import blur, channel_gain, contrast, gamma, noise_fn, saturation

__all__ = ["IntensityOp", "ViewGenerator", "ViewRecord", "overlap_box", "overlap_fraction"]

IntensityOp = tuple[float, float, float]
"""An intensity op's settings ``(p, low, high)``: applied with probability ``p``, parameter ~ U(low, high)."""

Params = dict[str, float | tuple[float, ...]]

_PADDING_MODES = ("zeros", "border", "reflection")
_MAX_TRIES = 20  # rejection rounds for min_overlap before the constructive fallback


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


class ViewGenerator:
    """Batched random views ``(B, C, *out_size)`` of ``(B, C, *spatial)`` inputs, with a record per view.

    Examples:
        PGL/BYOL in 3D, crops 110-140 % of the input with at least 10 % overlap, resized back to the input size:
        ``ViewGenerator(3, 64, scale=(1.1, 1.4), min_overlap=0.1)``; SimCLR-style 2D with small extra crops:
        ``ViewGenerator(2, 96, multi_crop=[(4, 48, (0.2, 0.5))])``.

    Args:
        spatial_dims: 2 or 3.
        out_size: spatial size of the views, one int for every axis or one per axis.
        scale: range of the crop edge length as a fraction of the input edge length; one factor per crop, the same
            on every axis. Values above 1 give crops larger than the input (the outside is padded).
        min_overlap: lower bound, in (0, 1], on ``overlap_fraction`` of the two views of one sample in ``pair``:
            each view's crop box shares at least this fraction of its volume with the other's. Drawn by rejection;
            after ``20`` failed rounds the second box takes the first box's size and a bounded shift.
        flip_p: probability of mirroring each spatial axis, one value or one per axis.
        rot90_p: probability of 1-3 quarter turns (uniform) in ``rot90_plane``; 0.75 makes 0/90/180/270 uniform.
        rot90_plane: the two spatial axes of the rotation plane.
        noise: ``(p, low, high)`` for additive Gaussian noise, variance ~ U(low, high); grey inputs get one noise
            field shared by all channels.
        blur: ``(p, low, high)`` for Gaussian blur, sigma ~ U(low, high) in view voxels (separable, edge-padded).
        contrast: ``(p, low, high)`` for multiplying by a factor ~ U(low, high), clipped to each channel's range
            before the op.
        gamma: ``(p, low, high)`` for ``u ** gamma``, gamma ~ U(low, high), on each channel rescaled to [0, 1] by
            its min and max, then rescaled back.
        rgb: inputs are 3-channel colour images; only then are ``channel_gain`` and ``saturation`` applied. Grey and
            multi-modal inputs (``rgb=False``) get the same op with the same parameter on every channel.
        channel_gain: ``(p, low, high)`` for one gain ~ U(low, high) per channel (``rgb=True`` only).
        saturation: ``(p, low, high)`` for blending with the grey image, factor ~ U(low, high) (``rgb=True`` only).
        multi_crop: extra views for ``views``: ``[(n_views, out_size, scale), ...]``, typically smaller crops.
        padding_mode: ``grid_sample`` padding outside the input: ``"zeros"``, ``"border"`` (edge) or ``"reflection"``.

    Defaults for the intensity ops are PGL's (and nnU-Net's) for grey images.
    """

    def __init__(
        self,
        spatial_dims: int,
        out_size: int | Sequence[int],
        *,
        scale: tuple[float, float] = (0.6, 1.0),
        min_overlap: float | None = None,
        flip_p: float | Sequence[float] = 0.5,
        rot90_p: float = 0.0,
        rot90_plane: tuple[int, int] = (0, 1),
        noise: IntensityOp = (0.1, 0.0, 0.1),
        blur: IntensityOp = (0.2, 0.5, 1.0),
        contrast: IntensityOp = (0.5, 0.75, 1.25),
        gamma: IntensityOp = (0.5, 0.7, 1.5),
        rgb: bool = False,
        channel_gain: IntensityOp = (0.5, 0.9, 1.1),
        saturation: IntensityOp = (0.5, 0.8, 1.2),
        multi_crop: Sequence[tuple[int, int | Sequence[int], tuple[float, float]]] | None = None,
        padding_mode: str = "zeros",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        d = spatial_dims
        self.spatial_dims = d
        self.out_size = _size("out_size", out_size, d)
        self.scale = _scale("scale", scale)
        if min_overlap is not None and not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1] or None, got {min_overlap!r}")
        self.min_overlap = min_overlap
        flips = [flip_p] * d if isinstance(flip_p, int | float) else list(flip_p)
        if len(flips) != d or not all(_is_probability(p) for p in flips):
            raise ValueError(f"flip_p must be a probability or {d} probabilities, got {flip_p!r}")
        self.flip_p = tuple(float(p) for p in flips)
        if not _is_probability(rot90_p):
            raise ValueError(f"rot90_p must be in [0, 1], got {rot90_p!r}")
        self.rot90_p = float(rot90_p)
        if len(rot90_plane) != 2 or rot90_plane[0] == rot90_plane[1] or not set(rot90_plane) <= set(range(d)):
            raise ValueError(f"rot90_plane must be two different axes in 0..{d - 1}, got {rot90_plane!r}")
        self.rot90_plane = (int(rot90_plane[0]), int(rot90_plane[1]))
        self.noise = _op("noise", noise, minimum=0.0)
        self.blur = _op("blur", blur, minimum=0.0, strict=True)
        self.contrast = _op("contrast", contrast, minimum=0.0, strict=True)
        self.gamma = _op("gamma", gamma, minimum=0.0, strict=True)
        self.rgb = bool(rgb)
        self.channel_gain = _op("channel_gain", channel_gain, minimum=0.0, strict=True)
        self.saturation = _op("saturation", saturation, minimum=0.0)
        self.multi_crop = _multi_crop(multi_crop, d)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, list[ViewRecord]]:
        """One view of every sample.

        Args:
            x: ``(B, C, *spatial)`` float tensor.
            generator: source of randomness (a seeded ``torch.Generator`` makes the views reproducible).

        Returns:
            views ``(B, C, *out_size)`` and one record per sample.
        """
        shape = self._check_input(x)
        start, size = _sample_boxes(shape, self.scale, x.shape[0], generator)
        return self._render(x, start, size, self.out_size, generator)

    def pair(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]:
        """Two views of every sample whose crop boxes overlap by at least ``min_overlap`` (when set).

        Args:
            x: ``(B, C, *spatial)`` float tensor.
            generator: source of randomness.

        Returns:
            ``(v1, v2, records1, records2)``, views ``(B, C, *out_size)``.
        """
        shape = self._check_input(x)
        start1, size1 = _sample_boxes(shape, self.scale, x.shape[0], generator)
        start2, size2 = _sample_boxes(shape, self.scale, x.shape[0], generator)
        if self.min_overlap is not None:
            start2, size2 = _enforce_overlap(
                (start1, size1), (start2, size2), shape, self.scale, self.min_overlap, generator
            )
        v1, rec1 = self._render(x, start1, size1, self.out_size, generator)
        v2, rec2 = self._render(x, start2, size2, self.out_size, generator)
        return v1, v2, rec1, rec2

    def views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[list[Tensor], list[list[ViewRecord]]]:
        """The two views of ``pair`` followed by every ``multi_crop`` view (not bound by ``min_overlap``).

        Args:
            x: ``(B, C, *spatial)`` float tensor.
            generator: source of randomness.

        Returns:
            a list of views ``(B, C, *size)`` and, for each, its list of per-sample records.
        """
        v1, v2, rec1, rec2 = self.pair(x, generator)
        views, records = [v1, v2], [rec1, rec2]
        shape = self._check_input(x)
        for n_views, size, scale in self.multi_crop:
            for _ in range(n_views):
                start, box = _sample_boxes(shape, scale, x.shape[0], generator)
                view, rec = self._render(x, start, box, size, generator)
                views.append(view)
                records.append(rec)
        return views, records

    def _check_input(self, x: Tensor) -> Tensor:
        """Validate ``x`` and return its spatial shape as a float64 tensor."""
        if x.ndim != self.spatial_dims + 2 or not x.is_floating_point():
            raise ValueError(f"x must be a float (B, C, *spatial) tensor with {self.spatial_dims} spatial axes")
        if self.rgb and x.shape[1] != 3:
            raise ValueError(f"x must have 3 channels when rgb=True, got {x.shape[1]}")
        return torch.tensor(x.shape[2:], dtype=torch.float64)

    def _render(
        self, x: Tensor, start: Tensor, size: Tensor, out_size: tuple[int, ...], generator: torch.Generator | None
    ) -> tuple[Tensor, list[ViewRecord]]:
        """Crop, resize, flip and turn in one resampling, then the intensity ops; build the records."""
        b, d = x.shape[0], self.spatial_dims
        flips = _rand((b, d), generator) < torch.tensor(self.flip_p, dtype=torch.float64)
        turned = _rand(b, generator) < self.rot90_p
        k = torch.where(turned, 1 + (_rand(b, generator) * 3).long().clamp(max=2), 0).tolist()
        logs: list[dict[str, Params]] = [{} for _ in range(b)]
        records = [
            ViewRecord(
                crop_start=tuple(start[i].tolist()),
                crop_size=tuple(size[i].tolist()),
                input_shape=tuple(x.shape[2:]),
                out_size=out_size,
                flips=tuple(bool(f) for f in flips[i].tolist()),
                rot90_k=k[i],
                rot90_plane=self.rot90_plane,
                intensity=logs[i],
            )
            for i in range(b)
        ]
        theta = torch.from_numpy(
            _grid_thetas(start.numpy(), size.numpy(), flips.numpy(), k, x.shape[2:], out_size, self.rot90_plane)
        ).to(x.device, x.dtype)
        grid = F.affine_grid(theta, [b, x.shape[1], *out_size], align_corners=False)
        views = F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        return self._intensity(views, logs, generator), records

    def _intensity(self, v: Tensor, logs: list[dict[str, Params]], generator: torch.Generator | None) -> Tensor:
        """Apply the intensity ops to the fresh views ``(B, C, *out)`` (partly in place); log them in ``logs``."""
        noise = noise_fn(shared=not self.rgb, generator=generator)
        steps: list[tuple[str, str, IntensityOp, Callable[[Tensor, Tensor], Tensor], bool]] = [
            ("noise", "variance", self.noise, noise, False),
            ("blur", "sigma", self.blur, blur, False),
            ("contrast", "factor", self.contrast, contrast, False),
            ("gamma", "gamma", self.gamma, gamma, False),
        ]
        if self.rgb:
            steps[:0] = [
                ("channel_gain", "gain", self.channel_gain, channel_gain, True),
                ("saturation", "factor", self.saturation, saturation, False),
            ]
        for name, key, (p, low, high), fn, per_channel in steps:
            chosen = _rand(v.shape[0], generator) < p
            values = low + (high - low) * _rand((v.shape[0], v.shape[1]) if per_channel else v.shape[0], generator)
            idx = chosen.nonzero().flatten()
            if idx.numel() == 0:
                continue
            if idx.numel() == v.shape[0]:
                v = fn(v, values)
            else:
                on_device = idx.to(v.device)
                v.index_copy_(0, on_device, fn(v.index_select(0, on_device), values[idx]))
            for i in idx.tolist():
                value = values[i]
                logs[i][name] = {key: tuple(value.tolist()) if per_channel else float(value)}
        return v


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


def _rand(shape: int | tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) float64 on the CPU, drawn from ``generator`` on its own device."""
    device = generator.device if generator is not None else torch.device("cpu")
    size = (shape,) if isinstance(shape, int) else shape
    return torch.rand(size, generator=generator, device=device, dtype=torch.float64).cpu()


def _sample_boxes(
    shape: Tensor, scale: tuple[float, float], n: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Crop boxes ``(start, size)``, each ``(n, D)``: inside the input if smaller, containing it if larger."""
    factor = scale[0] + (scale[1] - scale[0]) * _rand(n, generator)
    size = factor[:, None] * shape
    low, high = (shape - size).clamp(max=0.0), (shape - size).clamp(min=0.0)
    return low + (high - low) * _rand((n, len(shape)), generator), size


def _box_fraction(box1: tuple[Tensor, Tensor], box2: tuple[Tensor, Tensor]) -> Tensor:
    """``overlap_fraction`` for ``(n, D)`` batches of boxes ``(start, size)``."""
    (s1, z1), (s2, z2) = box1, box2
    inter = (torch.minimum(s1 + z1, s2 + z2) - torch.maximum(s1, s2)).clamp(min=0.0).prod(-1)
    return inter / torch.maximum(z1.prod(-1), z2.prod(-1))


def _enforce_overlap(
    box1: tuple[Tensor, Tensor],
    box2: tuple[Tensor, Tensor],
    shape: Tensor,
    scale: tuple[float, float],
    min_overlap: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Redraw second boxes until each overlaps its first box enough; bounded shifts of the first box as a fallback."""
    start, size = box2[0].clone(), box2[1].clone()
    for _ in range(_MAX_TRIES):
        bad = _box_fraction(box1, (start, size)) < min_overlap
        if not bad.any():
            return start, size
        start[bad], size[bad] = _sample_boxes(shape, scale, int(bad.sum()), generator)
    bad = _box_fraction(box1, (start, size)) < min_overlap
    if bad.any():
        # Same size, shift below (1 - t^(1/D)) of the size per axis: overlap >= t; clamping only shrinks the shift.
        s1, z1 = box1[0][bad], box1[1][bad]
        reach = (1.0 - min_overlap ** (1.0 / len(shape))) * 0.999
        shifted = s1 + (2.0 * _rand(tuple(s1.shape), generator) - 1.0) * reach * z1
        start[bad] = torch.minimum(torch.maximum(shifted, (shape - z1).clamp(max=0.0)), (shape - z1).clamp(min=0.0))
        size[bad] = z1
    return start, size


def _is_probability(p: object) -> bool:
    return isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0


def _size(name: str, size: int | Sequence[int], d: int) -> tuple[int, ...]:
    values = [size] * d if isinstance(size, int) else list(size)
    if len(values) != d or not all(isinstance(s, int) and s > 0 for s in values):
        raise ValueError(f"{name} must be a positive int or {d} positive ints, got {size!r}")
    return tuple(int(s) for s in values)


def _scale(name: str, scale: tuple[float, float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {scale!r}")
    return float(scale[0]), float(scale[1])


def _op(name: str, op: IntensityOp, *, minimum: float, strict: bool = False) -> IntensityOp:
    """Validate ``(p, low, high)``: p in [0, 1], minimum <= low <= high (``<`` for strict)."""
    ok = len(op) == 3 and _is_probability(op[0]) and op[1] <= op[2]
    ok = ok and (op[1] > minimum if strict else op[1] >= minimum)
    if not ok:
        bound = "<" if strict else "<="
        raise ValueError(
            f"{name} must be (p, low, high) with p in [0, 1] and {minimum} {bound} low <= high, got {op!r}"
        )
    return float(op[0]), float(op[1]), float(op[2])


def _multi_crop(
    spec: Sequence[tuple[int, int | Sequence[int], tuple[float, float]]] | None, d: int
) -> list[tuple[int, tuple[int, ...], tuple[float, float]]]:
    out = []
    for entry in spec or []:
        if len(entry) != 3 or not isinstance(entry[0], int) or entry[0] < 1:
            raise ValueError(f"multi_crop entries must be (n_views >= 1, out_size, scale), got {entry!r}")
        out.append((entry[0], _size("multi_crop", entry[1], d), _scale("multi_crop", entry[2])))
    return out
