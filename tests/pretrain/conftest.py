"""Shared settings for the pretraining tests: one thread, a fixed seed, tiny encoders."""

from __future__ import annotations

import torch
from torch import Tensor

# A 3-scale encoder: 16-pixel inputs give a 4-pixel deepest map, enough for instance norm.
SMALL = (4, 8, 16)
SIZE = 16


def images(dims: int, batch: int = 2, channels: int = 1) -> Tensor:
    """Smooth random images ``(batch, channels, *[SIZE] * dims)`` with some structure for the views to act on."""
    coarse = torch.rand(batch, channels, *[4] * dims)
    mode = {2: "bilinear", 3: "trilinear"}[dims]
    return torch.nn.functional.interpolate(coarse, size=[SIZE] * dims, mode=mode, align_corners=False)


def identity_views(x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Views that change nothing, for tests that need to know exactly what the method saw."""
    return x.clone(), x.clone()
