"""Drawing crop boxes, and second boxes that overlap the first enough (``min_overlap``)."""

from __future__ import annotations

import torch
from torch import Tensor

_MAX_TRIES = 20  # rejection rounds for min_overlap before the constructive fallback


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
