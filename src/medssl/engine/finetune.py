"""The supervised fine-tuning workflow behind ``medssl finetune``: split, plan, preprocess, train with
Lightning, then predict, evaluate and draw the held-out test cases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

from medssl.config import FinetuneConfig, save_config
from medssl.data.layouts import DatasetIndex, discover
from medssl.data.loading import LoadedCase, load_case
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.data.sampling import PatchDataset
from medssl.data.split import load_split, make_split, save_split
from medssl.engine.checkpoint_io import SafeCheckpointIO
from medssl.engine.evaluation import evaluate_test_cases
from medssl.engine.plots import plot_training_curves
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
    """
    main = is_main_process()
    index = labelled_index(data)
    ids = {c.case_id for c in index.cases}
    split_path = Path(out) / "split.json"
    if resume and split_path.is_file():
        split = load_split(split_path, ids)
    elif split_file is not None:
        split = load_split(split_file, ids)
    else:
        split = make_split(
            sorted(ids),
            test_fraction=cfg.test_fraction,
            val_fraction=cfg.val_fraction,
            label_fraction=label_fraction,
            seed=seed,
            split_seed=cfg.split_seed,
        )
    if not split["val"]:
        raise MedsslError("the split has no validation case; raise val_fraction or add cases")
    # Only now, with the data and the split checked: a user error must not wipe the run --overwrite replaces.
    run = prepare_output_dir(out, overwrite=overwrite, resume=resume)
    by_id = {c.case_id: c for c in index.cases}
    progress = progress_bar(quiet or not main)

    train_cases = [
        load_case(by_id[i], index.structures) for i in progress(split["train_labelled"], "loading training cases")
    ]
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
                },
            )
    train_x, train_y = _prepare(train_cases, plan)
    del train_cases
    val_cases = [
        load_case(by_id[i], index.structures)
        for i in progress(split["val"][: cfg.max_val_cases], "loading validation cases")
    ]
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
        cfg.val_interval * plan.batch_size,
        foreground_fraction=cfg.foreground_fraction,
        slice_axis=plan.slice_axis,
        flip_axes=cfg.flip_axes,
        intensity_probability=cfg.intensity_probability,
        seed=seed,
    )
    trainer = _trainer(
        run, cfg, devices=devices, num_nodes=num_nodes, accelerator=accelerator, precision=precision, quiet=quiet
    )
    patches.reseed(seed * 1000 + trainer.global_rank)
    last = run / "checkpoints" / "last.ckpt"
    started = time.perf_counter()
    trainer.fit(
        module,
        train_dataloaders=DataLoader(patches, batch_size=plan.batch_size, num_workers=0),
        val_dataloaders=DataLoader(_CaseList(val_x, val_y), batch_size=1, num_workers=0),
        ckpt_path=str(last) if resume and last.is_file() else None,
    )
    seconds = time.perf_counter() - started
    # The last validation may lie before the final step: save the final state so --resume never repeats steps.
    trainer.save_checkpoint(last)
    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))  # type: ignore[attr-defined]
    best_score = float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None
    result = FinetuneResult(
        run, Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else None, best_score, train_seconds=seconds
    )
    if not trainer.is_global_zero:
        return result
    curves = plot_training_curves(metric_logs(run), run / "training_curves.png")
    if curves:
        result.files["training_curves"] = str(curves)
    if split["test"]:
        model = load_trained_model(run)
        test_cases = (load_case(by_id[i], index.structures) for i in split["test"])
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
            "train_seconds": seconds,
            "global_step": trainer.global_step,
            "test_summary": result.test_summary,
            "files": result.files,
        },
    )
    return result


def labelled_index(data: str | Path) -> DatasetIndex:
    """The dataset index of a labelled dataset; problems or missing labels raise ``MedsslError``."""
    index = discover(data)
    if index.problems:
        shown = "\n  ".join(index.problems[:10])
        more = f"\n  ... and {len(index.problems) - 10} more" if len(index.problems) > 10 else ""
        raise MedsslError(f"dataset {data} has problems (run `medssl data check {data}`):\n  {shown}{more}")
    if not index.has_labels:
        raise MedsslError(f"dataset {data} ({index.layout} layout) has no labels to fine-tune on")
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
        return L.Trainer(
            max_steps=cfg.max_steps,
            max_epochs=-1,  # one "epoch" per validation interval; max_steps ends training
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy="ddp" if multi else "auto",
            precision=precision,  # type: ignore[arg-type]
            # the tqdm bar counts steps per validation interval (the rich bar would show an epoch total of -1)
            callbacks=[checkpoint, *([] if quiet else [TQDMProgressBar()])],
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
