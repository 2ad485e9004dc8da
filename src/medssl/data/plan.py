"""Dataset fingerprint and the preprocessing/training plan derived from it, as nnU-Net does.

The fingerprint records spacings, shapes, label values and foreground intensity statistics of the training
cases; the plan fixes target spacing, intensity normalisation, patch size, batch size and network widths. The
plan is saved as ``plan.json`` in the run folder and reused unchanged at prediction time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.loading import LoadedCase
from medssl.errors import MedsslError

# Voxels per training batch and the first-scale width: sized so that a training step of the default U-Net takes
# about a second or less on 2 CPU cores (docs/benchmarks.md); a GPU user raises them in the config.
_BATCH_VOXELS = {2: 4 * 256 * 256, 3: 2 * 48**3}
_MAX_PATCH_VOXELS = {2: 512 * 512, 3: 128**3}
_MAX_POOLS = {2: 5, 3: 4}
_MAX_WIDTH = 320
_ANISOTROPY = 3.0


@dataclass
class Fingerprint:
    """What the training cases look like (computed once, saved beside the plan)."""

    spacings: list[list[float]]
    shapes: list[list[int]]
    physical: bool
    channels: int
    label_values: list[int]
    intensity: list[dict[str, float]]
    modality: str | None = None


def compute_fingerprint(cases: list[LoadedCase], modality: str | None, seed: int = 0) -> Fingerprint:
    """Summarise loaded training cases.

    Foreground intensities (inside any label) are sampled per case so that every case weighs the same; cases
    without labels contribute all their voxels.
    """
    if not cases:
        raise MedsslError("no cases to fingerprint")
    rng = np.random.default_rng(seed)
    channels = {c.image.shape[0] for c in cases}
    if len(channels) > 1:
        raise MedsslError(f"cases differ in their number of channels: {sorted(channels)}")
    n_channels = channels.pop()
    samples: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    values: set[int] = set()
    for case in cases:
        fg = _foreground(case)
        if case.label is not None:
            values.update(int(v) for v in np.unique(case.label))
        for ch in range(n_channels):
            vox = case.image[ch][fg] if fg is not None and fg.any() else case.image[ch].ravel()
            vox = vox[np.isfinite(vox)]
            if vox.size > 10000:
                vox = rng.choice(vox, 10000, replace=False)
            samples[ch].append(vox)
    intensity = []
    for ch in range(n_channels):
        v = np.concatenate(samples[ch]) if samples[ch] else np.zeros(1)
        intensity.append(
            {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "p00_5": float(np.percentile(v, 0.5)),
                "p99_5": float(np.percentile(v, 99.5)),
                "min": float(v.min()),
                "max": float(v.max()),
            }
        )
    return Fingerprint(
        spacings=[[float(s) for s in c.meta.spacing] for c in cases],
        shapes=[[int(s) for s in c.image.shape[1:]] for c in cases],
        physical=all(c.meta.physical for c in cases),
        channels=n_channels,
        label_values=sorted(values),
        intensity=intensity,
        modality=modality,
    )


def _foreground(case: LoadedCase) -> np.ndarray | None:
    if case.label is not None:
        return np.asarray(case.label > 0)
    if case.structures is not None:
        return np.asarray(case.structures.any(axis=0))
    return None


@dataclass
class Plan:
    """Everything needed to turn raw images into network input and predictions back into files.

    Attributes:
        spatial_dims: dimensionality of the network (2 or 3).
        data_dims: dimensionality of the images (a 2D network on volumes works slice by slice).
        slice_axis: spatial axis sliced when ``spatial_dims < data_dims``.
        in_channels: image channels.
        task: ``"labelmap"`` (one class per voxel, softmax) or ``"multilabel"`` (overlapping structures,
            sigmoid per structure).
        class_values: raw label value of each output class (labelmap; index 0 is background).
        class_names: name of each output channel.
        target_spacing: spacing the images are resampled to (None: no resampling).
        normalization: ``"ct"`` (clip to foreground percentiles, dataset z-score), ``"zscore"`` (per image),
            or ``"rgb"`` (scale 0-255 to 0-1).
        intensity: per-channel statistics used by ``"ct"``.
        patch_size: training patch and sliding-window tile.
        channels: U-Net widths per scale.
        batch_size: patches per training step.
    """

    spatial_dims: int
    data_dims: int
    in_channels: int
    task: str
    class_values: list[int]
    class_names: list[str]
    target_spacing: list[float] | None
    normalization: str
    intensity: list[dict[str, float]]
    patch_size: list[int]
    channels: list[int]
    batch_size: int
    slice_axis: int | None = None
    modality: str | None = None
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def out_channels(self) -> int:
        """Network output channels (classes incl. background, or structures)."""
        return len(self.class_names)

    @property
    def foreground_labels(self) -> dict[int, str]:
        """Raw value -> name of the labels scored at evaluation (label maps), or index+1 -> structure name."""
        if self.task == "labelmap":
            return {v: n for v, n in zip(self.class_values[1:], self.class_names[1:], strict=True)}
        return {i + 1: n for i, n in enumerate(self.class_names)}

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Read a plan written by ``save``."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise MedsslError(f"{p} is not a medssl plan file: {exc}") from None


def make_plan(
    fp: Fingerprint,
    *,
    spatial_dims: int | None = None,
    labels: dict[int, str] | None = None,
    structures: list[str] | None = None,
    patch_size: list[int] | None = None,
    channels: list[int] | None = None,
    batch_size: int | None = None,
    require_labels: bool = True,
    target_spacing: list[float] | None = None,
) -> Plan:
    """Derive a plan from a fingerprint; explicit arguments override the derived values.

    Args:
        fp: the training cases' fingerprint.
        spatial_dims: network dimensionality (default: the data's).
        labels: declared label value -> name (label maps); undeclared values found in the data are added.
        structures: structure names for multi-label data (then ``labels`` is ignored).
        patch_size, channels, batch_size: overrides.
        require_labels: refuse data whose labels hold background only; ``False`` for self-supervised
            pretraining on unlabelled images (the plan then has no classes).
        target_spacing: this spacing per data axis instead of the derived one (PNG and other images without a
            physical spacing have spacing 1: ``[2, 2]`` halves their resolution).
    """
    data_dims = len(fp.shapes[0])
    dims = spatial_dims or data_dims
    if dims not in (2, 3):
        raise MedsslError(f"--dims must be 2 or 3, not {dims}")
    if dims > data_dims:
        raise MedsslError(f"a {dims}D network needs {dims}D images, but these are {data_dims}D")
    target = _chosen_spacing(fp, target_spacing)
    spacing = np.asarray(target if target is not None else np.median(np.asarray(fp.spacings), axis=0))
    shapes = np.asarray(fp.shapes, dtype=float) * np.asarray(fp.spacings) / spacing if target else np.asarray(fp.shapes)
    median_shape = np.median(shapes, axis=0)
    slice_axis = None
    if dims < data_dims:
        slice_axis = int(np.argmax(spacing)) if spacing.max() > spacing.min() * 1.01 else data_dims - 1
        median_shape = np.delete(median_shape, slice_axis)
    values: list[int] = []
    if structures:
        task, names = "multilabel", list(structures)
    elif require_labels or set(fp.label_values) - {0} or labels:
        task = "labelmap"
        values, names = _classes(fp.label_values, labels or {})
    else:
        task, names = "labelmap", []
    n_pools, patch = _patch(median_shape, dims) if patch_size is None else _pools_for(patch_size, dims)
    widths = channels or [min(_base_width(dims) * 2**i, _MAX_WIDTH) for i in range(n_pools + 1)]
    return Plan(
        spatial_dims=dims,
        data_dims=data_dims,
        in_channels=fp.channels,
        task=task,
        class_values=values,
        class_names=names,
        target_spacing=[float(s) for s in target] if target is not None else None,
        normalization=_normalization(fp),
        intensity=fp.intensity,
        patch_size=patch,
        channels=widths,
        batch_size=batch_size or max(2, min(16, round(_BATCH_VOXELS[dims] / math.prod(patch)))),
        slice_axis=slice_axis,
        modality=fp.modality,
    )


def _base_width(dims: int) -> int:
    return 16


def _chosen_spacing(fp: Fingerprint, given: list[float] | None) -> list[float] | None:
    """The plan's target spacing: ``given`` (checked), else the derived one of physical data, else None."""
    if given is None:
        return _target_spacing(fp) if fp.physical else None
    dims = len(fp.shapes[0])
    if len(given) != dims or not all(s > 0 for s in given):
        raise MedsslError(f"target_spacing needs one positive spacing per axis of these {dims}D images, not {given}")
    return [float(s) for s in given]


def _target_spacing(fp: Fingerprint) -> list[float] | None:
    spacings = np.asarray(fp.spacings)
    target = np.median(spacings, axis=0)
    # nnU-Net's rule for anisotropic data: a much coarser axis takes its 10th percentile, not its median.
    worst = int(np.argmax(target))
    others = np.delete(target, worst)
    if others.size and target[worst] > _ANISOTROPY * others.max():
        target[worst] = max(np.percentile(spacings[:, worst], 10), others.max())
    return [float(s) for s in target]


def _normalization(fp: Fingerprint) -> str:
    if fp.modality and fp.modality.strip().upper().startswith("CT"):
        return "ct"
    if fp.channels == 3 and not fp.physical and fp.intensity and max(i["max"] for i in fp.intensity) > 1.5:
        return "rgb"
    return "zscore"


def _classes(found: list[int], declared: dict[int, str]) -> tuple[list[int], list[str]]:
    if not set(found) - {0} and len(declared) < 2:
        raise MedsslError("the training labels hold background only: nothing to learn")
    values = sorted(set(found) | set(declared) | {0})
    if set(found) <= {0, 255} and not declared:
        values = [0, 255]
    names = [
        declared.get(v, "background" if v == 0 else ("foreground" if values == [0, 255] else str(v))) for v in values
    ]
    return values, names


def _patch(median_shape: np.ndarray, dims: int) -> tuple[int, list[int]]:
    shape = np.maximum(np.asarray(median_shape, dtype=float), 8)
    while np.prod(shape) > _MAX_PATCH_VOXELS[dims]:
        shape[np.argmax(shape)] *= 0.9
    n_pools = 0
    while n_pools < _MAX_POOLS[dims] and shape.min() / 2 ** (n_pools + 1) >= 4:
        n_pools += 1
    div = 2**n_pools
    return n_pools, [int(math.ceil(s / div) * div) for s in shape]


def _pools_for(patch: list[int], dims: int) -> tuple[int, list[int]]:
    if len(patch) != dims:
        raise MedsslError(f"patch_size {patch} must have {dims} values for a {dims}D network")
    n_pools = 0
    while n_pools < _MAX_POOLS[dims] and all(
        p % 2 ** (n_pools + 1) == 0 and p // 2 ** (n_pools + 1) >= 4 for p in patch
    ):
        n_pools += 1
    return n_pools, [int(p) for p in patch]
