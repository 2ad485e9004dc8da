"""Training patches drawn from preprocessed cases, held in memory or read patch by patch from a store
(``medssl.data.store.StoredVolume``), with nnU-Net's foreground oversampling and cheap per-sample intensity
augmentation (spatial augmentation runs batched in torch, see
``medssl.segment.augment``), and whole cases for validation and test. Both yield dicts named as a
``medssl.systems.Batch`` (``image``, ``target``, and any extra per-case field such as ``raters``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from medssl.systems.base import IMAGE, TARGET, UNLABELLED

__all__ = ["CaseDataset", "PatchDataset", "Volume", "WithUnlabelledPatches", "unlabelled_seed"]

_MAX_FG_COORDS = 20000


class Volume(Protocol):
    """What patches are cut from: a ``(C, *spatial)`` numpy array, or anything indexed like one that returns the
    indexed voxels as an array (``medssl.data.store.StoredVolume``: a stored case that reads only the patch)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


class PatchDataset(Dataset[dict[str, torch.Tensor]]):
    """Random patches ``{"image": (C, *patch), "target": (T, *patch), <extra>: (E, *patch)}`` from in-memory cases
    or stored ones (only the patch, or the slice's patch, is indexed out of each array: a ``StoredVolume`` reads
    nothing else).

    The target and every extra field are cut, sliced and flipped exactly like the image; only the image gets the
    intensity augmentation.

    Args:
        images: preprocessed ``(C, *spatial)`` float32 arrays, or volumes indexed like them (``Volume``).
        targets: ``(T, *spatial)`` uint8 arrays on the same grids, or None: image-only patches (no ``target``
            field, no foreground to oversample: plain random crops, e.g. pretraining).
        patch_size: patch per spatial axis of the network (2 values for a 2D network on volumes).
        samples: length of one pass (steps between validations x batch size).
        extras: more fields, name -> one ``(E, *spatial)`` array per case on the same grid (e.g. ``"raters"``:
            every rater's encoded target); padded with 0 like the target.
        case_fields: non-spatial fields, name -> one array per case, given with each of its patches as is (e.g.
            ``"annotated"``: which structures the case annotates); they draw nothing from the stream.
        foreground_fraction: share of patches centred on a foreground voxel of the target.
        slice_axis: axis of the volume that a 2D network slices, or None.
        flip_axes: network spatial axes mirrored with probability 0.5.
        intensity_probability: probability of a random contrast/brightness change and of Gaussian noise.
        seed: seed of the patch stream (rank-dependent under DDP).

    Raises:
        ValueError: a field without one array per image, an array whose spatial shape is not its image's, or an
            extra field named ``image`` or ``target``.
    """

    def __init__(
        self,
        images: Sequence[Volume],
        targets: list[np.ndarray] | None,
        patch_size: list[int],
        samples: int,
        *,
        extras: Mapping[str, list[np.ndarray]] | None = None,
        case_fields: Mapping[str, list[np.ndarray]] | None = None,
        foreground_fraction: float = 0.33,
        slice_axis: int | None = None,
        flip_axes: list[int] | None = None,
        intensity_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.targets = targets
        self.extras = _fields(images, targets, extras)
        self.case_fields = _case_fields(images, self.extras, case_fields)
        self.patch = list(patch_size)
        self.samples = samples
        self.fg_fraction = foreground_fraction
        self.slice_axis = slice_axis
        self.flip_axes = list(flip_axes or [])
        self.p_intensity = intensity_probability
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # No target, no foreground: no draw of the stream goes to it (the crops of an all-zero target).
        no_fg = np.zeros((0, images[0].ndim - 1 if images else 0), np.int64)
        self.fg = [self._foreground_coords(t) for t in targets] if targets is not None else [no_fg] * len(images)

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

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # The draws of the stream, in this order (a resumed run and the recorded results depend on it): case,
        # foreground or not and which voxel, slice, crop start, flips, intensity.
        rng = self.rng
        i = int(rng.integers(len(self.images)))
        fg = self.fg[i]
        centre = fg[rng.integers(len(fg))] if len(fg) and rng.random() < self.fg_fraction else None
        volumes: dict[str, Volume] = {IMAGE: self.images[i]}
        if self.targets is not None:
            volumes[TARGET] = self.targets[i]
        volumes.update({name: per_case[i] for name, per_case in self.extras.items()})
        at = None  # (array axis, index) of the slice that a 2D network takes of a volume
        if self.slice_axis is not None:
            ax = self.slice_axis + 1
            k = int(centre[self.slice_axis]) if centre is not None else int(rng.integers(volumes[IMAGE].shape[ax]))
            at = (ax, k)
            if centre is not None:
                centre = np.delete(centre, self.slice_axis)
        arrays = self._crop(volumes, centre, rng, at)
        for a in self.flip_axes:
            if rng.random() < 0.5:
                arrays = {name: np.flip(v, a + 1) for name, v in arrays.items()}
        x = self._intensity(np.ascontiguousarray(arrays.pop(IMAGE), dtype=np.float32), rng)
        item = {IMAGE: torch.from_numpy(x)} | {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        return item | {name: torch.from_numpy(per_case[i]) for name, per_case in self.case_fields.items()}

    def _crop(
        self,
        arrays: dict[str, Volume],
        centre: np.ndarray | None,
        rng: np.random.Generator,
        at: tuple[int, int] | None = None,
    ) -> dict[str, np.ndarray]:
        """The same patch of every array (of its slice ``at``: array axis, index), zero-padded where it leaves the
        image; one indexing of each array, which is all a ``StoredVolume`` reads."""
        shape = np.asarray(arrays[IMAGE].shape[1:])
        if at is not None:
            shape = np.delete(shape, at[0] - 1)
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
        region: list[int | slice] = [slice(None), *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))]
        if at is not None:
            region.insert(at[0], at[1])
        pad = [(0, 0)] + [(int(a - s), int(s + p - b)) for a, b, s, p in zip(lo, hi, start, patch, strict=True)]
        return {name: np.pad(a[tuple(region)], pad) for name, a in arrays.items()}

    def _intensity(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p_intensity:
            x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
        if rng.random() < self.p_intensity / 2:
            x = x + rng.normal(0.0, rng.uniform(0.0, 0.1), size=x.shape).astype(np.float32)
        return x


class WithUnlabelledPatches(PatchDataset):
    """The patches of a ``PatchDataset``, each with an ``"unlabelled"`` image patch ``(C, *patch)`` of a pool of
    images without targets (semi-supervised systems: a loader's batch holds B labelled and B unlabelled patches).

    The labelled patches are exactly those of a ``PatchDataset`` of the same arguments: the unlabelled patches come
    from a second stream, seeded from the first (``unlabelled_seed``) and reseeded with it, so that a system that
    reads them trains on the same labelled patches as one that does not. They are plain random crops, sliced,
    flipped and intensity-augmented like the labelled images.

    Args:
        unlabelled: preprocessed ``(C, *spatial)`` float32 images (or ``Volume``) of the pool, at least one.
        images, targets, patch_size, samples, options: as ``PatchDataset``.

    Raises:
        ValueError: an empty pool, or as ``PatchDataset``.
    """

    def __init__(
        self,
        images: Sequence[Volume],
        targets: list[np.ndarray] | None,
        patch_size: list[int],
        samples: int,
        *,
        unlabelled: Sequence[Volume],
        **options: Any,
    ) -> None:
        if not unlabelled:
            raise ValueError("no unlabelled image to draw patches from")
        super().__init__(images, targets, patch_size, samples, **options)
        self.unlabelled = PatchDataset(
            unlabelled,
            None,
            patch_size,
            samples,
            foreground_fraction=0.0,
            slice_axis=self.slice_axis,
            flip_axes=self.flip_axes,
            intensity_probability=self.p_intensity,
            seed=unlabelled_seed(self.seed),
        )

    def reseed(self, seed: int) -> None:
        """Restart both streams (each DDP rank gets its own)."""
        super().reseed(seed)
        self.unlabelled.reseed(unlabelled_seed(seed))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return super().__getitem__(index) | {UNLABELLED: self.unlabelled[index][IMAGE]}


def unlabelled_seed(seed: int) -> int:
    """Seed of the unlabelled patch stream beside the labelled stream seeded with ``seed`` (another stream)."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


class CaseDataset(Dataset[dict[str, torch.Tensor]]):
    """Whole preprocessed cases, one per item, as ``{"image": (C, *spatial), "target": (T, *spatial), <extra>}``
    (validation and test: a loader with ``batch_size=1`` gives one case per batch).

    Args:
        images: preprocessed ``(C, *spatial)`` float32 arrays.
        targets: their ``(T, *spatial)`` targets, or None (no ``target`` field).
        extras: more fields, name -> one ``(E, *spatial)`` array per case (e.g. ``"raters"``).
        case_fields: non-spatial fields, name -> one array per case, as is (e.g. ``"annotated"``).

    Raises:
        ValueError: as ``PatchDataset``.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray] | None = None,
        *,
        extras: Mapping[str, list[np.ndarray]] | None = None,
        case_fields: Mapping[str, list[np.ndarray]] | None = None,
    ) -> None:
        self.images, self.targets = images, targets
        self.extras = _fields(images, targets, extras)
        self.case_fields = _case_fields(images, self.extras, case_fields)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {IMAGE: torch.from_numpy(self.images[i])}
        if self.targets is not None:
            item[TARGET] = torch.from_numpy(self.targets[i])
        fields = {**self.extras, **self.case_fields}
        return item | {name: torch.from_numpy(per_case[i]) for name, per_case in fields.items()}


def _fields(
    images: Sequence[Volume], targets: list[np.ndarray] | None, extras: Mapping[str, list[np.ndarray]] | None
) -> dict[str, list[np.ndarray]]:
    """The extra fields, once checked: one array per image, each on its image's grid, no name taken by the image or
    target (a mismatch would otherwise crop the wrong voxels silently)."""
    extras = dict(extras or {})
    taken = [name for name in extras if name in (IMAGE, TARGET)]
    if taken:
        raise ValueError(f"extra field {taken[0]!r} would replace the {taken[0]} field")
    named = ({TARGET: targets} if targets is not None else {}) | extras
    for name, arrays in named.items():
        if len(arrays) != len(images):
            raise ValueError(f"{len(arrays)} {name} array(s) for {len(images)} image(s)")
        for k, (image, array) in enumerate(zip(images, arrays, strict=True)):
            if array.shape[1:] != image.shape[1:]:
                raise ValueError(f"{name} {k} is {array.shape[1:]} but its image is {image.shape[1:]} (spatial)")
    return extras


def _case_fields(
    images: Sequence[Volume], extras: Mapping[str, list[np.ndarray]], fields: Mapping[str, list[np.ndarray]] | None
) -> dict[str, list[np.ndarray]]:
    """The non-spatial per-case fields, once checked: one array per image, no name taken by another field."""
    fields = dict(fields or {})
    for name, arrays in fields.items():
        if name in (IMAGE, TARGET) or name in extras:
            raise ValueError(f"case field {name!r} would replace the {name} field")
        if len(arrays) != len(images):
            raise ValueError(f"{len(arrays)} {name} array(s) for {len(images)} image(s)")
    return fields
