"""Batched random affine augmentation (rotation + zoom) of images and their targets, in torch.

One ``affine_grid``/``grid_sample`` call per batch: images are interpolated linearly, targets with nearest
neighbour so that labels stay labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine_matrices(
    batch: int,
    spatial_dims: int,
    *,
    max_degrees: float,
    scale_range: tuple[float, float],
    probability: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``(B, D, D+1)`` matrices for ``affine_grid``: identity, or a random rotation and isotropic zoom.

    3D rotations compose small rotations about each axis.
    """
    d = spatial_dims
    mats = torch.eye(d, d + 1).repeat(batch, 1, 1)
    apply = torch.rand(batch, generator=generator) < probability
    for b in torch.nonzero(apply).flatten().tolist():
        rot = torch.eye(d)
        planes = [(0, 1)] if d == 2 else [(0, 1), (0, 2), (1, 2)]
        for i, j in planes:
            a = math.radians(float(torch.empty(1).uniform_(-max_degrees, max_degrees, generator=generator)))
            r = torch.eye(d)
            r[i, i], r[i, j], r[j, i], r[j, j] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
            rot = rot @ r
        zoom = float(torch.empty(1).uniform_(scale_range[0], scale_range[1], generator=generator))
        mats[b, :, :d] = rot / zoom
    return mats


def apply_affine(
    image: torch.Tensor, target: torch.Tensor, matrices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``image (B, C, *spatial)`` and ``target (B, T, *spatial)`` by the same matrices."""
    grid = F.affine_grid(matrices.to(image.dtype), list(image.shape), align_corners=False)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    labels = F.grid_sample(target.to(image.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return warped, labels.to(target.dtype)
