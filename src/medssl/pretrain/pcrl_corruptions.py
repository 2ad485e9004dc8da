"""PCRL's corruptions of the encoder input, after the public code (``pytorch/datasets/luna_pcrl_pretask.py``).

Per image, each step drawn on its own, in the code's order: Gaussian blur (p 0.5), local pixel shuffle (p 0.5), the
non-linear Bezier intensity curve (p 0: commented out in the code, offered), then painting (p 0.9) as in-painting
(p 0.2 of the painted images, the code's ``inpaint_rate = 1 - outpaint_rate``) or else out-painting. The code draws
the paint kind once per pair of views; here every image draws its own.

- Blur: a Gaussian of ``sigma ~ U(0.1, 2.0)`` pixels on every axis (the 2D chest code's SimCLR blur, applied with
  p 0.5; the 3D code always applies torchio's ``RandomBlur``, std ``U(0, 2)`` per axis: one p for both here).
- Local pixel shuffle: many small windows, edge ``U{1 .. max(2, size // 10)}`` per axis (the code's ``size // 10``;
  at least 2 so that images under 20 pixels still change), each filled with a random permutation of the original
  image's values inside it; where windows overlap the later one wins. The code draws 10,000 windows on 64x64x32
  crops, which covers each voxel about 1.9 times on average; ``shuffle_coverage`` keeps that density at any size.
- In-painting: up to 5 boxes (each one drawn with p 0.95 while the previous was), edges ``U{size // 6 .. size // 3}``,
  at least 3 pixels from the border where there is room, filled with noise.
- Out-painting: noise everywhere but up to 5 boxes (the first always, then p 0.95 each), edges about 3/7-4/7 of
  the image's, which keep the image.
- Noise: the code fills with ``U(0, 1)`` because its images lie in [0, 1]; ours are z-scored, so the noise is uniform
  with each image's (and channel's) mean and standard deviation.
- Non-linear curve: a cubic Bezier from (0, 0) to (1, 1) with two random control points, increasing or (half of the
  time) decreasing, applied to the image rescaled to [0, 1] by its own minimum and maximum, then scaled back.

Every random draw comes from the given ``torch.Generator`` (on its device), so one generator state gives one
corruption; the work is vectorised over images and windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PCRLCorruptions",
    "box_mask",
    "corrupt",
    "gaussian_blur",
    "in_paint",
    "local_pixel_shuffle",
    "matched_noise",
    "nonlinear_intensity",
    "out_paint",
    "random_blur",
    "shuffle_windows",
]

# The code's 10,000 windows on a 64x64x32 crop, edges up to (6, 6, 3): mean volume 3.5 * 3.5 * 2 = 24.5 voxels.
_CODE_COVERAGE = 10_000 * 24.5 / (64 * 64 * 32)


@dataclass(frozen=True)
class PCRLCorruptions:
    """Per-image probabilities of PCRL's input corruptions (applied in this order) and their few settings.

    Args:
        blur: probability of a Gaussian blur.
        shuffle: probability of a local pixel shuffle.
        nonlinear: probability of the non-linear Bezier intensity curve (0: off, as in the code).
        paint: probability of painting (in- or out-).
        inpaint: probability that a painted image is in-painted rather than out-painted.
        blur_sigma: range of the blur's standard deviation in pixels.
        shuffle_coverage: mean number of shuffle windows over a voxel (the code's density by default).
    """

    blur: float = 0.5
    shuffle: float = 0.5
    nonlinear: float = 0.0
    paint: float = 0.9
    inpaint: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    shuffle_coverage: float = _CODE_COVERAGE

    def __post_init__(self) -> None:
        for name in ("blur", "shuffle", "nonlinear", "paint", "inpaint"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"the {name} probability must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must be a range (low, high) with 0 < low <= high, got {self.blur_sigma}")
        if self.shuffle_coverage <= 0:
            raise ValueError(f"shuffle_coverage must be > 0, got {self.shuffle_coverage}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``corrupt(x, self, generator)``."""
        return corrupt(x, self, generator)


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``U(0, 1)`` drawn on the generator's device (the global one without a generator), moved to ``device``."""
    where = generator.device if generator is not None else None
    return torch.rand(tuple(shape), generator=generator, device=where).to(device)


def _randint(low: Tensor, high: Tensor, generator: torch.Generator | None) -> Tensor:
    """One integer uniform in ``[low, high]`` (inclusive, elementwise; ``high >= low``) per element."""
    u = _rand(low.shape, generator, low.device)
    return torch.minimum(low + (u * (high - low + 1)).long(), high)


def _select(x: Tensor, prob: float, generator: torch.Generator | None) -> Tensor:
    """Indices of the images drawn with probability ``prob`` (one draw per image, always made)."""
    return torch.nonzero(_rand((x.shape[0],), generator, x.device) < prob).flatten()


def _stats_shape(x: Tensor) -> tuple[int, ...]:
    return (*x.shape[:2], *([1] * (x.ndim - 2)))


def matched_noise(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform noise with the mean and standard deviation of each image's channel, shaped like ``x (B, C, *S)``."""
    flat = x.flatten(2)
    mean = flat.mean(2).view(_stats_shape(x))
    std = flat.std(2, correction=0).view(_stats_shape(x))
    return mean + std * math.sqrt(3.0) * (2.0 * _rand(x.shape, generator, x.device).to(x.dtype) - 1.0)


def box_mask(spatial: Sequence[int], starts: Tensor, sizes: Tensor, active: Tensor | None = None) -> Tensor:
    """The union of each image's boxes, ``(B, *spatial)`` bool.

    Args:
        spatial: image size.
        starts, sizes: ``(B, N, d)`` first voxel and edge of every box on every axis.
        active: ``(B, N)`` bool, which boxes count (default all).
    """
    inside: Tensor | None = None
    for axis, size in enumerate(spatial):
        coord = torch.arange(size, device=starts.device)
        lo, hi = starts[..., axis, None], starts[..., axis, None] + sizes[..., axis, None]
        along = (coord >= lo) & (coord < hi)  # (B, N, size)
        along = along.view(*along.shape[:2], *([1] * axis), size, *([1] * (len(spatial) - axis - 1)))
        inside = along if inside is None else inside & along
    assert inside is not None
    if active is not None:
        inside = inside & active.view(*active.shape, *([1] * len(spatial)))
    return inside.any(1)


def _boxes(
    batch: int, spatial: Sequence[int], lo: Sequence[int], hi: Sequence[int], generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Five boxes per image with edges ``U{lo .. hi}`` per axis, at least 3 voxels from the border where there is
    room (the code's margin): ``starts, sizes (B, 5, d)``."""
    shape = (batch, 5, len(spatial))
    full = torch.tensor(list(spatial)).expand(shape)
    sizes = _randint(torch.tensor(list(lo)).expand(shape), torch.tensor(list(hi)).expand(shape), generator)
    margin = ((full - sizes) // 2).clamp(max=3)
    starts = _randint(margin, full - sizes - margin, generator)
    return starts, sizes


def _continuing(batch: int, first_always: bool, generator: torch.Generator | None) -> Tensor:
    """``(B, 5)`` bool: box ``k`` is used while every draw up to it succeeded (p 0.95 each, the first one too unless
    ``first_always``)."""
    draws = _rand((batch, 5), generator, torch.device("cpu")) < 0.95
    draws[:, 0] |= first_always
    return draws.long().cumprod(1).bool()


def in_paint(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Up to 5 boxes of edges 1/6-1/3 of the image's filled with ``matched_noise``: ``(corrupted, mask (B, *S))``."""
    spatial = x.shape[2:]
    lo = [max(1, s // 6) for s in spatial]
    hi = [max(a, s // 3) for a, s in zip(lo, spatial, strict=True)]
    starts, sizes = _boxes(x.shape[0], spatial, lo, hi, generator)
    mask = box_mask(spatial, starts, sizes, _continuing(x.shape[0], False, generator)).to(x.device)
    return torch.where(mask.unsqueeze(1), matched_noise(x, generator), x), mask


def out_paint(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``matched_noise`` everywhere but up to 5 boxes (the first always) of edges about 3/7-4/7 of the image's:
    ``(corrupted, mask of the kept voxels (B, *S))``."""
    spatial = x.shape[2:]
    lo = [max(1, s - 4 * s // 7) for s in spatial]
    hi = [max(a, s - 3 * s // 7) for a, s in zip(lo, spatial, strict=True)]
    starts, sizes = _boxes(x.shape[0], spatial, lo, hi, generator)
    mask = box_mask(spatial, starts, sizes, _continuing(x.shape[0], True, generator)).to(x.device)
    return torch.where(mask.unsqueeze(1), x, matched_noise(x, generator)), mask


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of every image ``x (B, C, *S)`` with its own ``sigma (B,)`` (pixels, same on every
    axis); borders replicated; kernel radius ``ceil(3 * max sigma)``."""
    b, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(t**2) / (2.0 * sigma.to(x).view(-1, 1) ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B * C, K)
    conv = {2: F.conv2d, 3: F.conv3d}[len(spatial)]
    out = x.reshape(1, b * c, *spatial)
    for axis in range(len(spatial)):
        weight = kernel.view(b * c, 1, *[2 * radius + 1 if a == axis else 1 for a in range(len(spatial))])
        pad = [0, 0] * len(spatial)
        pad[2 * (len(spatial) - 1 - axis)] = pad[2 * (len(spatial) - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=b * c)
    return out.view_as(x)


def random_blur(x: Tensor, sigma: tuple[float, float] = (0.1, 2.0), generator: torch.Generator | None = None) -> Tensor:
    """``gaussian_blur`` with ``sigma ~ U(sigma)`` per image."""
    s = sigma[0] + (sigma[1] - sigma[0]) * _rand((x.shape[0],), generator, x.device)
    return gaussian_blur(x, s)


def shuffle_windows(x: Tensor, starts: Tensor, sizes: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill each window with a random permutation of the original image's values inside it (the same for every
    channel); where windows overlap, the later one (higher index) wins.

    Args:
        x: ``(B, C, *S)`` images.
        starts, sizes: ``(B, N, d)`` first voxel and edge (>= 1) of every window, inside the image.
        generator: source of the permutations.
    """
    b, n, d = starts.shape
    spatial, channels = x.shape[2:], x.shape[1]
    numel = math.prod(spatial)
    strides = torch.tensor([math.prod(spatial[a + 1 :]) for a in range(d)], device=x.device)
    starts, sizes = starts.reshape(b * n, d).to(x.device), sizes.reshape(b * n, d).to(x.device)
    # Global window ids b * N + w (a later window has a higher id) and the flat index of each window's first voxel.
    anchor = torch.arange(b * n, device=x.device) // n * numel + (starts * strides).sum(1)
    # Windows of one shape at a time: one table of offsets, and permutations by sorting random keys.
    shape_key = torch.zeros(b * n, dtype=torch.long, device=x.device)
    for axis in range(d):
        shape_key = shape_key * (int(sizes[:, axis].max()) + 1) + sizes[:, axis]
    by_shape = shape_key.argsort(stable=True)
    _, group_sizes = torch.unique_consecutive(shape_key[by_shape], return_counts=True)
    groups = by_shape.split(group_sizes.tolist())
    counts = [int(sizes[g[0]].prod()) for g in groups]
    total = sum(len(g) * c for g, c in zip(groups, counts, strict=True))
    dest = torch.empty(total, dtype=torch.long, device=x.device)
    source = torch.empty(total, dtype=torch.long, device=x.device)
    window = torch.empty(total, dtype=torch.int32, device=x.device)
    first = 0
    for group, count in zip(groups, counts, strict=True):
        edges = sizes[group[0]].tolist()
        grid = torch.meshgrid(*[torch.arange(e, device=x.device) for e in edges], indexing="ij")
        offsets = (torch.stack([g.flatten() for g in grid], 1) * strides).sum(1)
        perm = _rand((len(group), count), generator, x.device).argsort(1)
        base = anchor[group].unsqueeze(1)
        last = first + len(group) * count
        torch.add(base, offsets, out=dest[first:last].view(len(group), count))
        torch.add(base, offsets[perm], out=source[first:last].view(len(group), count))
        window[first:last].view(len(group), count).copy_(group.unsqueeze(1))
        first = last
    winner = torch.full((b * numel + 1,), -1, dtype=torch.int32, device=x.device)
    winner.scatter_reduce_(0, dest, window, "amax")
    dest = dest.masked_fill(winner.index_select(0, dest) != window, b * numel)  # the losers write to a spare slot
    values = x.transpose(0, 1).reshape(channels, b * numel)
    out = torch.cat((values, values[:, :1]), 1)
    out.index_copy_(1, dest, values.index_select(1, source))
    return out[:, : b * numel].view(channels, b, *spatial).transpose(0, 1).contiguous()


def local_pixel_shuffle(
    x: Tensor, generator: torch.Generator | None = None, coverage: float = _CODE_COVERAGE
) -> Tensor:
    """Shuffle many random windows of every image (see the module doc): ``(B, C, *S)`` -> same shape."""
    spatial = x.shape[2:]
    edges = [min(s, max(2, s // 10)) for s in spatial]
    mean_volume = math.prod((e + 1) / 2 for e in edges)
    n = max(1, round(coverage * math.prod(spatial) / mean_volume))
    shape = (x.shape[0], n, len(spatial))
    sizes = _randint(torch.ones(shape, dtype=torch.long), torch.tensor(edges).expand(shape), generator)
    starts = _randint(torch.zeros(shape, dtype=torch.long), torch.tensor(list(spatial)) - sizes, generator)
    return shuffle_windows(x, starts, sizes, generator)


def nonlinear_intensity(x: Tensor, generator: torch.Generator | None = None, points: int = 1000) -> Tensor:
    """The code's Bezier intensity curve per image: min-max to [0, 1], curve, back to the image's range."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    u = (flat - low) / (high - low).clamp_min(1e-12)
    control = _rand((b, 2, 2), generator, x.device).to(x.dtype)  # two control points (x, y)
    decreasing = _rand((b, 1), generator, x.device) < 0.5
    t = torch.linspace(0.0, 1.0, points, device=x.device, dtype=x.dtype)
    basis = torch.stack([3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2])  # the end points (0, 0), (1, 1) add t ** 3
    curve_x = (control[:, :, 0] @ basis + t**3).sort(1).values
    curve_y = (control[:, :, 1] @ basis + t**3).sort(1).values
    curve_y = torch.where(decreasing, curve_y.flip(1), curve_y)
    right = torch.searchsorted(curve_x, u.contiguous()).clamp(1, points - 1)
    x0, x1 = curve_x.gather(1, right - 1), curve_x.gather(1, right)
    y0, y1 = curve_y.gather(1, right - 1), curve_y.gather(1, right)
    w = ((u - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return (low + (y0 + w * (y1 - y0)) * (high - low)).view_as(x)


def corrupt(x: Tensor, probs: PCRLCorruptions | None = None, generator: torch.Generator | None = None) -> Tensor:
    """PCRL's corruption chain (see the module doc) on ``x (B, C, *S)``, each step drawn per image."""
    probs = PCRLCorruptions() if probs is None else probs
    x = x.clone()
    chosen = _select(x, probs.blur, generator)
    if len(chosen):
        x[chosen] = random_blur(x[chosen], probs.blur_sigma, generator)
    chosen = _select(x, probs.shuffle, generator)
    if len(chosen):
        x[chosen] = local_pixel_shuffle(x[chosen], generator, probs.shuffle_coverage)
    chosen = _select(x, probs.nonlinear, generator)
    if len(chosen):
        x[chosen] = nonlinear_intensity(x[chosen], generator)
    paint = _rand((x.shape[0],), generator, x.device) < probs.paint
    inpaint = _rand((x.shape[0],), generator, x.device) < probs.inpaint
    for kind, chosen in ((in_paint, paint & inpaint), (out_paint, paint & ~inpaint)):
        index = torch.nonzero(chosen).flatten()
        if len(index):
            x[index] = kind(x[index], generator)[0]
    return x
