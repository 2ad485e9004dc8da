"""Low-resolution inputs made from high-resolution MR images: bicubic downsampling and k-space truncation.

Images are numpy arrays whose every axis is spatial: a 2D slice ``(H, W)`` or, as an option, a 3D patch
``(D, H, W)``. Both modes reduce each axis by the integer ``scale`` after the image is cropped to a multiple of it
(the trailing rows/columns are dropped, so voxel 0 stays where it was).

Geometry, shared by both modes: low-resolution pixel ``j`` covers high-resolution pixels ``s*j .. s*j + s - 1``;
its centre lies at high-resolution index ``s*j + (s - 1) / 2`` (the same field of view with ``s`` times larger
voxels, as a scanner acquiring at the lower resolution). ``torch.nn.functional.interpolate`` with
``align_corners=False`` uses the same convention, so upsampling the output back lands on the high-resolution grid.

- ``"bicubic"`` (the SR literature's protocol, MATLAB ``imresize``): the cubic convolution kernel with ``a = -0.5``
  widened by ``scale`` (antialiased), i.e. torch's ``interpolate(mode="bicubic", antialias=True)``; weights are
  renormalised at the border, so a constant image stays that constant. 3D: the same separable 1D kernel along the
  depth axis too (torch has no 3D bicubic: a 2D pass over ``(H, W)`` per depth, then one over ``(D, H)`` whose
  ``H`` axis is unchanged; at an unchanged size the kernel is the identity). Values are not clipped (bicubic
  overshoots a little at edges; clipping would hide it).
- ``"kspace"``: keep the centre ``1/scale`` of k-space along every axis (a lower-resolution acquisition of the
  same field of view) after a half-pixel phase shift that puts the samples at the block centres above; the
  amplitude is rescaled so that a constant stays that constant. Frequencies below the new Nyquist limit survive
  exactly, higher ones are removed (no aliasing, but Gibbs ringing at sharp edges, as in real MR).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medssl.data.split import make_split
from medssl.errors import MedsslError

__all__ = [
    "MODES",
    "Mode",
    "SliceSampler",
    "VolumeSplit",
    "bicubic_downsample",
    "crop_to_multiple",
    "degrade",
    "foreground",
    "kspace_truncate",
    "make_pair",
    "split_volumes",
]

Mode = Literal["bicubic", "kspace"]
MODES: tuple[str, ...] = ("bicubic", "kspace")

Array = npt.NDArray[np.floating]


def _check(image: npt.ArrayLike, scale: int) -> Array:
    """Return ``image`` as a float array after checking its dimensionality and ``scale``."""
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise MedsslError(f"expected a 2D slice or a 3D patch, got an array of shape {array.shape}")
    if isinstance(scale, bool) or not isinstance(scale, int | np.integer) or scale < 2:
        raise MedsslError(f"scale must be an integer >= 2 (2, 3 or 4 in the SR protocol), got {scale!r}")
    if min(array.shape) < scale:
        raise MedsslError(f"image of shape {array.shape} is smaller than the scale {scale}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return array


def crop_to_multiple(image: npt.ArrayLike, scale: int) -> Array:
    """Drop the trailing rows/columns (and slices) so that every axis is a multiple of ``scale``.

    Args:
        image: ``(H, W)`` or ``(D, H, W)``.
        scale: the integer downsampling factor.

    Returns:
        ``image[: H - H % scale, : W - W % scale]`` (same for ``D``), float; voxel 0 is unmoved.

    Raises:
        MedsslError: not 2D/3D, a scale that is not an integer >= 2, or an axis shorter than ``scale``.
    """
    array = _check(image, scale)
    return array[tuple(slice(0, n - n % scale) for n in array.shape)]


def _bicubic_2d(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, H, W) -> (N, *size)``: torch's antialiased bicubic (cubic kernel ``a = -0.5``), float64."""
    return F.interpolate(image[:, None], size=size, mode="bicubic", align_corners=False, antialias=True)[:, 0]


def bicubic_downsample(image: npt.ArrayLike, scale: int) -> Array:
    """Antialiased bicubic downsampling of every axis by ``scale`` (see the module docstring).

    Args:
        image: ``(H, W)`` or ``(D, H, W)``, each axis a multiple of ``scale`` (see ``crop_to_multiple``).
        scale: the integer factor.

    Returns:
        ``(H / scale, W / scale)`` (or with ``D / scale``), the input's float dtype (float32 for integer input).

    Raises:
        MedsslError: an axis that is not a multiple of ``scale``, or the checks of ``crop_to_multiple``.
    """
    array = _check(image, scale)
    if any(n % scale for n in array.shape):
        raise MedsslError(f"image shape {array.shape} is not a multiple of the scale {scale}: crop it first")
    # float64 for the arithmetic: the result should not depend on the input's precision
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
    if t.ndim == 2:
        out = _bicubic_2d(t[None], (t.shape[0] // scale, t.shape[1] // scale))[0]
    else:
        d, h, w = t.shape
        inplane = _bicubic_2d(t, (h // scale, w // scale))  # (D, h', w'): depth as the batch
        # depth pass: (w', D, h') -> (w', D / s, h'); the h' axis keeps its size, where the kernel is the identity
        out = _bicubic_2d(inplane.permute(2, 0, 1), (d // scale, h // scale)).permute(1, 2, 0)
    return out.numpy().astype(array.dtype, copy=False)


def kspace_truncate(image: npt.ArrayLike, scale: int) -> Array:
    """Keep the centre ``1/scale`` of k-space along every axis (see the module docstring).

    Args:
        image: ``(H, W)`` or ``(D, H, W)``, real, each axis a multiple of ``scale``.
        scale: the integer factor.

    Returns:
        The real low-resolution image ``(H / scale, W / scale)`` (or 3D), the input's float dtype; pixel ``j`` sits
        at high-resolution index ``scale * j + (scale - 1) / 2`` and a constant image keeps its value.

    Raises:
        MedsslError: an axis that is not a multiple of ``scale``, or the checks of ``crop_to_multiple``.
    """
    array = _check(image, scale)
    if any(n % scale for n in array.shape):
        raise MedsslError(f"image shape {array.shape} is not a multiple of the scale {scale}: crop it first")
    spectrum = np.fft.fftn(array.astype(np.float64))
    shift = (scale - 1) / 2
    for axis, n in enumerate(array.shape):
        # x[i + shift] <-> X[k] exp(2 pi i k shift / n): moves the kept samples to the block centres
        phase = np.exp(2j * np.pi * np.fft.fftfreq(n) * shift)
        spectrum = spectrum * phase.reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    centred = np.fft.fftshift(spectrum)
    keep = tuple(slice(n // 2 - (n // scale) // 2, n // 2 - (n // scale) // 2 + n // scale) for n in array.shape)
    low = np.fft.ifftn(np.fft.ifftshift(centred[keep]))
    # ifftn divides by the low-resolution count, fftn summed over the high-resolution one
    out = low.real * (np.prod([n // scale for n in array.shape]) / np.prod(array.shape))
    return out.astype(array.dtype, copy=False)


def degrade(image: npt.ArrayLike, scale: int, mode: Mode = "bicubic") -> Array:
    """Low-resolution version of ``image`` by ``mode`` (``"bicubic"`` or ``"kspace"``).

    Args:
        image: ``(H, W)`` or ``(D, H, W)``, each axis a multiple of ``scale``.
        scale: the integer factor.
        mode: ``"bicubic"`` or ``"kspace"``.

    Returns:
        Every axis divided by ``scale``.

    Raises:
        MedsslError: an unknown mode, or the checks of the chosen function.
    """
    if mode == "bicubic":
        return bicubic_downsample(image, scale)
    if mode == "kspace":
        return kspace_truncate(image, scale)
    raise MedsslError(f"unknown degradation mode {mode!r}: use one of {', '.join(MODES)}")


def make_pair(hr: npt.ArrayLike, scale: int, mode: Mode = "bicubic") -> tuple[Array, Array]:
    """A training or test pair: the cropped high-resolution image and its low-resolution version.

    Args:
        hr: ``(H, W)`` or ``(D, H, W)``, any size (cropped to a multiple of ``scale`` first).
        scale: the integer factor.
        mode: ``"bicubic"`` or ``"kspace"``.

    Returns:
        ``(lr, hr_cropped)``, with ``lr.shape == tuple(n // scale for n in hr_cropped.shape)``.

    Raises:
        MedsslError: see ``crop_to_multiple`` and ``degrade``.
    """
    hr_cropped = crop_to_multiple(hr, scale)
    return degrade(hr_cropped, scale, mode), hr_cropped


@dataclass(frozen=True)
class VolumeSplit:
    """Volume ids on each side of a split; no id is on two sides."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def split_volumes(ids: Iterable[str], test_fraction: float, val_fraction: float = 0.0, seed: int = 0) -> VolumeSplit:
    """A fixed, seeded train / validation / test split of whole volumes (never of slices).

    The same rule as the segmentation split (``medssl.data.split.make_split`` with ``split_seed=seed``): the ids
    are deduplicated and sorted, then permuted with ``seed``, so the split depends on the set of ids and the seed
    only. Slices are drawn afterwards from each side's volumes, so no volume gives slices to two sides. Pass one
    id per subject when a subject has several volumes (contrasts), so that they stay on one side.

    Args:
        ids: volume (or subject) ids; repeats count once.
        test_fraction: share of volumes held out for testing, in [0, 1).
        val_fraction: share held out for validation, in [0, 1); at least one volume when above 0.
        seed: the permutation's seed.

    Returns:
        A ``VolumeSplit`` whose sides are sorted tuples.

    Raises:
        MedsslError: fractions out of range or too few volumes for a non-empty training side.
    """
    # deduplicated: a repeated id would otherwise be permuted to two sides
    split = make_split(sorted(set(ids)), test_fraction=test_fraction, val_fraction=val_fraction, split_seed=seed)
    return VolumeSplit(train=tuple(split["train"]), val=tuple(split["val"]), test=tuple(split["test"]))


def foreground(image: npt.ArrayLike, threshold: float | None = None) -> npt.NDArray[np.bool_]:
    """Voxels above ``threshold``: a crude head mask for skipping empty slices and for masked metrics.

    Args:
        image: any shape.
        threshold: intensity above which a voxel is foreground; None: 5 % of the way from the image's minimum to
            its maximum (above the background noise of a magnitude MR image, below tissue).

    Returns:
        A boolean array of ``image``'s shape (all False for a constant image).
    """
    array = np.asarray(image, dtype=np.float64)
    if threshold is None:
        low, high = float(array.min()), float(array.max())
        if high <= low:
            return np.zeros(array.shape, dtype=bool)
        threshold = low + 0.05 * (high - low)
    return array > threshold


class EpochSampler(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """What the slice and the 3D patch samplers share: ``samples`` items per epoch that visit ``units`` (kept slices
    or volumes) in a seeded permutation per epoch (``order``), cycling when there are more items than units; item
    ``i`` depends on ``(seed, epoch, i)`` only, so DataLoader workers agree."""

    seed: int
    samples: int

    def _start(self, units: int, samples: int | None) -> None:
        self.units = units
        self.samples = units if samples is None else samples
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the visiting order of ``epoch`` (a seeded permutation of the units)."""
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(self.units)

    def __len__(self) -> int:
        """Items per epoch."""
        return self.samples

    def unit(self, index: int) -> int:
        """The unit item ``index`` of the current epoch visits (IndexError outside the epoch)."""
        if not 0 <= index < self.samples:
            raise IndexError(index)
        return int(self.order[index % self.units])


class SliceSampler(EpochSampler):
    """(low-resolution patch, high-resolution patch) pairs made on the fly from 2D slices of 3D volumes.

    Slices are taken along ``axis``; a slice counts as empty, and is never drawn, when under ``min_foreground`` of
    its pixels are ``foreground`` (threshold from its whole volume). Each epoch visits the kept slices in a seeded
    random order (``len`` items, cycling when ``samples`` exceeds their number). An item degrades its whole slice
    (cropped to a multiple of ``scale``) and cuts aligned patches: LR origin ``o``, HR origin ``scale * o``, so
    the patch border carries no padding artefact. The patch origin is drawn uniformly, again (up to 8 draws) while
    the patch holds no foreground. Item ``i`` depends on ``(seed, epoch, i)`` only, so DataLoader workers agree;
    call ``set_epoch`` before each epoch's iterator is made. Intensities are used as given (normalise beforehand).

    Attributes:
        slices: the kept ``(volume position, slice index)`` pairs, in volume then slice order.
    """

    def __init__(
        self,
        volumes: Sequence[npt.ArrayLike],
        scale: int,
        *,
        patch_size: int | None = 48,
        mode: Mode = "bicubic",
        axis: int = 0,
        seed: int = 0,
        samples: int | None = None,
        min_foreground: float = 0.05,
        threshold: float | None = None,
    ) -> None:
        """Find the non-empty slices.

        Args:
            volumes: 3D arrays (any sizes).
            scale: the integer factor (2, 3 or 4).
            patch_size: high-resolution patch side, a multiple of ``scale``; None: whole slices (cropped to a
                multiple of ``scale``; batches then need slices of one size).
            mode: ``"bicubic"`` or ``"kspace"`` (see ``degrade``).
            axis: the axis of the volumes along which slices are taken (0, 1 or 2).
            seed: seeds the slice order and the patch origins.
            samples: items per epoch; None: the number of kept slices.
            min_foreground: smallest foreground share of a kept slice, in [0, 1]; at 0 a slice still needs one
                foreground pixel.
            threshold: foreground intensity threshold for every volume; None: per volume (see ``foreground``).

        Raises:
            MedsslError: a volume that is not 3D, bad options, no non-empty slice, or a patch larger than a slice.
        """
        if mode not in MODES:
            raise MedsslError(f"unknown degradation mode {mode!r}: use one of {', '.join(MODES)}")
        if axis not in (0, 1, 2) or not 0 <= min_foreground <= 1:
            raise MedsslError(f"axis must be 0, 1 or 2 and min_foreground in [0, 1], got {axis!r}, {min_foreground!r}")
        if patch_size is not None and (patch_size < scale or patch_size % scale):
            raise MedsslError(f"patch_size {patch_size} must be a positive multiple of the scale {scale}")
        arrays = [np.asarray(v) for v in volumes]
        if not arrays or any(v.ndim != 3 for v in arrays):
            raise MedsslError("SliceSampler takes a non-empty list of 3D volumes; pass 2D images to make_pair")
        self.volumes = [np.moveaxis(v, axis, 0) for v in arrays]
        _check(self.volumes[0][0], scale)  # the scale, before any item is drawn
        if samples is not None and samples < 1:
            raise MedsslError(f"samples must be >= 1 (or None for one per kept slice), got {samples}")
        self.scale, self.patch_size, self.mode, self.seed = scale, patch_size, mode, seed
        self.masks = [foreground(v, threshold) for v in self.volumes]
        self.slices = [
            (k, z)
            for k, m in enumerate(self.masks)
            for z in range(m.shape[0])
            if m[z].mean() >= max(min_foreground, 1e-12)
        ]
        if not self.slices:
            raise MedsslError("no non-empty slice in the volumes: check the data or lower min_foreground / threshold")
        if patch_size is not None and any(min(v.shape[1:]) < patch_size for v in self.volumes):
            raise MedsslError(f"patch_size {patch_size} exceeds a slice of the volumes: lower it")
        self._start(len(self.slices), samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` of the current epoch: ``(lr (1, p / s, p / s), hr (1, p, p))`` float32 tensors."""
        k, z = self.slices[self.unit(index)]
        lr, hr = make_pair(self.volumes[k][z], self.scale, self.mode)
        if self.patch_size is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            mask = self.masks[k][z]
            p, s = self.patch_size, self.scale
            for _ in range(8):
                oy, ox = (int(rng.integers(0, n - p // s + 1)) for n in lr.shape)
                if mask[s * oy : s * oy + p, s * ox : s * ox + p].any():
                    break
            lr = lr[oy : oy + p // s, ox : ox + p // s]
            hr = hr[s * oy : s * oy + p, s * ox : s * ox + p]
        return (
            torch.from_numpy(np.array(lr, dtype=np.float32))[None],
            torch.from_numpy(np.array(hr, dtype=np.float32))[None],
        )
