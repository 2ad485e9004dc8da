"""``ViewGenerator``: batched random views (crop, resize, flip, turn, intensity ops) with a record per view."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.data.intensity import blur, channel_gain, contrast, gamma, noise_fn, saturation
from medssl.data.views.boxes import _enforce_overlap, _rand, _sample_boxes
from medssl.data.views.coordinates import _grid_thetas
from medssl.data.views.options import IntensityOp, _is_probability, _multi_crop, _op, _scale, _size
from medssl.data.views.record import Params, ViewRecord

_PADDING_MODES = ("zeros", "border", "reflection")


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
