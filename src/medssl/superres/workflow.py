"""Training a super-resolution system (``medssl superres train``) through the project's one run workflow.

Data: every 3D image of a dataset in any layout (labels ignored; ``imagesTs`` included), one channel per model
(``channel``, default 0: a dataset with several contrasts trains one model per contrast, each with its own run).
Each volume is normalised to [0, 1] (``medssl.superres.system.normalise``: the range PSNR is computed on). The
volumes are split by VOLUME (``split_volumes``, seeded by ``split_seed``, written to ``split.json``): training
pairs come only from the training volumes, validation PSNR from the validation volumes' slices.

Slices are taken along ``axis``: ``"auto"`` (default) picks the axis of largest spacing (the thickest, through-
plane axis; ties: the last axis, axial in the usual NIfTI order), so that the slices are the acquisition planes
and the two in-plane axes, the finer ones, are those super-resolved. The rule, not the number, is stored: applying
the model resolves it again for each input.

Training patches (``SlicePatches``): a ``medssl.superres.SliceSampler`` behind the ``PatchDataset`` stream
interface the workflow reseeds and checkpoints, so that resume continues the same stream.

``dims=3`` (``--dims 3``): a 3D network trained on 3D patches of the volumes degraded along all three axes
(``medssl.superres.volumes3d``: the same split, one ``VolumePatchSampler`` per side; validation PSNR on a fixed
set of validation patches); ``axis`` is then unused and ``apply`` super-resolves every axis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medssl.data.plan import Fingerprint, Plan, compute_fingerprint
from medssl.data.sampling import PatchDataset
from medssl.engine.module import SCHEDULES
from medssl.engine.pretraining import read_images
from medssl.engine.run import Progress, RunRecipe, TrainedRun, TrainingSettings, run_training
from medssl.engine.run_folder import save_json
from medssl.errors import MedsslError
from medssl.superres.degradation import MODES, SliceSampler, make_pair, split_volumes
from medssl.superres.system import HIGH_RES, SYSTEMS, SuperResolution, build, normalise
from medssl.superres.volumes3d import ValidationPatches, VolumePatchSampler
from medssl.systems import IMAGE, System

__all__ = ["SlicePatches", "SuperResConfig", "SuperResRecipe", "ValidationSlices", "resolve_axis", "train"]

KIND = "superres"


@dataclass
class SuperResConfig:
    """Options of ``medssl superres train`` (``--set key=value``; other keys go to the system, e.g. ``width``).

    Attributes:
        system: ``seran``, ``edsr`` or ``rcan`` (``medssl list super-resolution``).
        scale: 2, 3 or 4; mode: degradation, ``bicubic`` or ``kspace``.
        dims: 2 (slices, the paper) or 3 (3D patches degraded and super-resolved along all three axes).
        axis: slicing axis, ``"auto"`` (largest spacing) or 0, 1, 2; channel: image channel trained on.
        patch_size: high-resolution training patch side (a multiple of ``scale``); batch_size: patches per step.
        max_steps, lr, weight_decay, schedule, warmup_steps, max_minutes: the optimisation (AdamW).
        val_interval: steps between validations; patience, min_delta: plateau stop on validation PSNR.
        val_fraction, test_fraction, split_seed: the split by volume.
        max_val_slices: validation slices (evenly spaced among the kept ones; 3D: patches) that bound its cost.
        min_foreground: smallest foreground share of a slice drawn (``SliceSampler``; 3D: of a patch).
        system_options: the system's own options (``SuperResolution``: width, groups, blocks, descriptors,
            input_skip).
    """

    system: str = "seran"
    scale: int = 2
    mode: str = "bicubic"
    dims: int = 2
    axis: str | int = "auto"
    channel: int = 0
    patch_size: int = 48
    batch_size: int = 16
    max_steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    max_minutes: float | None = None
    val_interval: int = 250
    patience: int | None = None
    min_delta: float = 0.0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_seed: int = 0
    max_val_slices: int = 64
    min_foreground: float = 0.05
    system_options: dict[str, Any] = field(default_factory=dict)


def resolve_axis(axis: str | int, spacing: tuple[float, ...] | list[float]) -> int:
    """The slicing axis: ``axis`` itself, or for ``"auto"`` the axis of largest spacing (ties: the last one).

    Raises:
        MedsslError: an axis that is not ``"auto"``, 0, 1 or 2.
    """
    if axis == "auto":
        values = np.asarray(spacing, dtype=float)
        thickest = np.flatnonzero(values >= values.max() * (1 - 1e-3))
        return int(thickest[-1])
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise MedsslError(f"axis must be 'auto', 0, 1 or 2, not {axis!r}")
    return int(axis)


class SlicePatches(PatchDataset):
    """Training pairs ``{"image": lr (1, p/s, p/s), "high_res": hr (1, p, p)}`` of a ``SliceSampler`` (3D patches
    of a ``VolumePatchSampler``), drawn from one generator ``rng`` as ``PatchDataset`` does (the run workflow
    reseeds it, checkpoints save its state).

    Each item draws one number from ``rng``, the sampler's epoch: its seeded permutation puts a uniformly drawn
    kept slice first, and item 0 of that epoch (the slice and its patch origin) is returned. The stream therefore
    depends on ``rng`` only, and a resumed run draws the pairs an uninterrupted one would.

    Args:
        sampler: the training volumes' ``SliceSampler``.
        samples: items per pass (steps between validations x batch size).
        seed: the stream's seed.
    """

    def __init__(self, sampler: SliceSampler | VolumePatchSampler, samples: int, seed: int = 0) -> None:
        # not PatchDataset.__init__: only its stream interface (rng, seed, reseed, samples) is shared
        self.sampler, self.samples = sampler, samples
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the stream."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self.sampler.set_epoch(int(self.rng.integers(2**62)))
        lr, hr = self.sampler[0]
        return {IMAGE: lr, HIGH_RES: hr}


class ValidationSlices(Dataset[dict[str, torch.Tensor]]):
    """Whole slices of the validation volumes, one pair per item, at most ``max_slices`` (evenly spaced among the
    kept, non-empty slices, in volume then slice order): ``{"image": (1, h, w), "high_res": (1, s h, s w)}``."""

    def __init__(self, sampler: SliceSampler, max_slices: int) -> None:
        self.sampler = sampler
        kept = sampler.slices
        picked = np.unique(np.linspace(0, len(kept) - 1, min(max_slices, len(kept))).round().astype(int))
        self.slices = [kept[i] for i in picked]

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, z = self.slices[index]
        lr, hr = make_pair(self.sampler.volumes[k][z], self.sampler.scale, self.sampler.mode)
        return {
            IMAGE: torch.from_numpy(lr.astype(np.float32))[None],
            HIGH_RES: torch.from_numpy(hr.astype(np.float32))[None],
        }


class SuperResRecipe(RunRecipe):
    """``medssl superres train``: normalised 3D volumes split by volume, slice pairs, the registered system
    ``cfg.system``; best checkpoint by validation PSNR; ``network.pt`` and ``model.json`` for ``apply``.

    Args:
        data: the dataset folder (any layout).
        cfg: the resolved options.
        seed: seed of the initialisation and the patch stream.
        skip_bad_cases: leave out the images ``medssl data check`` reports instead of refusing.
    """

    kind = KIND
    module_name = "model"

    def __init__(self, data: str | Path, cfg: SuperResConfig, *, seed: int, skip_bad_cases: bool) -> None:
        self.data, self.cfg, self.seed, self.skip_bad_cases = data, cfg, seed, skip_bad_cases
        self.monitor = "val_psnr" if cfg.val_fraction > 0 else None
        self.checkpoint_every = cfg.val_interval
        self.log_every = min(10, cfg.max_steps)

    @property
    def inputs(self) -> tuple[str | Path | None, ...]:
        return (self.data,)

    def read(self, progress: Progress) -> None:
        """Read the images, keep channel ``cfg.channel`` of each 3D volume normalised, and split them by volume."""
        self.index, loaded, self.skipped = read_images(self.data, skip_bad_cases=self.skip_bad_cases, progress=progress)
        flat = [c for c in loaded if c.image.ndim != 4]
        if flat:
            raise MedsslError(
                f"{flat[0].case_id} is a {flat[0].image.ndim - 1}D image: super-resolution trains on the slices of 3D "
                "volumes (give a folder of volumes)"
            )
        channels = min(c.image.shape[0] for c in loaded)
        if not 0 <= self.cfg.channel < channels:
            raise MedsslError(f"channel {self.cfg.channel} does not exist: the images have {channels} channel(s)")
        self.fingerprint = compute_fingerprint(loaded, self.index.modality, seed=self.seed)
        spacing = np.median([c.meta.spacing for c in loaded], axis=0)
        self.axis = resolve_axis(self.cfg.axis, tuple(spacing))
        self.volumes = {c.case_id: normalise(c.image[self.cfg.channel]) for c in loaded}
        try:
            self.split = split_volumes(
                self.volumes, self.cfg.test_fraction, self.cfg.val_fraction, seed=self.cfg.split_seed
            )
        except MedsslError as exc:
            hint = "--set val_fraction=0 trains without validation"
            raise MedsslError(f"{exc} ({len(self.volumes)} volume(s); {hint})") from None
        # the samplers check scale, patch size and that each side has non-empty slices, before the run folder
        sides = (("train", self.split.train), ("val", self.split.val))
        self.samplers = {side: self._sampler(side, ids) for side, ids in sides if ids}

    def _sampler(self, side: str, ids: tuple[str, ...]) -> SliceSampler | VolumePatchSampler:
        cfg = self.cfg
        if cfg.dims == 3:  # validation: a fixed set of patches, seeded by the split (the same for every run seed)
            val = side == "val"
            return VolumePatchSampler(
                [self.volumes[i] for i in ids],
                cfg.scale,
                patch_size=cfg.patch_size,
                mode=cfg.mode,  # type: ignore[arg-type]
                seed=cfg.split_seed if val else self.seed,
                samples=cfg.max_val_slices if val else None,
                min_foreground=cfg.min_foreground,
            )
        return SliceSampler(
            [self.volumes[i] for i in ids],
            cfg.scale,
            patch_size=cfg.patch_size,
            mode=cfg.mode,  # type: ignore[arg-type]
            axis=self.axis,
            seed=self.seed,
            min_foreground=cfg.min_foreground,
        )

    def make_plan(self) -> tuple[Plan, Fingerprint]:
        cfg = self.cfg
        plan = Plan(
            spatial_dims=cfg.dims,
            data_dims=3,
            in_channels=1,
            task="super-resolution",
            class_values=[],
            class_names=[],
            target_spacing=None,
            normalization="minmax-p0.5-p99.5-foreground",
            intensity=[],
            patch_size=[cfg.patch_size] * cfg.dims,
            channels=[],
            batch_size=cfg.batch_size,
            slice_axis=self.axis if cfg.dims == 2 else None,
            modality=self.index.modality,
            extra={"scale": cfg.scale, "mode": cfg.mode, "system": cfg.system},
        )
        return plan, self.fingerprint

    def records(self, plan: Plan) -> dict[str, Any]:
        split = {**dataclasses.asdict(self.split), "split_seed": self.cfg.split_seed}
        command = {"data": str(self.data), "seed": self.seed, "axis": self.axis, "skipped_cases": self.skipped}
        return {"config.yaml": self.cfg, "split.json": split, "command.json": command}

    def datasets(self, plan: Plan) -> tuple[PatchDataset, Dataset[Any] | None]:
        cfg = self.cfg
        samples = cfg.batch_size * max(1, min(cfg.max_steps, cfg.val_interval))
        patches = SlicePatches(self.samplers["train"], samples, seed=self.seed)
        val = self.samplers.get("val")
        if isinstance(val, VolumePatchSampler):
            return patches, ValidationPatches(val, cfg.max_val_slices)
        return patches, ValidationSlices(val, cfg.max_val_slices) if val is not None else None

    def patch_seed(self, seed: int, rank: int) -> int:
        return seed * 1000 + rank

    def build_system(self, plan: Plan) -> System:
        return build(self.cfg.system, self.cfg.scale, self.cfg.system_options, spatial_dims=self.cfg.dims)

    def finish(self, trained: TrainedRun) -> dict[str, Any]:
        """Write ``network.pt`` (the weights of the best validation PSNR; the last ones without validation) and
        ``model.json`` (what ``apply`` needs)."""
        system = trained.system
        assert isinstance(system, SuperResolution)
        if trained.best_checkpoint is not None and trained.best_checkpoint.is_file():
            state = torch.load(trained.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
            prefix = f"{self.module_name}."
            system.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        network = trained.run / "network.pt"
        torch.save({k: v.detach().cpu() for k, v in system.network.state_dict().items()}, network)
        cfg = self.cfg
        model = {
            "system": cfg.system,
            "scale": cfg.scale,
            "mode": cfg.mode,
            "dims": cfg.dims,
            "axis": cfg.axis,
            "channel": cfg.channel,
            "system_options": cfg.system_options,
            "normalisation": "clip to [p0.5 of the volume, p99.5 of its foreground], scale to [0, 1]",
            "psnr_range": [0.0, 1.0],
        }
        save_json(trained.run / "model.json", model)
        trained.files.update({"network": str(network), "model": str(trained.run / "model.json")})
        parameters = sum(p.numel() for p in system.network.parameters())
        return {
            **model,
            "parameters": parameters,
            "best_val_psnr": trained.best_score,
            "split": self._counts(),
        }

    def _counts(self) -> dict[str, int]:
        return {side: len(getattr(self.split, side)) for side in ("train", "val", "test")}


def train(
    data: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    precision: str = "32-true",
    quiet: bool = False,
    skip_bad_cases: bool = False,
    **options: Any,
) -> TrainedRun:
    """Train a super-resolution system on the 3D volumes of ``data`` into the run folder ``out``.

    Args:
        data: dataset folder in any layout (labels ignored).
        out: run folder (created; an existing one needs ``overwrite`` or ``resume``).
        seed: seed of the initialisation and the patch stream (the split has its own, ``split_seed``).
        resume: continue an interrupted run (``max_steps`` may grow).
        accelerator, precision: Lightning settings; quiet: no progress bars.
        skip_bad_cases: leave out unreadable or inconsistent images instead of refusing.
        options: ``SuperResConfig`` fields; any other key is an option of the system (``width``, ``blocks``...).

    Returns:
        The trained run (``run/network.pt``, ``model.json``, ``split.json``, ``result.json``, checkpoints).

    Raises:
        MedsslError: bad options or data, or a run folder that may not be written.
    """
    cfg = config_from(options)
    build(cfg.system, cfg.scale, cfg.system_options, cfg.dims)  # unknown system or options: refused before reading
    recipe = SuperResRecipe(data, cfg, seed=seed, skip_bad_cases=skip_bad_cases)
    settings = TrainingSettings(
        max_steps=cfg.max_steps,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule=cfg.schedule,
        warmup_steps=cfg.warmup_steps,
        seed=seed,
        max_minutes=cfg.max_minutes,
        patience=cfg.patience,
        min_delta=cfg.min_delta,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
    )
    return run_training(recipe, out, settings, resume=resume, overwrite=overwrite)


def config_from(options: dict[str, Any]) -> SuperResConfig:
    """``SuperResConfig`` from keyword options (None values: the default); unknown keys are system options.

    Raises:
        MedsslError: a value out of range (mode, schedule, steps, fractions) or a system option given twice.
    """
    names = {f.name for f in dataclasses.fields(SuperResConfig)}
    given = {k: v for k, v in options.items() if v is not None}
    extra = {k: v for k, v in given.items() if k not in names}
    cfg = SuperResConfig(**{k: v for k, v in given.items() if k in names})
    twice = sorted(set(extra) & set(cfg.system_options))
    if twice:
        raise MedsslError(f"system option(s) {', '.join(twice)} given twice")
    cfg.system_options = {**cfg.system_options, **extra}
    if cfg.dims not in (2, 3):
        raise MedsslError(f"dims must be 2 (slices) or 3 (3D patches), not {cfg.dims!r}")
    if cfg.mode not in MODES:
        raise MedsslError(f"mode must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if cfg.schedule not in SCHEDULES:
        raise MedsslError(f"schedule must be one of {', '.join(SCHEDULES)}, not {cfg.schedule!r}")
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.val_interval < 1 or cfg.max_val_slices < 1:
        raise MedsslError("max_steps, batch_size, val_interval and max_val_slices must be at least 1")
    if cfg.system not in SYSTEMS:
        from medssl import registry

        registry.get("super-resolution", cfg.system)  # the registry's error lists the known names
    resolve_axis(cfg.axis, [1.0, 1.0, 1.0])
    return cfg
