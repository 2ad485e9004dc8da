"""The supervised fine-tuning workflow behind ``medssl finetune``: split, plan, preprocess, train with
Lightning, then predict, evaluate and draw the held-out test cases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from medssl.config import FinetuneConfig, save_config
from medssl.data.layouts import DatasetIndex, discover, unrecognised_warning
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_case, load_checked_cases, print_skipped
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.data.sampling import PatchDataset
from medssl.data.split import load_split, make_split, save_split
from medssl.engine.checkpoint_io import SafeCheckpointIO
from medssl.engine.evaluation import evaluate_test_cases
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
from medssl.engine.segmentation import SegmentationModule
from medssl.engine.trainer_setup import make_trainer
from medssl.errors import MedsslError
from medssl.networks.weights import load_encoder
from medssl.segment.predict import TrainedModel, build_network, load_trained_model

console = Console(stderr=True)


@dataclass
class FinetuneResult:
    """Where a fine-tuning run put its outputs, and its test scores."""

    run_dir: Path
    best_checkpoint: Path | None
    best_val_dice: float | None
    test_summary: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    train_seconds: float = 0.0


class _CaseList(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Whole preprocessed validation cases, one per item."""

    def __init__(self, images: list[np.ndarray], targets: list[np.ndarray]) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images[i]), torch.from_numpy(self.targets[i])


def run_finetune(
    data: str | Path,
    out: str | Path,
    cfg: FinetuneConfig,
    *,
    dims: int | None = None,
    label_fraction: float = 1.0,
    seed: int = 0,
    init: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    devices: int | str = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    precision: str = "32-true",
    split_file: str | Path | None = None,
    quiet: bool = False,
    skip_bad_cases: bool = False,
) -> FinetuneResult:
    """Fine-tune a U-Net on a labelled dataset and score it on the held-out test cases.

    Args:
        data: dataset folder in any supported labelled layout.
        out: run folder (created; an existing one needs ``overwrite`` or ``resume``).
        cfg: resolved training settings.
        dims: 2 or 3 (default: the data's dimensionality).
        label_fraction: share of the training cases whose labels are used.
        seed: seed of the labelled subset, the initialisation and the patch stream.
        init: encoder weights to start from (``medssl pretrain`` output or a run checkpoint).
        resume: continue an interrupted run from its last checkpoint.
        devices, num_nodes, accelerator, precision: Lightning Trainer settings (DDP when > 1 process).
        split_file: a JSON split (``train_labelled``, ``val``, ``test`` case lists) instead of the seeded one.
        quiet: no progress bars.
        skip_bad_cases: leave out the cases ``medssl data check`` would report (listed, and recorded in
            ``command.json``) instead of refusing the dataset; the split is made without them.
    """
    main = is_main_process()
    index = labelled_index(data)
    ids = {c.case_id for c in index.cases}
    split_path = Path(out) / "split.json"
    saved = split_path if resume else None
    split = _choose_split(ids, cfg, saved, split_file, label_fraction, seed)
    progress = progress_bar(quiet or not main)
    # Every case is read and checked (as `medssl data check` does) before anything is written; the training and
    # validation cases are kept from this one reading, the others are read again only for the final test.
    checked = load_checked_cases(index, index.cases, keep=_kept(split, cfg), progress=progress)
    if checked.bad:
        if not skip_bad_cases:
            raise bad_cases_error(data, checked.bad)
        if main:
            print_skipped(checked.bad)
        split = _choose_split(ids, cfg, saved, split_file, label_fraction, seed, leave_out=set(checked.bad))
    if not split["val"]:
        raise MedsslError("the split has no validation case; raise val_fraction or add cases")
    # Only now, with the data and the split checked: a user error must not wipe the run --overwrite replaces.
    run = prepare_output_dir(out, kind="finetune", overwrite=overwrite, resume=resume, inputs=(data, init, split_file))
    by_id = {c.case_id: c for c in index.cases}
    kept = _kept(split, cfg)
    loaded = {i: c for i, c in checked.loaded.items() if i in kept}
    skipped = checked.bad
    del checked
    for i in sorted(kept - set(loaded)):  # wanted only by the split made without the bad cases
        loaded[i] = load_checked_case(by_id[i], index)
    train_cases = [loaded.pop(i) for i in split["train_labelled"]]
    plan_path = run / "plan.json"
    if resume and plan_path.is_file():
        plan = Plan.load(plan_path)
    else:
        fp = compute_fingerprint(train_cases, index.modality, seed=seed)
        plan = make_plan(
            fp,
            spatial_dims=dims,
            labels=index.labels,
            structures=index.structures,
            patch_size=cfg.patch_size,
            channels=cfg.channels,
            batch_size=cfg.batch_size,
        )
        if main:
            save_split(split, split_path)
            plan.save(plan_path)
            save_fingerprint(fp, run / "fingerprint.json")
            save_config(cfg, run / "config.yaml")
            save_json(
                run / "command.json",
                {
                    "data": str(data),
                    "dims": dims,
                    "label_fraction": label_fraction,
                    "seed": seed,
                    "init": str(init) if init else None,
                    "skipped_cases": skipped,
                },
            )
    train_x, train_y = _prepare(train_cases, plan)
    del train_cases
    val_cases = [loaded.pop(i) for i in split["val"][: cfg.max_val_cases]]
    val_x, val_y = _prepare(val_cases, plan)
    del val_cases

    L.seed_everything(seed, workers=True, verbose=False)
    network = build_network(plan)
    if init is not None and not resume:
        n = load_encoder(network.encoder, init)  # type: ignore[arg-type]
        if main:
            console.print(f"[green]--init[/green]: loaded {n} encoder tensors from {init}")
    module = SegmentationModule(
        network,
        plan,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_steps=cfg.max_steps,
        sw_overlap=cfg.sw_overlap,
        rotate_degrees=cfg.rotate_degrees,
        scale_range=(cfg.scale_range[0], cfg.scale_range[1]),
        affine_probability=cfg.affine_probability,
        seed=seed,
    )
    patches = PatchDataset(
        train_x,
        train_y,
        plan.patch_size,
        # One "epoch" per validation; a run shorter than val_interval validates once, at its last step.
        min(cfg.val_interval, cfg.max_steps) * plan.batch_size,
        foreground_fraction=cfg.foreground_fraction,
        slice_axis=plan.slice_axis,
        flip_axes=cfg.flip_axes,
        intensity_probability=cfg.intensity_probability,
        seed=seed,
    )
    last = run / "checkpoints" / "last.ckpt"
    resumable = ResumableTraining(last, "finetune", patches)
    trainer = _trainer(
        run,
        cfg,
        devices=devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
        resumable=resumable,
    )
    patches.reseed(seed * 1000 + trainer.global_rank)
    if resume and main:
        say_where_resumed(last)
    started = time.perf_counter()
    resumable.fit(
        trainer,
        module,
        train_dataloaders=DataLoader(patches, batch_size=plan.batch_size, num_workers=0),
        val_dataloaders=DataLoader(_CaseList(val_x, val_y), batch_size=1, num_workers=0),
        ckpt_path=str(last) if resume and last.is_file() else None,
        weights_only=True,  # SafeCheckpointIO reads with weights_only=True whatever this says
    )
    seconds = time.perf_counter() - started
    # The last validation may lie before the final step: save the final state so --resume never repeats steps.
    # weights_only=False: the whole training state (optimiser, loops, random streams), not only the weights.
    trainer.save_checkpoint(last, weights_only=False)
    resumable.raise_if_stopped()
    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))  # type: ignore[attr-defined]
    best_score = float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None
    result = FinetuneResult(
        run, Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else None, best_score, train_seconds=seconds
    )
    if not trainer.is_global_zero:
        return result
    note = None
    if best_score is None:
        note = (
            f"no validation ran in {trainer.global_step} steps, so there is no best.ckpt and best_val_dice is null: "
            "the test cases were scored with the final weights (last.ckpt)"
        )
        console.print(f"[yellow]note[/yellow]: {note}", highlight=False, soft_wrap=True)
    curves = plot_training_curves(metric_logs(run), run / "training_curves.png")
    if curves:
        result.files["training_curves"] = str(curves)
    if split["test"]:
        model = load_trained_model(run)
        test_cases = (load_checked_case(by_id[i], index) for i in split["test"])
        summary, files = evaluate_test_cases(
            model,
            test_cases,
            run,
            overlap=cfg.sw_overlap,
            overlay_cases=cfg.overlay_cases,
            progress=progress,
            n=len(split["test"]),
        )
        result.test_summary = summary
        result.files.update(files)
    save_json(
        run / "result.json",
        {
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "best_val_dice": best_score,
            **({"best_val_dice_note": note} if note else {}),
            "train_seconds": seconds,
            "global_step": trainer.global_step,
            "test_summary": result.test_summary,
            "files": result.files,
        },
    )
    return result


def _choose_split(
    ids: set[str],
    cfg: FinetuneConfig,
    saved: Path | None,
    split_file: str | Path | None,
    label_fraction: float,
    seed: int,
    *,
    leave_out: set[str] | None = None,
) -> dict[str, Any]:
    """The run's split: the saved one (``--resume``), the ``--split`` file, or a seeded one made without the cases
    of ``leave_out`` (a given split just has them removed)."""
    leave_out = leave_out or set()
    if saved is not None and saved.is_file():
        split = load_split(saved, ids)
    elif split_file is not None:
        split = load_split(split_file, ids)
    else:
        return make_split(
            sorted(ids - leave_out),
            test_fraction=cfg.test_fraction,
            val_fraction=cfg.val_fraction,
            label_fraction=label_fraction,
            seed=seed,
            split_seed=cfg.split_seed,
        )
    return {k: [i for i in v if i not in leave_out] if isinstance(v, list) else v for k, v in split.items()}


def _kept(split: dict[str, Any], cfg: FinetuneConfig) -> set[str]:
    """The cases training keeps in memory: the labelled training cases and the validation cases used."""
    return {*split["train_labelled"], *split["val"][: cfg.max_val_cases]}


def labelled_index(data: str | Path) -> DatasetIndex:
    """The dataset index of a labelled dataset; problems or missing labels raise ``MedsslError``."""
    index = discover(data)
    if index.problems:
        shown = "\n  ".join(index.problems[:10])
        more = f"\n  ... and {len(index.problems) - 10} more" if len(index.problems) > 10 else ""
        raise MedsslError(f"dataset {data} has problems (run `medssl data check {data}`):\n  {shown}{more}")
    if not index.has_labels:
        raise MedsslError(f"dataset {data} ({index.layout} layout) has no labels to fine-tune on")
    warning = unrecognised_warning(index)  # e.g. case.nii.txt: a file the user may have meant as an image
    if warning:
        console.print(f"[yellow]warning:[/yellow] {data}: {warning}", highlight=False, soft_wrap=True)
    return index


def _prepare(cases: list[LoadedCase], plan: Plan) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [preprocess_image(c.image, c.meta, plan) for c in cases], [encode_target(c, plan) for c in cases]


def _trainer(
    run: Path,
    cfg: FinetuneConfig,
    *,
    devices: int | str,
    num_nodes: int,
    accelerator: str,
    precision: str,
    quiet: bool,
    resumable: ResumableTraining,
) -> L.Trainer:
    multi = num_nodes > 1 or (isinstance(devices, int) and devices > 1) or devices == "auto"
    checkpoint = ModelCheckpoint(
        dirpath=run / "checkpoints",
        filename="best",
        monitor="val_dice",
        mode="max",
        save_last=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    try:
        return make_trainer(
            max_steps=cfg.max_steps,
            max_epochs=-1,  # one "epoch" per validation interval; max_steps ends training
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy="ddp" if multi else "auto",
            precision=precision,
            # the tqdm bar counts steps per validation interval (the rich bar would show an epoch total of -1)
            callbacks=[resumable, checkpoint, *([] if quiet else [TQDMProgressBar()])],
            logger=CSVLogger(run, name="logs", version=log_version(run)),
            plugins=[SafeCheckpointIO()],
            num_sanity_val_steps=0,
            enable_model_summary=False,
            enable_progress_bar=not quiet,
            log_every_n_steps=min(10, cfg.val_interval),
            max_time={"seconds": round(cfg.max_minutes * 60)} if cfg.max_minutes else None,
            default_root_dir=run,
        )
    except (ValueError, RuntimeError, TypeError) as exc:  # Lightning's message for bad device/precision options
        raise MedsslError(f"cannot set up training: {exc}") from None


__all__ = ["FinetuneResult", "TrainedModel", "run_finetune"]
