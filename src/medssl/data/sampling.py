"""Training patches drawn from preprocessed cases held in memory, with nnU-Net's foreground oversampling
and cheap per-sample intensity augmentation (spatial augmentation runs batched in torch, see
``medssl.segment.augment``)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

_MAX_FG_COORDS = 20000


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random patches ``(C, *patch)`` and targets ``(T, *patch)`` from in-memory cases.

    Args:
        images: preprocessed ``(C, *spatial)`` float32 arrays.
        targets: ``(T, *spatial)`` uint8 arrays on the same grids.
        patch_size: patch per spatial axis of the network (2 values for a 2D network on volumes).
        samples: length of one pass (steps between validations x batch size).
        foreground_fraction: share of patches centred on a foreground voxel.
        slice_axis: axis of the volume that a 2D network slices, or None.
        flip_axes: network spatial axes mirrored with probability 0.5.
        intensity_probability: probability of a random contrast/brightness change and of Gaussian noise.
        seed: seed of the patch stream (rank-dependent under DDP).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray],
        patch_size: list[int],
        samples: int,
        *,
        foreground_fraction: float = 0.33,
        slice_axis: int | None = None,
        flip_axes: list[int] | None = None,
        intensity_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.targets = targets
        self.patch = list(patch_size)
        self.samples = samples
        self.fg_fraction = foreground_fraction
        self.slice_axis = slice_axis
        self.flip_axes = list(flip_axes or [])
        self.p_intensity = intensity_probability
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.fg = [self._foreground_coords(t) for t in targets]

    def reseed(self, seed: int) -> None:
        """Restart the patch stream (each DDP rank gets its own)."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def _foreground_coords(self, target: np.ndarray) -> np.ndarray:
        coords = np.argwhere(target.any(axis=0))
        if len(coords) > _MAX_FG_COORDS:
            coords = coords[self.rng.choice(len(coords), _MAX_FG_COORDS, replace=False)]
        return coords

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        i = int(rng.integers(len(self.images)))
        image, target, fg = self.images[i], self.targets[i], self.fg[i]
        centre = fg[rng.integers(len(fg))] if len(fg) and rng.random() < self.fg_fraction else None
        if self.slice_axis is not None:
            ax = self.slice_axis + 1
            k = int(centre[self.slice_axis]) if centre is not None else int(rng.integers(image.shape[ax]))
            image, target = np.take(image, k, axis=ax), np.take(target, k, axis=ax)
            if centre is not None:
                centre = np.delete(centre, self.slice_axis)
        x, y = self._crop(image, target, centre, rng)
        for a in self.flip_axes:
            if rng.random() < 0.5:
                x, y = np.flip(x, a + 1), np.flip(y, a + 1)
        x = self._intensity(np.ascontiguousarray(x, dtype=np.float32), rng)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))

    def _crop(
        self, image: np.ndarray, target: np.ndarray, centre: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        shape = np.asarray(image.shape[1:])
        patch = np.asarray(self.patch)
        if centre is None:
            start = np.array(
                [rng.integers(min(0, s - p), max(0, s - p) + 1) for s, p in zip(shape, patch, strict=True)]
            )
        else:
            start = centre - patch // 2 + rng.integers(-(patch // 4), patch // 4 + 1)
            start = np.clip(start, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
        lo = np.maximum(start, 0)
        hi = np.minimum(start + patch, shape)
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        pad = [(0, 0)] + [(int(a - s), int(s + p - b)) for a, b, s, p in zip(lo, hi, start, patch, strict=True)]
        x = np.pad(image[(slice(None), *region)], pad)
        y = np.pad(target[(slice(None), *region)], pad)
        return x, y

    def _intensity(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p_intensity:
            x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
        if rng.random() < self.p_intensity / 2:
            x = x + rng.normal(0.0, rng.uniform(0.0, 0.1), size=x.shape).astype(np.float32)
        return x
