"""The default two-view source of pretraining methods: ``medssl.data.views.ViewGenerator`` at the input's size.

Methods take any callable ``views(x, generator) -> (view_a, view_b)``; this one draws both views from the
recorded view generator (crop, resize, flips, and grey-value noise, blur, contrast and gamma with PGL's
ranges; colour changes only for RGB), so there is one implementation of every augmentation in the project.
Methods that need the records (PGL, PCRL) call ``ViewGenerator.pair`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from medssl.data.views import ViewGenerator

__all__ = ["RandomViews"]


@dataclass(frozen=True)
class RandomViews:
    """Two augmented views of every image of ``x (B, C, *spatial)``, each of the input's size.

    Args:
        crop_scale: range of the crop edge as a fraction of the input's edge.
        flip_prob: probability of a flip per axis.
        rgb: allow mild colour changes (dermoscopy, fundus); never for grey CT/MR/X-ray.
        min_overlap: least overlap between the two crops (fraction of the larger box), or None.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip_prob: float = 0.5
    rgb: bool = False
    min_overlap: float | None = None

    def __post_init__(self) -> None:
        # Build one generator eagerly so that bad settings fail at construction, naming the argument.
        _generator(2, (8, 8), self.crop_scale, self.flip_prob, self.rgb, self.min_overlap)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        views = _generator(x.ndim - 2, tuple(x.shape[2:]), self.crop_scale, self.flip_prob, self.rgb, self.min_overlap)
        view_a, view_b, _, _ = views.pair(x, generator)
        return view_a, view_b


@lru_cache(maxsize=16)
def _generator(
    spatial_dims: int,
    size: tuple[int, ...],
    scale: tuple[float, float],
    flip_p: float,
    rgb: bool,
    min_overlap: float | None,
) -> ViewGenerator:
    return ViewGenerator(spatial_dims, size, scale=scale, flip_p=flip_p, rgb=rgb, min_overlap=min_overlap)
