"""The self-supervised pretraining workflow behind ``medssl pretrain``: plan, preprocess, train any registered
``medssl.pretrain.PretrainMethod`` on random patches with Lightning, and export its encoder for fine-tuning.

Labels in the dataset are ignored. The exported ``RUN/encoder.pt`` has the plan's widths (``channels``):
``medssl finetune --init RUN/encoder.pt`` only loads it into a U-Net of the same widths, so pass the same
``channels`` to both commands (``finetune`` refuses an encoder of other widths).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medssl.config import PretrainConfig
from medssl.data.layouts import DatasetIndex, discover
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_cases, print_skipped
from medssl.data.plan import Fingerprint, Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import preprocess_image
from medssl.data.sampling import PatchDataset, Volume
from medssl.data.store import Store, StoredVolume, is_store, open_store
from medssl.engine.module import SCHEDULES
from medssl.engine.run import Progress, RunRecipe, TrainedRun, TrainingSettings, run_training
from medssl.engine.run_folder import is_main_process
from medssl.errors import MedsslError
from medssl.networks.weights import save_encoder
from medssl.pretrain import PretrainMethod, create, get
from medssl.systems import System

__all__ = ["SCHEDULES", "PretrainRecipe", "PretrainResult", "read_images", "run_pretrain"]


@dataclass
class PretrainResult:
    """Where a pretraining run put its outputs."""

    run_dir: Path
    encoder: Path | None
    last_checkpoint: Path
    global_step: int
    final_loss: float | None
    files: dict[str, str] = field(default_factory=dict)
    train_seconds: float = 0.0


def run_pretrain(
    data: str | Path,
    out: str | Path,
    cfg: PretrainConfig,
    *,
    dims: int | None = None,
    seed: int = 0,
    cases: Collection[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    precision: str = "32-true",
    quiet: bool = False,
    skip_bad_cases: bool = False,
    devices: int | str = 1,
    num_nodes: int = 1,
) -> PretrainResult:
    """Pretrain an encoder with the registered self-supervised method ``cfg.method`` on every image of ``data``.

    Args:
        data: dataset folder in any supported layout, labelled or not (labels are ignored; test images are used).
        out: run folder (created; an existing one needs ``overwrite`` or ``resume``).
        cfg: resolved settings, the method's own options in ``cfg.method_options`` (``medssl.api.pretrain``
            checks them); ``None`` sizes come from the plan.
        dims: 2 or 3 (default: the data's).
        seed: seed of the initialisation, the views and the patch stream.
        cases: pretrain on these case ids only (e.g. the training cases of a split, keeping test images out).
        resume: continue an interrupted run from ``checkpoints/last.ckpt`` (with the run's ``plan.json``).
        accelerator, precision, devices, num_nodes: Lightning Trainer settings (DDP when more than one process:
            each process draws its own patches and views, see ``docs/distributed.md``).
        quiet: no progress bars.
        skip_bad_cases: leave out the images ``medssl data check`` would report (unreadable, NaN/inf, channel
            files or dimensionality that disagree; listed, and recorded in ``command.json``) instead of refusing.

    Returns:
        The run folder, with ``plan.json``, ``config.yaml``, ``checkpoints/last.ckpt``, ``logs/``,
        ``training_curves.png``, ``result.json`` and ``encoder.pt`` (for ``medssl finetune --init``).
    """
    get(cfg.method)  # unknown name: one error listing the known ones, before any work
    if cfg.max_steps < 1:
        raise MedsslError(f"max_steps must be at least 1, not {cfg.max_steps}")
    if cfg.schedule not in SCHEDULES:
        raise MedsslError(f"schedule must be one of {', '.join(SCHEDULES)}, not {cfg.schedule!r}")
    recipe = PretrainRecipe(data, cfg, dims=dims, seed=seed, cases=cases, skip_bad_cases=skip_bad_cases)
    settings = TrainingSettings(
        cfg.max_steps, cfg.lr, cfg.weight_decay, cfg.schedule, cfg.warmup_steps, seed=seed,
        max_minutes=cfg.max_minutes, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        precision=precision, quiet=quiet,
    )  # fmt: skip
    trained = run_training(recipe, out, settings, resume=resume, overwrite=overwrite)
    loss = trained.trainer.callback_metrics.get("train_loss")
    encoder = trained.files.get("encoder")
    return PretrainResult(
        trained.run,
        Path(encoder) if encoder else None,
        trained.run / "checkpoints" / "last.ckpt",
        trained.steps,
        float(loss) if loss is not None else None,
        trained.files,
        trained.train_seconds,
    )


def read_images(
    data: str | Path,
    *,
    cases: Collection[str] | None = None,
    skip_bad_cases: bool = False,
    progress: Progress | None = None,
) -> tuple[DatasetIndex, list[LoadedCase], dict[str, list[str]]]:
    """Every image of the dataset at ``data`` (any layout ``discover`` knows, labels ignored, ``imagesTs`` included;
    of ``cases`` only, when given), read and checked as ``medssl data check`` does; images only.

    Returns:
        The dataset index, the good images in the index's order, and the bad ones with their problems (left out, and
        listed on stderr, with ``skip_bad_cases``).

    Raises:
        MedsslError: ``data`` is no dataset, a requested case is missing, an image has a problem (without
            ``skip_bad_cases``), or every image has one.
    """
    index = discover(data)
    found = [*index.cases, *index.test_cases]
    if cases is not None:
        wanted = set(cases)
        missing = sorted(wanted - {c.case_id for c in found})
        if missing:
            raise MedsslError(f"{len(missing)} requested case(s) not in {data}: {', '.join(missing[:10])}")
        found = [c for c in found if c.case_id in wanted]
    checked = load_checked_cases(index, found, images_only=True, progress=progress)
    if checked.bad and not skip_bad_cases:
        raise bad_cases_error(data, checked.bad)
    if len(checked.bad) == len(found):
        raise MedsslError(f"every image of {data} has a problem (run `medssl data check {data}`)")
    if is_main_process():
        print_skipped(checked.bad)
    return index, [checked.loaded[c.case_id] for c in found if c.case_id in checked.loaded], checked.bad


class PretrainRecipe(RunRecipe):
    """``medssl pretrain``: every image of a dataset (labels ignored), random patches, the registered pretraining
    method ``cfg.method`` (checkpoint keys ``method.*``), ``last.ckpt`` every ``checkpoint_interval`` steps, and the
    method's encoder exported as ``encoder.pt``.

    ``data`` may also be a store of ``medssl data prepare`` (a folder with ``store.json``): then no image is read
    whole into memory (the patches are read from the stored files, ``StoredVolume``), the fingerprint and target
    spacing are the store's, and the store's cases were checked when it was prepared.

    Args: see ``run_pretrain``.
    """

    kind = "pretrain"
    module_name = "method"  # medssl.networks.weights reads a pretraining checkpoint's encoder under method.*

    def __init__(
        self,
        data: str | Path,
        cfg: PretrainConfig,
        *,
        dims: int | None,
        seed: int,
        cases: Collection[str] | None,
        skip_bad_cases: bool,
    ) -> None:
        self.data, self.cfg, self.dims, self.seed, self.cases = data, cfg, dims, seed, cases
        self.skip_bad_cases = skip_bad_cases
        self.store: Store | None = None
        self.volumes: list[StoredVolume] = []
        self.checkpoint_every = cfg.checkpoint_interval
        self.log_every = min(cfg.log_interval, cfg.max_steps)

    @property
    def inputs(self) -> tuple[str | Path | None, ...]:
        return (self.data,)

    def read(self, progress: Progress) -> None:
        """Read and check every image of the dataset (of ``cases`` only, when given); of a store, its index only."""
        if is_store(self.data):
            self.store = open_store(self.data)
            self.volumes = self.store.volumes(self.cases)
            self.loaded: list[LoadedCase] = []
            self.skipped = dict(self.store.skipped)
            return
        self.index, self.loaded, self.skipped = read_images(
            self.data, cases=self.cases, skip_bad_cases=self.skip_bad_cases, progress=progress
        )

    def make_plan(self) -> tuple[Plan, Fingerprint]:
        cfg = self.cfg
        spacing = cfg.target_spacing
        if self.store is not None:
            fp, spacing = self.store.fingerprint, self.store.plan.target_spacing
            if cfg.target_spacing is not None and [float(s) for s in cfg.target_spacing] != spacing:
                raise MedsslError(
                    f"the store {self.data} holds images at spacing {spacing}, not target_spacing "
                    f"{cfg.target_spacing}; prepare a store at that spacing (`medssl data prepare --spacing`)"
                )
        else:
            fp = compute_fingerprint(self.loaded, self.index.modality, seed=self.seed)
        plan = make_plan(
            fp,
            spatial_dims=self.dims,
            patch_size=cfg.patch_size,
            channels=cfg.channels,
            batch_size=cfg.batch_size,
            require_labels=False,
            target_spacing=spacing,
        )
        return plan, fp

    def records(self, plan: Plan) -> dict[str, Any]:
        # the plan's sizes, resolved
        config = replace(
            self.cfg, batch_size=plan.batch_size, patch_size=list(plan.patch_size), channels=list(plan.channels)
        )
        command = {
            "data": str(self.data),
            "dims": self.dims,
            "seed": self.seed,
            "method": self.cfg.method,
            "cases": sorted(self.cases) if self.cases else None,
            "skipped_cases": self.skipped,
        }
        return {"config.yaml": config, "command.json": command}

    def patch_seed(self, seed: int, rank: int) -> int:
        # rank 0 (and a one-process run) as before; under DDP every other process its own stream
        return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])

    def datasets(self, plan: Plan) -> tuple[PatchDataset, None]:
        images: Sequence[Volume]
        if self.store is not None:
            _check_store_plan(self.store, plan)  # a resumed run's plan.json may come from another store
            images = self.volumes
        else:
            images = [preprocess_image(c.image, c.meta, plan) for c in self.loaded]
            self.loaded = []
        patches = PatchDataset(
            images,
            None,  # image-only patches: plain random crops
            plan.patch_size,
            plan.batch_size * max(1, min(self.cfg.max_steps, self.cfg.checkpoint_interval)),
            foreground_fraction=0.0,
            slice_axis=plan.slice_axis,
            intensity_probability=0.0,  # the method's views do the augmentation
            seed=self.seed,
        )
        return patches, None

    def build_system(self, plan: Plan) -> System:
        try:
            return create(
                self.cfg.method,
                spatial_dims=plan.spatial_dims,
                in_channels=plan.in_channels,
                channels=plan.channels,
                **self.cfg.method_options,
            )
        except (TypeError, ValueError) as exc:
            raise MedsslError(f"cannot build pretraining method {self.cfg.method!r}: {exc}") from None

    def finish(self, trained: TrainedRun) -> dict[str, Any]:
        """Export the method's encoder as ``encoder.pt`` (for ``medssl finetune --init``)."""
        method = trained.system
        assert isinstance(method, PretrainMethod)
        plan = trained.plan
        extra = {"method": self.cfg.method, "steps": trained.steps, "patch_size": [int(p) for p in plan.patch_size]}
        trained.files["encoder"] = str(save_encoder(method.export_encoder(), trained.run / "encoder.pt", extra=extra))
        loss = trained.trainer.callback_metrics.get("train_loss")
        return {
            "method": self.cfg.method,
            "final_loss": float(loss) if loss is not None else None,
            "channels": list(plan.channels),
        }


def _check_store_plan(store: Store, plan: Plan) -> None:
    """Refuse a store whose images were preprocessed otherwise than ``plan`` says (grid, channels, normalisation)."""
    fields = ("target_spacing", "normalization", "intensity", "in_channels", "data_dims")
    differ = [f for f in fields if getattr(store.plan, f) != getattr(plan, f)]
    if differ:
        raise MedsslError(
            f"the store {store.root} was preprocessed with another {', '.join(differ)} than this run's plan.json "
            "(resume the run with the store it started from)"
        )
