"""The 3D option of super-resolution (``medssl superres train --dims 3``): 3D patch pairs and tiled volumes.

Training pairs: each training volume is degraded ONCE, whole (``make_pair``: cropped to a multiple of ``scale``
on every axis, then ``degrade`` along all three axes), and aligned patches are cut from the pair: low-resolution
origin ``o``, high-resolution origin ``scale * o``, so a patch border carries no padding artefact of the
degradation and every low-resolution voxel is the block-centre sample of its ``scale^3`` block.

The 3D degradation is the 2D protocol generalised (``medssl.superres.degradation``):

- ``"bicubic"``: the antialiased cubic convolution kernel (``a = -0.5``, widened by ``scale``, weights
  renormalised at the border) applied separably along every axis in turn; torch has no 3D bicubic, so
  ``bicubic_downsample`` runs torch's 2D ``interpolate(mode="bicubic", antialias=True)`` over ``(H, W)`` for each
  depth, then over ``(D, H')`` (the ``H'`` axis keeps its size, where the kernel is the identity);
- ``"kspace"``: keep the centre ``1/scale`` of the 3D k-space (``kspace_truncate`` is n-dimensional).

Both put low-resolution voxel ``j`` at high-resolution index ``scale * j + (scale - 1) / 2`` along every axis and
keep a constant volume at its value.

The split by volume is unchanged (``split_volumes``): one sampler per side, built from that side's volumes only,
so no volume gives patches to two sides. Validation PSNR is measured on a fixed set of patches of the validation
volumes (``ValidationPatches``). Applying (``super_resolve_volume``) runs the network on overlapping tiles of the
low-resolution volume and keeps each tile's core, so any volume fits in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from medssl.errors import MedsslError
from medssl.superres.degradation import MODES, EpochSampler, Mode, foreground, make_pair

__all__ = ["ValidationPatches", "VolumePatchSampler", "super_resolve_volume"]

HIGH_RES = "high_res"
IMAGE = "image"


class VolumePatchSampler(EpochSampler):
    """(low-resolution patch, high-resolution patch) 3D pairs cut from whole volumes degraded in 3D.

    Volumes without a ``foreground`` voxel are never drawn. Each epoch visits the kept volumes in a seeded random
    order (``len`` items, cycling); item ``i`` cuts an aligned cube from volume ``order[i % kept]``, its origin
    drawn uniformly, again (up to 8 draws) while under ``min_foreground`` of the patch is foreground. Item ``i``
    depends on ``(seed, epoch, i)`` only; ``set_epoch`` and ``[0]`` are the interface ``SlicePatches`` uses, as
    with ``SliceSampler``. Intensities are used as given (normalise beforehand).

    Attributes:
        low, high: the degraded and the cropped high-resolution volume of each input, in input order.
        kept: positions of the volumes drawn from.
    """

    def __init__(
        self,
        volumes: Sequence[npt.ArrayLike],
        scale: int,
        *,
        patch_size: int | None = 24,
        mode: Mode = "bicubic",
        seed: int = 0,
        samples: int | None = None,
        min_foreground: float = 0.05,
        threshold: float | None = None,
    ) -> None:
        """Degrade every volume and find those with foreground.

        Args:
            volumes: 3D arrays (any sizes), each cropped to a multiple of ``scale``.
            scale: the integer factor (2, 3 or 4).
            patch_size: high-resolution cube side, a multiple of ``scale``; None: whole volumes (cropped).
            mode: ``"bicubic"`` or ``"kspace"`` (see the module docstring).
            seed: seeds the volume order and the patch origins.
            samples: items per epoch; None: the number of kept volumes.
            min_foreground: foreground share a patch should reach, in [0, 1] (best effort: 8 draws).
            threshold: foreground intensity threshold; None: per volume (see ``foreground``).

        Raises:
            MedsslError: a volume that is not 3D, bad options, no volume with foreground, or a patch larger than a
                volume.
        """
        if mode not in MODES:
            raise MedsslError(f"unknown degradation mode {mode!r}: use one of {', '.join(MODES)}")
        if not 0 <= min_foreground <= 1 or (samples is not None and samples < 1):
            raise MedsslError(f"min_foreground must be in [0, 1] and samples >= 1, got {min_foreground}, {samples}")
        if patch_size is not None and (patch_size < scale or patch_size % scale):
            raise MedsslError(f"patch_size {patch_size} must be a positive multiple of the scale {scale}")
        arrays = [np.asarray(v) for v in volumes]
        if not arrays or any(v.ndim != 3 for v in arrays):
            raise MedsslError("VolumePatchSampler takes a non-empty list of 3D volumes")
        pairs = [make_pair(v, scale, mode) for v in arrays]
        self.low = [lr.astype(np.float32, copy=False) for lr, _ in pairs]
        self.high = [hr.astype(np.float32, copy=False) for _, hr in pairs]
        self.masks = [foreground(hr, threshold) for hr in self.high]
        self.kept = [k for k, m in enumerate(self.masks) if m.any()]
        if not self.kept:
            raise MedsslError("no volume has foreground: check the data or lower the threshold")
        if patch_size is not None and any(min(self.high[k].shape) < patch_size for k in self.kept):
            raise MedsslError(f"patch_size {patch_size} exceeds a volume (cropped to a multiple of {scale}): lower it")
        self.scale, self.patch_size, self.mode, self.seed = scale, patch_size, mode, seed
        self.min_foreground = min_foreground
        self._start(len(self.kept), samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` of the current epoch: ``(lr (1, p/s, p/s, p/s), hr (1, p, p, p))`` float32 tensors."""
        k = self.kept[self.unit(index)]
        lr, hr = self.low[k], self.high[k]
        if self.patch_size is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            s, q = self.scale, self.patch_size // self.scale
            for _ in range(8):
                origin = [int(rng.integers(0, n - q + 1)) for n in lr.shape]
                box = tuple(slice(s * o, s * (o + q)) for o in origin)
                if self.masks[k][box].mean() >= max(self.min_foreground, 1e-12):
                    break
            lr, hr = lr[tuple(slice(o, o + q) for o in origin)], hr[box]
        return torch.from_numpy(np.array(lr))[None], torch.from_numpy(np.array(hr))[None]


class ValidationPatches(Dataset[dict[str, torch.Tensor]]):
    """A fixed set of 3D validation pairs ``{"image": (1, p/s, p/s, p/s), "high_res": (1, p, p, p)}``: the
    sampler's items ``0 .. count - 1`` of epoch 0 (its volumes in turn, ``count`` at most ``len(sampler)``), drawn
    once."""

    def __init__(self, sampler: VolumePatchSampler, count: int) -> None:
        sampler.set_epoch(0)
        self.pairs = [sampler[i] for i in range(min(count, len(sampler)))]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        lr, hr = self.pairs[index]
        return {IMAGE: lr, HIGH_RES: hr}


def _windows(n: int, tile: int, margin: int) -> list[tuple[int, int, int, int]]:
    """``(core_start, core_stop, window_start, window_stop)`` along one axis of length ``n``."""
    return [(a, min(a + tile, n), max(0, a - margin), min(n, a + tile + margin)) for a in range(0, n, tile)]


def super_resolve_volume(
    predict: Callable[[torch.Tensor], torch.Tensor],
    volume: npt.NDArray[np.floating],
    scale: int,
    *,
    tile: int = 32,
    margin: int = 4,
    device: torch.device | str = "cpu",
    progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
) -> npt.NDArray[np.float32]:
    """Super-resolve a normalised 3D volume along all three axes, tile by tile.

    The low-resolution volume is cut into cores of ``tile`` voxels per axis; each core is given to ``predict`` with
    ``margin`` voxels of context on every side (less at the volume's border), and only the core's
    ``scale``-times larger output is kept, so tiles meet without seams for a network whose receptive field fits in
    the margin (SERAN's attention is global within a tile, as it was within a training patch).

    Args:
        predict: ``(1, 1, d, h, w) -> (1, 1, s d, s h, s w)``, e.g. ``SuperResolution.predict``.
        volume: ``(X, Y, Z)`` normalised to [0, 1].
        scale: the network's factor.
        tile: core side in low-resolution voxels.
        margin: context on each side, in low-resolution voxels.
        device: where ``predict`` runs.
        progress: ``wrap(items, what)`` progress bar.

    Returns:
        ``(s X, s Y, s Z)`` float32.

    Raises:
        MedsslError: a volume that is not 3D, or ``tile < 1`` or ``margin < 0``.
    """
    lr = np.asarray(volume, dtype=np.float32)
    if lr.ndim != 3 or tile < 1 or margin < 0:
        raise MedsslError(f"expected a 3D volume, tile >= 1 and margin >= 0, got {lr.shape}, {tile}, {margin}")
    out = np.zeros([n * scale for n in lr.shape], dtype=np.float32)
    tiles: Iterable[Any] = list(itertools.product(*[_windows(n, tile, margin) for n in lr.shape]))
    if progress is not None:
        tiles = progress(tiles, "super-resolving tiles")
    with torch.no_grad():
        for axes in tiles:
            window = np.ascontiguousarray(lr[tuple(slice(w0, w1) for _, _, w0, w1 in axes)])
            sr = predict(torch.from_numpy(window)[None, None].to(device))[0, 0].cpu().numpy()
            core = tuple(slice((c0 - w0) * scale, (c1 - w0) * scale) for c0, c1, w0, _ in axes)
            out[tuple(slice(c0 * scale, c1 * scale) for c0, c1, _, _ in axes)] = sr[core]
    return out
