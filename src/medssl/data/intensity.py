"""Per-sample intensity operations on batches ``(n, C, *spatial)``, shared by the view generators.

Each takes one parameter per sample (shape ``(n,)`` or ``(n, C)``) so that a whole batch is transformed in one
call with different random parameters; the view generator records the parameters it drew.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

_EPS = 1e-8
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for the grey level of an RGB image


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``(n,)`` or ``(n, C)`` values shaped to broadcast over ``like`` ``(n, C, *spatial)``."""
    v = values.to(like.device, like.dtype)
    return v.reshape(*v.shape, *([1] * (like.ndim - v.ndim)))


def channel_range(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample, per-channel min and max of ``(n, C, *spatial)``, shaped ``(n, C, 1, ...)``."""
    lo, hi = x.flatten(2).aminmax(dim=-1)
    shape = (*x.shape[:2], *([1] * (x.ndim - 2)))
    return lo.reshape(shape), hi.reshape(shape)


def noise_fn(*, shared: bool, generator: torch.Generator | None) -> Callable[[Tensor, Tensor], Tensor]:
    def add_noise(x: Tensor, variance: Tensor) -> Tensor:
        shape = (x.shape[0], 1 if shared else x.shape[1], *x.shape[2:])
        device = generator.device if generator is not None else x.device
        field_ = torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(x.device, x.dtype)
        return x + field_ * per_sample(variance.sqrt(), x)

    return add_noise


def blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur of ``(n, C, *spatial)`` with one sigma per sample; edges replicated."""
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp(min=_EPS)) ** 2)
    weights = weights / weights.sum(1, keepdim=True)
    taps = [per_sample(weights[:, j], x) for j in range(2 * radius + 1)]
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        padded = x.index_select(axis, torch.arange(-radius, n + radius, device=x.device).clamp(0, n - 1))
        out = torch.zeros_like(x)
        for j, tap in enumerate(taps):
            out.addcmul_(padded.narrow(axis, j, n), tap)
        x = out
    return x


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    lo, hi = channel_range(x)
    return torch.minimum(torch.maximum(x * per_sample(factor, x), lo), hi)


def gamma(x: Tensor, gamma: Tensor) -> Tensor:
    lo, hi = channel_range(x)
    span = (hi - lo).clamp(min=_EPS)
    return ((x - lo) / span).clamp(0.0, 1.0).pow(per_sample(gamma, x)) * span + lo


def channel_gain(x: Tensor, gain: Tensor) -> Tensor:
    return x * per_sample(gain, x)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).reshape(1, 3, *([1] * (x.ndim - 2)))
    grey = (x * luma).sum(1, keepdim=True)
    return grey + per_sample(factor, x) * (x - grey)
