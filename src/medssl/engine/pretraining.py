"""The self-supervised pretraining workflow behind ``medssl pretrain``: plan, preprocess, train any registered
``medssl.pretrain.PretrainMethod`` on random patches with Lightning, and export its encoder for fine-tuning.

Labels in the dataset are ignored. The exported ``RUN/encoder.pt`` has the plan's widths (``channels``):
``medssl finetune --init RUN/encoder.pt`` only loads it into a U-Net of the same widths, so pass the same
``channels`` to both commands (``finetune`` refuses an encoder of other widths).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from medssl.config import PretrainConfig, save_config
from medssl.data.layouts import discover
from medssl.data.loading import bad_cases_error, load_checked_cases, print_skipped
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import preprocess_image
from medssl.data.sampling import PatchDataset
from medssl.engine.checkpoint_io import SafeCheckpointIO
from medssl.engine.module import SCHEDULES, SystemModule
from medssl.engine.plots import plot_training_curves
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
from medssl.networks.weights import save_encoder
from medssl.pretrain import PretrainMethod, create, get

__all__ = ["SCHEDULES", "PretrainModule", "PretrainResult", "run_pretrain"]


class PretrainModule(SystemModule):
    """``SystemModule`` for a ``PretrainMethod``, kept as ``method`` (checkpoint keys ``method.*``, which
    ``medssl.networks.weights`` reads): AdamW and a warm-up + decay schedule.

    Every loss the method returns is logged: ``"loss"`` as ``train_loss``, the others as ``train_<name>``.

    Args:
        method: the method to train (its encoder, heads and momentum networks live in this module's state).
        lr: peak learning rate; weight_decay: AdamW weight decay.
        max_steps: optimiser steps of the run (length of the decay, and of ``after_step`` schedules).
        schedule: ``cosine`` or ``poly`` (exponent 0.9) decay to zero.
        warmup_steps: linear warm-up before the decay.
    """

    def __init__(
        self,
        method: PretrainMethod,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        max_steps: int = 1000,
        schedule: str = "cosine",
        warmup_steps: int = 0,
    ) -> None:
        super().__init__(
            method,
            name="method",
            lr=lr,
            weight_decay=weight_decay,
            max_steps=max_steps,
            schedule=schedule,
            warmup_steps=warmup_steps,
        )

    @property
    def method(self) -> PretrainMethod:
        """The method being trained."""
        method = self.system
        assert isinstance(method, PretrainMethod)
        return method


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
    *,
    method: str,
    dims: int | None = None,
    max_steps: int = 1000,
    batch_size: int | None = None,
    patch_size: list[int] | None = None,
    channels: list[int] | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    log_interval: int = 10,
    checkpoint_interval: int = 250,
    max_minutes: float | None = None,
    seed: int = 0,
    cases: Collection[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    precision: str = "32-true",
    quiet: bool = False,
    skip_bad_cases: bool = False,
    **method_kwargs: Any,
) -> PretrainResult:
    """Pretrain an encoder with a registered self-supervised method on every image of ``data``.

    Args:
        data: dataset folder in any supported layout, labelled or not (labels are ignored; test images are used).
        out: run folder (created; an existing one needs ``overwrite`` or ``resume``).
        method: registered method name (``medssl.pretrain.names()``).
        dims: 2 or 3 (default: the data's).
        max_steps, batch_size, patch_size, channels, lr, weight_decay, schedule, warmup_steps, log_interval,
            checkpoint_interval, max_minutes: see ``medssl.config.PretrainConfig``.
        seed: seed of the initialisation, the views and the patch stream.
        cases: pretrain on these case ids only (e.g. the training cases of a split, keeping test images out).
        resume: continue an interrupted run from ``checkpoints/last.ckpt`` (with the run's ``plan.json``).
        accelerator, precision: Lightning Trainer settings (one device).
        quiet: no progress bars.
        skip_bad_cases: leave out the images ``medssl data check`` would report (unreadable, NaN/inf, channel
            files or dimensionality that disagree; listed, and recorded in ``command.json``) instead of refusing.
        method_kwargs: keyword arguments of the method (e.g. ``temperature=0.2``).

    Returns:
        The run folder, with ``plan.json``, ``config.yaml``, ``checkpoints/last.ckpt``, ``logs/``,
        ``training_curves.png``, ``result.json`` and ``encoder.pt`` (for ``medssl finetune --init``).
    """
    get(method)  # unknown name: one error listing the known ones, before any work
    if max_steps < 1:
        raise MedsslError(f"max_steps must be at least 1, not {max_steps}")
    if schedule not in SCHEDULES:
        raise MedsslError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
    main = is_main_process()
    progress = progress_bar(quiet or not main)
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
    if main:
        print_skipped(checked.bad)
    loaded = [checked.loaded[c.case_id] for c in found if c.case_id in checked.loaded]
    skipped = checked.bad
    del checked
    # Only now, with the data read: a typo in --data must not wipe the run that --overwrite would replace.
    run = prepare_output_dir(out, kind="pretrain", overwrite=overwrite, resume=resume, inputs=(data,))

    plan_path = run / "plan.json"
    if resume and plan_path.is_file():
        plan = Plan.load(plan_path)
    else:
        fp = compute_fingerprint(loaded, index.modality, seed=seed)
        plan = make_plan(
            fp,
            spatial_dims=dims,
            patch_size=patch_size,
            channels=channels,
            batch_size=batch_size,
            require_labels=False,
        )
        if main:
            plan.save(plan_path)
            save_fingerprint(fp, run / "fingerprint.json")
    cfg = PretrainConfig(
        method=method,
        max_steps=max_steps,
        batch_size=plan.batch_size,
        patch_size=list(plan.patch_size),
        channels=list(plan.channels),
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup_steps=warmup_steps,
        log_interval=log_interval,
        checkpoint_interval=checkpoint_interval,
        max_minutes=max_minutes,
        method_options=dict(method_kwargs),
    )
    if main:
        try:
            save_config(cfg, run / "config.yaml")
        except yaml.YAMLError as exc:
            raise MedsslError(f"method options must be plain values (numbers, strings, lists): {exc}") from None
        save_json(
            run / "command.json",
            {
                "data": str(data),
                "dims": dims,
                "seed": seed,
                "method": method,
                "cases": sorted(cases) if cases else None,
                "skipped_cases": skipped,
            },
        )

    images = [preprocess_image(c.image, c.meta, plan) for c in progress(loaded, "preprocessing")]
    del loaded
    # PatchDataset wants targets: an all-zero view per image costs no memory (no foreground, plain random crops).
    dummy = [np.broadcast_to(np.zeros((1,) * x.ndim, np.uint8), (1, *x.shape[1:])) for x in images]
    patches = PatchDataset(
        images,
        dummy,
        plan.patch_size,
        plan.batch_size * max(1, min(max_steps, checkpoint_interval)),
        foreground_fraction=0.0,
        slice_axis=plan.slice_axis,
        intensity_probability=0.0,  # the method's views do the augmentation
        seed=seed,
    )

    L.seed_everything(seed, workers=True, verbose=False)
    try:
        pretrain_method = create(
            method,
            spatial_dims=plan.spatial_dims,
            in_channels=plan.in_channels,
            channels=plan.channels,
            **method_kwargs,
        )
    except (TypeError, ValueError) as exc:
        raise MedsslError(f"cannot build pretraining method {method!r}: {exc}") from None
    module = PretrainModule(
        pretrain_method,
        lr=lr,
        weight_decay=weight_decay,
        max_steps=max_steps,
        schedule=schedule,
        warmup_steps=warmup_steps,
    )
    checkpoint = ModelCheckpoint(
        dirpath=run / "checkpoints",
        save_last=True,
        save_top_k=0,
        every_n_train_steps=max(1, checkpoint_interval),
        enable_version_counter=False,
    )
    last = run / "checkpoints" / "last.ckpt"
    # the methods draw their views from torch's global generator: it goes into the checkpoints too
    resumable = ResumableTraining(last, "pretrain", patches, global_rng=True)
    try:
        trainer = make_trainer(
            max_steps=max_steps,
            max_epochs=-1,
            accelerator=accelerator,
            devices=1,
            precision=precision,
            callbacks=[resumable, checkpoint, *([] if quiet else [TQDMProgressBar()])],
            logger=CSVLogger(run, name="logs", version=log_version(run)),
            plugins=[SafeCheckpointIO()],
            enable_model_summary=False,
            enable_progress_bar=not quiet,
            log_every_n_steps=max(1, min(log_interval, max_steps)),
            max_time={"seconds": round(max_minutes * 60)} if max_minutes else None,
            default_root_dir=run,
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        raise MedsslError(f"cannot set up training: {exc}") from None
    if resume and main:
        say_where_resumed(last)
    started = time.perf_counter()
    resumable.fit(
        trainer,
        module,
        train_dataloaders=DataLoader(patches, batch_size=plan.batch_size, num_workers=0),
        ckpt_path=str(last) if resume and last.is_file() else None,
        weights_only=True,  # SafeCheckpointIO reads with weights_only=True whatever this says
    )
    seconds = time.perf_counter() - started
    # weights_only=False: the whole training state (optimiser, loops, random streams), not only the weights
    trainer.save_checkpoint(last, weights_only=False)
    resumable.raise_if_stopped()
    loss = trainer.callback_metrics.get("train_loss")
    result = PretrainResult(
        run,
        None,
        last,
        trainer.global_step,
        float(loss) if loss is not None else None,
        train_seconds=seconds,
    )
    if not trainer.is_global_zero:
        return result
    extra = {"method": method, "steps": int(trainer.global_step), "patch_size": [int(p) for p in plan.patch_size]}
    result.encoder = save_encoder(pretrain_method.export_encoder(), run / "encoder.pt", extra=extra)
    result.files["encoder"] = str(result.encoder)
    curves = plot_training_curves(metric_logs(run), run / "training_curves.png")
    if curves:
        result.files["training_curves"] = str(curves)
    save_json(
        run / "result.json",
        {
            "method": method,
            "global_step": result.global_step,
            "final_loss": result.final_loss,
            "train_seconds": seconds,
            "channels": list(plan.channels),
            "files": result.files,
        },
    )
    return result
