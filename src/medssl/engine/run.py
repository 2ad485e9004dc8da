"""The one run workflow: every training command (``medssl finetune``, ``medssl pretrain``, and each system added
later) is a ``RunRecipe`` that this module runs.

The workflow owns what every run shares: data read and checked before the output folder is touched (refuse /
``--overwrite`` / ``--resume``), the plan and the records of a fresh run (``plan.json``, ``fingerprint.json``,
``config.yaml``, ``command.json``, a split), the seeded system, ``SystemModule`` (optimiser groups, schedule,
precision, devices), the Trainer with atomic checkpoints and interrupt/resume, the training curves and
``result.json``. A recipe says only what differs: which data, which plan, which system, which checkpoints, and
what to do with the trained system (export an encoder, score the test cases).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from medssl.config import save_config
from medssl.data.plan import Fingerprint, Plan
from medssl.data.sampling import PatchDataset
from medssl.engine.checkpoint_io import SafeCheckpointIO
from medssl.engine.module import SystemModule
from medssl.engine.plateau import PlateauStop
from medssl.engine.plots import plot_training_curves, read_curves
from medssl.engine.resume import ResumableTraining, say_where_resumed
from medssl.engine.run_folder import (
    is_main_process,
    log_version,
    metric_logs,
    prepare_output_dir,
    progress_bar,
    save_fingerprint,
    save_json,
)
from medssl.engine.trainer_setup import make_trainer
from medssl.errors import MedsslError
from medssl.systems import System

__all__ = ["Progress", "RunRecipe", "TrainedRun", "TrainingSettings", "run_training"]

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


@dataclass
class TrainingSettings:
    """How the engine trains, whatever the system.

    Attributes:
        max_steps: batches of the run; lr, weight_decay: AdamW (every optimiser group).
        schedule: ``cosine`` or ``poly`` decay to zero; warmup_steps: linear warm-up before it.
        seed: seed of the initialisation, the augmentations and the patch stream.
        max_minutes: stop training after this wall-clock time (None: only ``max_steps``).
        patience: stop at a plateau of the recipe's monitored score: after this many validations in a row without
            a gain above ``min_delta`` (None: no plateau stop; ignored without a monitored score).
        min_delta: the smallest gain of the monitored score that counts for ``patience``.
        accelerator, devices, num_nodes, precision: Lightning Trainer settings (DDP when more than one process).
        quiet: no progress bars.
    """

    max_steps: int
    lr: float
    weight_decay: float
    schedule: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    max_minutes: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = "32-true"
    quiet: bool = False


@dataclass
class TrainedRun:
    """What the workflow hands to ``RunRecipe.finish``: the run folder, the trained system and how training went.

    ``stopped`` says why training ended: ``max_steps``, ``plateau`` (``TrainingSettings.patience``) or
    ``max_minutes``.
    """

    run: Path
    plan: Plan
    system: System
    trainer: L.Trainer
    progress: Progress
    steps: int
    train_seconds: float
    stopped: str = "max_steps"
    best_checkpoint: Path | None = None
    best_score: float | None = None
    files: dict[str, str] = field(default_factory=dict)


class RunRecipe(abc.ABC):
    """What one kind of run does differently; ``run_training`` does the rest.

    Attributes:
        kind: the command (``finetune``, ``pretrain``): the run folder's marker and the resume message.
        module_name: checkpoint key prefix of the system (``model``: ``medssl predict`` and ``--init`` read it).
        monitor: validation score that picks ``checkpoints/best.ckpt`` (higher is better), or None (no validation).
        checkpoint_every: steps between saves of ``last.ckpt`` (with a monitored score: between validations, which
            save it too), so that a run killed outright (SIGKILL) loses at most this many steps.
        log_every: steps between logged training losses.
    """

    kind: str
    module_name: str = "system"
    monitor: str | None = None
    checkpoint_every: int = 250
    log_every: int = 10

    @property
    @abc.abstractmethod
    def inputs(self) -> tuple[str | Path | None, ...]:
        """The input paths, which the run folder may not lie in (nor they in it)."""

    @abc.abstractmethod
    def read(self, progress: Progress) -> None:
        """Read and check the data; a user mistake raises ``MedsslError`` before the run folder is touched."""

    @abc.abstractmethod
    def make_plan(self) -> tuple[Plan, Fingerprint]:
        """The plan of a fresh run, and the dataset fingerprint it was made from."""

    def records(self, plan: Plan) -> dict[str, Any]:
        """Files a fresh run writes beside ``plan.json``: ``{name: JSON-able object}`` (``.yaml`` names: a
        dataclass written as YAML). Default: none."""
        return {}

    @abc.abstractmethod
    def datasets(self, plan: Plan) -> tuple[PatchDataset, Dataset[Any] | None]:
        """The training patch stream and the validation cases (one per item; None: no validation); called after
        ``build_system``, so that the stream may depend on the system built."""

    def patch_seed(self, seed: int, rank: int) -> int:
        """Seed of process ``rank``'s patch stream (each DDP process draws its own patches)."""
        return seed * 1000 + rank

    @abc.abstractmethod
    def build_system(self, plan: Plan) -> System:
        """The system to train (after the global seed is set: its initialisation is seeded)."""

    @abc.abstractmethod
    def finish(self, trained: TrainedRun) -> dict[str, Any]:
        """Use the trained system (export, score); returns this kind's entries of ``result.json`` (add files to
        ``trained.files``). Runs in the main process only."""


def run_training(
    recipe: RunRecipe, out: str | Path, settings: TrainingSettings, *, resume: bool = False, overwrite: bool = False
) -> TrainedRun:
    """Run ``recipe``: read the data, prepare the run folder, train, and let the recipe finish; writes
    ``training_curves.png`` and ``result.json``.

    Raises:
        MedsslError: bad data, a run folder that may not be written, or training options Lightning refuses.
        TrainingInterrupted: SIGINT/SIGTERM during training (``checkpoints/last.ckpt`` saved).
    """
    main = is_main_process()
    progress = progress_bar(settings.quiet or not main)
    recipe.read(progress)
    # Only now, with the data read: a typo in --data must not wipe the run that --overwrite would replace.
    run = prepare_output_dir(out, kind=recipe.kind, overwrite=overwrite, resume=resume, inputs=recipe.inputs)
    plan = _plan(recipe, run, resume=resume, main=main)
    L.seed_everything(settings.seed, workers=True, verbose=False)
    system = recipe.build_system(plan)
    # after the system: what it trains on may depend on it (System.uses_unlabelled); datasets() draws only from the
    # patch stream's own generator, so the global streams (initialisation, augmentations) are as before
    patches, validation = recipe.datasets(plan)
    module = SystemModule(
        system,
        name=recipe.module_name,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        max_steps=settings.max_steps,
        schedule=settings.schedule,
        warmup_steps=settings.warmup_steps,
    )
    last = run / "checkpoints" / "last.ckpt"
    # the systems may draw from torch's global generator (views, noise): it goes into the checkpoints too
    every = recipe.checkpoint_every if recipe.monitor is not None else None  # else ModelCheckpoint's interval
    # under DDP each process draws its own patches (patch_seed) and, from the start of training, its own views and
    # augmentations (ResumableTraining reseeds them after Lightning's DDP set-up has reset every process's seed)
    resumable = ResumableTraining(
        last, recipe.kind, patches, global_rng=True, seed=settings.seed, checkpoint_every=every
    )
    trainer = _trainer(run, recipe, settings, module, resumable)
    patches.reseed(recipe.patch_seed(settings.seed, trainer.global_rank))
    if resume and main:
        say_where_resumed(last)
    started = time.perf_counter()
    resumable.fit(
        trainer,
        module,
        train_dataloaders=DataLoader(patches, batch_size=plan.batch_size, num_workers=0),
        val_dataloaders=DataLoader(validation, batch_size=1, num_workers=0) if validation is not None else None,
        ckpt_path=str(last) if resume and last.is_file() else None,
        weights_only=True,  # SafeCheckpointIO reads with weights_only=True whatever this says
    )
    seconds = time.perf_counter() - started
    # The last validation or checkpoint may lie before the final step: save the final state, so that --resume never
    # repeats steps. weights_only=False: the whole training state (optimiser, loops, random streams).
    trainer.save_checkpoint(last, weights_only=False)
    resumable.raise_if_stopped()
    steps = trainer.global_step // len(module.group_names)
    stopped = _why_stopped(trainer, steps, settings.max_steps)
    trained = TrainedRun(run, plan, module.system, trainer, progress, steps, seconds, stopped)
    _best(trained, trainer)
    if trainer.is_global_zero:
        _finish(recipe, trained)
    return trained


def _plan(recipe: RunRecipe, run: Path, *, resume: bool, main: bool) -> Plan:
    """The run's plan: the saved one when resuming, else a new one, written with the fresh run's records."""
    path = run / "plan.json"
    if resume and path.is_file():
        plan = Plan.load(path)
        _check_same_options(recipe.records(plan), run)
        return plan
    plan, fingerprint = recipe.make_plan()
    if main:
        plan.save(path)
        save_fingerprint(fingerprint, run / "fingerprint.json")
        for name, record in recipe.records(plan).items():
            _write_record(run / name, record)
    return plan


# Options a resumed run may change: when training stops (a longer run: the schedule then decays over the new length).
RESUMABLE_CHANGES = frozenset({"max_steps", "max_minutes", "patience", "min_delta"})


def _check_same_options(records: dict[str, Any], run: Path) -> None:
    """Refuse to resume with other options than the run was started with (the run would silently mix two set-ups)."""
    saved_path = run / "config.yaml"
    now = records.get("config.yaml")
    if now is None or not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}
    current = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(now)))  # as the file holds it: lists, plain values
    differ = [k for k, v in current.items() if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v]
    if differ:
        shown = ", ".join(f"{k} {saved[k]!r} (run) vs {current[k]!r} (now)" for k in differ)
        raise MedsslError(
            f"--resume: {run} was started with other options: {shown}; resume with the run's options "
            f"({saved_path}), or start a new run"
        )


def _write_record(path: Path, record: Any) -> None:
    if path.suffix != ".yaml":
        save_json(path, record)
        return
    try:
        save_config(record, path)
    except yaml.YAMLError as exc:
        raise MedsslError(f"options must be plain values (numbers, strings, lists): {exc}") from None


def _trainer(
    run: Path, recipe: RunRecipe, settings: TrainingSettings, module: SystemModule, resumable: ResumableTraining
) -> L.Trainer:
    devices = settings.devices
    multi = settings.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or devices == "auto"
    if recipe.monitor is not None:
        checkpoint = ModelCheckpoint(
            dirpath=run / "checkpoints",
            filename="best",
            monitor=recipe.monitor,
            mode="max",
            save_last=True,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )
    else:
        checkpoint = ModelCheckpoint(
            dirpath=run / "checkpoints",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=max(1, recipe.checkpoint_every),
            enable_version_counter=False,
        )
    try:
        return make_trainer(
            max_steps=module.trainer_steps,  # Lightning counts each optimiser group's step
            max_epochs=-1,  # one "epoch" per validation interval (or checkpoint interval); max_steps ends training
            accelerator=settings.accelerator,
            devices=devices,
            num_nodes=settings.num_nodes,
            strategy="ddp" if multi else "auto",
            # every process draws its own random patches for the whole "epoch" (a DistributedSampler would cut each
            # one's epoch to 1/world_size of the steps between validations) and validates on every case
            use_distributed_sampler=False,
            precision=settings.precision,
            # the tqdm bar counts steps per interval (the rich bar would show an epoch total of -1)
            callbacks=[
                resumable,
                checkpoint,
                *_plateau_stop(recipe, settings, module),
                *([] if settings.quiet else [TQDMProgressBar()]),
            ],
            logger=CSVLogger(run, name="logs", version=log_version(run)),
            plugins=[SafeCheckpointIO()],
            num_sanity_val_steps=0,
            enable_model_summary=False,
            enable_progress_bar=not settings.quiet,
            log_every_n_steps=max(1, recipe.log_every),
            max_time={"seconds": round(settings.max_minutes * 60)} if settings.max_minutes else None,
            default_root_dir=run,
        )
    except (ValueError, RuntimeError, TypeError) as exc:  # Lightning's message for bad device/precision options
        raise MedsslError(f"cannot set up training: {exc}") from None


def _plateau_stop(recipe: RunRecipe, settings: TrainingSettings, module: SystemModule) -> list[EarlyStopping]:
    """The plateau stop on the monitored score when ``settings.patience`` is set (its counters go into the
    checkpoints, so a resumed run keeps counting); patience counts from the end of the system's ``warmup_steps``."""
    if settings.patience is None or recipe.monitor is None:
        return []
    return [
        PlateauStop(
            start=int(getattr(module.system, "warmup_steps", 0) or 0),
            groups=len(module.group_names),
            monitor=recipe.monitor,
            patience=settings.patience,
            min_delta=settings.min_delta,
            check_finite=False,  # a NaN score (no foreground anywhere) is a validation without a gain, not an end
            check_on_train_epoch_end=False,  # after each validation only (a resumed run starts at an epoch's end)
            verbose=False,
        )
    ]


def _why_stopped(trainer: L.Trainer, steps: int, max_steps: int) -> str:
    """``plateau`` when the plateau stop ended training before ``max_steps``, else ``max_minutes`` when training
    ended early (an interrupt raises before this is asked), else ``max_steps``."""
    if steps >= max_steps:
        return "max_steps"
    plateau = any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)  # type: ignore[attr-defined]
    return "plateau" if plateau else "max_minutes"


def _best(trained: TrainedRun, trainer: L.Trainer) -> None:
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))  # type: ignore[attr-defined]
    if checkpoint.monitor is None or checkpoint.best_model_score is None:
        return
    trained.best_checkpoint = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    score = float(checkpoint.best_model_score)
    # Lightning ranks a NaN score as -inf: a run whose every validation score was NaN has no best score
    trained.best_score = score if math.isfinite(score) else None


def _finish(recipe: RunRecipe, trained: TrainedRun) -> None:
    curves = plot_training_curves(metric_logs(trained.run), trained.run / "training_curves.png")
    if curves:
        trained.files["training_curves"] = str(curves)
    entries = recipe.finish(trained)
    validation = {}
    if recipe.monitor is not None:
        steps, values = read_curves(metric_logs(trained.run)).get(recipe.monitor, ([], []))
        validation = {"validation_curve": {"monitor": recipe.monitor, "steps": steps, "values": values}}
    save_json(
        trained.run / "result.json",
        {
            **entries,
            "global_step": trained.steps,
            "stopped": trained.stopped,
            "precision": str(trained.trainer.precision),  # what ``auto`` resolved to on this machine
            **validation,
            "train_seconds": trained.train_seconds,
            "files": trained.files,
        },
    )
