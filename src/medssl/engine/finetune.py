"""The supervised fine-tuning workflow behind ``medssl finetune``: split, plan, preprocess, train with
Lightning, then predict, evaluate and draw the held-out test cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.layouts import DatasetIndex, discover, unrecognised_warning
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_case, load_checked_cases, print_skipped
from medssl.data.plan import Fingerprint, Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.data.sampling import CaseDataset, PatchDataset, WithUnlabelledPatches
from medssl.data.split import load_split, make_split
from medssl.engine.evaluation import evaluate_test_cases
from medssl.engine.partial_labels import annotated_rows, check_held_out, check_partial_labels, fully_annotated
from medssl.engine.raters import rater_targets, record_raters
from medssl.engine.run import Progress, RunRecipe, TrainedRun, TrainingSettings, run_training
from medssl.engine.run_folder import is_main_process
from medssl.engine.unlabelled import read_unlabelled_folder, unlabelled_cases
from medssl.errors import MedsslError
from medssl.networks.weights import load_encoder
from medssl.segment.predict import TrainedModel, load_trained_model
from medssl.systems import System

console = Console(stderr=True)


@dataclass
class FinetuneResult:
    """Where a fine-tuning run put its outputs, its test scores, and how long it trained (``steps``; ``stopped``:
    ``max_steps``, ``plateau`` or ``max_minutes``)."""

    run_dir: Path
    best_checkpoint: Path | None
    best_val_dice: float | None
    test_summary: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    stopped: str = "max_steps"


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
    """Fine-tune a segmentation system (``cfg.system``, a U-Net by default) on a labelled dataset and score it on
    the held-out test cases.

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
    recipe = FinetuneRecipe(
        data,
        cfg,
        saved_split=Path(out) / "split.json" if resume else None,
        dims=dims,
        label_fraction=label_fraction,
        seed=seed,
        init=None if resume else init,
        init_record=init,
        split_file=split_file,
        skip_bad_cases=skip_bad_cases,
    )
    settings = TrainingSettings(
        cfg.max_steps, cfg.lr, cfg.weight_decay, "poly", seed=seed, max_minutes=cfg.max_minutes,
        patience=cfg.patience, min_delta=cfg.min_delta, accelerator=accelerator, devices=devices,
        num_nodes=num_nodes, precision=precision, quiet=quiet,
    )  # fmt: skip
    trained = run_training(recipe, out, settings, resume=resume, overwrite=overwrite)
    return FinetuneResult(
        trained.run, trained.best_checkpoint, trained.best_score, recipe.test_summary, trained.files,
        trained.train_seconds, trained.steps, trained.stopped,
    )  # fmt: skip


class FinetuneRecipe(RunRecipe):
    """``medssl finetune``: a seeded split of a labelled dataset, patches of the labelled training cases, the
    registered segmentation system ``cfg.system`` validated on whole cases (``best.ckpt`` by ``val_dice``), and the
    test cases scored, written and drawn at the end.

    Args: see ``run_finetune``; ``saved_split``: the run's ``split.json`` when resuming; ``init_record``: the
    ``--init`` path recorded in ``command.json`` (``init`` itself is None on resume: the weights are in the
    checkpoint).
    """

    kind = "finetune"
    module_name = "model"  # medssl predict and --init read the network under model.*
    monitor = "val_dice"

    def __init__(
        self,
        data: str | Path,
        cfg: FinetuneConfig,
        *,
        saved_split: Path | None,
        dims: int | None,
        label_fraction: float,
        seed: int,
        init: str | Path | None,
        init_record: str | Path | None,
        split_file: str | Path | None,
        skip_bad_cases: bool,
    ) -> None:
        self.data, self.cfg, self.saved_split, self.dims = data, cfg, saved_split, dims
        self.label_fraction, self.seed, self.init, self.init_record = label_fraction, seed, init, init_record
        self.split_file, self.skip_bad_cases = split_file, skip_bad_cases
        self.log_every = min(10, cfg.val_interval)
        self.checkpoint_every = cfg.checkpoint_interval  # last.ckpt between validations: what a SIGKILL may lose
        self.test_summary: dict[str, dict[str, float]] = {}
        self.train_cases: list[LoadedCase] | None = None
        self.folder_images: list[LoadedCase] = []  # the images of cfg.unlabelled
        self.folder_skipped: dict[str, list[str]] = {}
        self.uses_unlabelled = self.uses_raters = False  # what the system built trains on (build_system)

    @property
    def inputs(self) -> tuple[str | Path | None, ...]:
        return (self.data, self.init_record, self.split_file, self.cfg.unlabelled)

    def read(self, progress: Progress) -> None:
        """Discover the dataset, choose the split, and read and check every case (as ``medssl data check`` does);
        the training and validation cases are kept from this one reading, the test cases are read again at the
        end."""
        self.index = index = labelled_index(self.data)
        if index.partially_annotated:
            check_partial_labels(index, getattr(self.cfg, "system", "supervised"))
        ids = {c.case_id for c in index.cases}
        split = self._split(ids)
        checked = load_checked_cases(index, index.cases, keep=_kept(split, self.cfg), progress=progress)
        if checked.bad:
            if not self.skip_bad_cases:
                raise bad_cases_error(self.data, checked.bad)
            if is_main_process():
                print_skipped(checked.bad)
            split = self._split(ids, leave_out=set(checked.bad))
        if not split["val"]:
            raise MedsslError("the split has no validation case; raise val_fraction or add cases")
        split["train_unlabelled"] = unlabelled_cases(split, self.split_file or self.saved_split)
        self.split, self.skipped = split, checked.bad
        self.by_id = {c.case_id: c for c in index.cases}
        kept = _kept(split, self.cfg)
        self.loaded = {i: c for i, c in checked.loaded.items() if i in kept}
        if self.cfg.unlabelled is not None:
            self._read_unlabelled_folder(self.cfg.unlabelled, progress)

    def _read_unlabelled_folder(self, folder: str, progress: Progress) -> None:
        first = self.split["val"][0]
        reference = self.loaded.get(first) or load_checked_case(self.by_id[first], self.index, images_only=True)
        held_out = [p for i in [*self.split["val"], *self.split["test"]] for p in self.by_id[i].images]
        self.folder_images, self.folder_skipped = read_unlabelled_folder(
            folder, self.data, reference, held_out, skip_bad_cases=self.skip_bad_cases, progress=progress
        )

    def _split(self, ids: set[str], leave_out: set[str] | None = None) -> dict[str, Any]:
        full = fully_annotated(self.index)  # partially labelled data: only these may be held out
        split = _choose_split(
            ids, self.cfg, self.saved_split, self.split_file, self.label_fraction, self.seed, leave_out=leave_out,
            held_out_from=full,
        )  # fmt: skip
        check_held_out(split, full)
        return split

    def _cases(self, ids: list[str]) -> list[LoadedCase]:
        """The loaded cases ``ids`` (taken out of memory once used); a case wanted only by the split made without
        the bad cases is read now."""
        return [self.loaded.pop(i) if i in self.loaded else load_checked_case(self.by_id[i], self.index) for i in ids]

    def _train_cases(self) -> list[LoadedCase]:
        if self.train_cases is None:
            self.train_cases = self._cases(self.split["train_labelled"])
        return self.train_cases

    def make_plan(self) -> tuple[Plan, Fingerprint]:
        fp = compute_fingerprint(self._train_cases(), self.index.modality, seed=self.seed)
        cfg = self.cfg
        plan = make_plan(
            fp,
            spatial_dims=self.dims,
            labels=self.index.labels,
            structures=self.index.structures,
            patch_size=cfg.patch_size,
            channels=cfg.channels,
            batch_size=cfg.batch_size,
            target_spacing=cfg.target_spacing,
        )
        record_raters(plan, self.index)
        return plan, fp

    def records(self, plan: Plan) -> dict[str, Any]:
        command = {
            "data": str(self.data),
            "dims": self.dims,
            "label_fraction": self.label_fraction,
            "seed": self.seed,
            "init": str(self.init_record) if self.init_record else None,
            "skipped_cases": self.skipped,
            # cfg.unlabelled's images (a system that trains on unlabelled images also gets split.json's
            # train_unlabelled cases)
            "unlabelled_images": [c.case_id for c in self.folder_images] if self.cfg.unlabelled else None,
            "unlabelled_skipped": self.folder_skipped,
        }
        return {"split.json": self.split, "config.yaml": self.cfg, "command.json": command}

    def datasets(self, plan: Plan) -> tuple[PatchDataset, Dataset[Any]]:
        # partially labelled data: each patch and validation case says which structures it annotates
        partial = self.index.partially_annotated
        train_x, train_y = self._prepare(self._train_cases(), plan)
        train_fields = {"annotated": annotated_rows(self._train_cases(), plan)} if partial else None
        self.train_cases = None  # preprocessed: the raw arrays can go
        val = self._cases(self.split["val"][: self.cfg.max_val_cases])
        val_x, val_y = self._prepare(val, plan)
        val_fields = {"annotated": annotated_rows(val, plan)} if partial else None
        cfg = self.cfg
        # One "epoch" per validation; a run shorter than val_interval validates once, at its last step.
        samples = min(cfg.val_interval, cfg.max_steps) * plan.batch_size
        options: dict[str, Any] = {
            "foreground_fraction": cfg.foreground_fraction,
            "slice_axis": plan.slice_axis,
            "flip_axes": cfg.flip_axes,
            "intensity_probability": cfg.intensity_probability,
            "seed": self.seed,
            "case_fields": train_fields,
        }
        patches = (
            WithUnlabelledPatches(
                train_x, train_y, plan.patch_size, samples, unlabelled=self._unlabelled_images(plan), **options
            )
            if self.uses_unlabelled
            else PatchDataset(train_x, train_y, plan.patch_size, samples, **options)
        )
        return patches, CaseDataset(val_x, val_y, case_fields=val_fields)

    def _prepare(self, cases: list[LoadedCase], plan: Plan) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Images and targets on the plan's grid; every rater's mask is the target of a system that uses them."""
        images = [preprocess_image(c.image, c.meta, plan) for c in cases]
        if self.uses_raters:
            return images, rater_targets([self.by_id[c.case_id] for c in cases], self.index, plan)
        return images, [encode_target(c, plan) for c in cases]

    def _unlabelled_images(self, plan: Plan) -> list[np.ndarray]:
        """The unlabelled images, preprocessed: the training cases whose labels the run does not use (read now,
        images only), then the images of ``cfg.unlabelled``."""
        cases = (load_checked_case(self.by_id[i], self.index, images_only=True) for i in self.split["train_unlabelled"])
        images = [preprocess_image(c.image, c.meta, plan) for c in cases]
        images += [preprocess_image(c.image, c.meta, plan) for c in self.folder_images]
        self.folder_images = []
        return images

    def build_system(self, plan: Plan) -> System:
        name = getattr(self.cfg, "system", "supervised")
        options = getattr(self.cfg, "system_options", {})
        system = registry.get("segmentation", name).for_run(plan, self.cfg, seed=self.seed, **options)
        self.uses_unlabelled = bool(system.uses_unlabelled)
        self.uses_raters = bool(system.uses_raters)
        if self.uses_unlabelled and not self.split["train_unlabelled"] and not self.folder_images:
            raise MedsslError(
                f"segmentation system {name!r} trains on unlabelled images, but this run has none: use "
                "--label-fraction below 1 (the training cases whose labels are not used) or give a folder of images "
                "with --set unlabelled=DIR (config option unlabelled)"
            )
        if self.cfg.unlabelled and not self.uses_unlabelled and is_main_process():
            console.print(
                f"[yellow]warning:[/yellow] unlabelled={self.cfg.unlabelled} is ignored: segmentation system "
                f"{name!r} does not train on unlabelled images",
                highlight=False,
                soft_wrap=True,
            )
        if self.init is not None:
            encoder = getattr(system.export().get("network"), "encoder", None)
            if not isinstance(encoder, nn.Module):
                raise MedsslError(f"--init: segmentation system {name!r} has no network encoder to load weights into")
            n = load_encoder(encoder, self.init)
            if is_main_process():
                console.print(f"[green]--init[/green]: loaded {n} encoder tensors from {self.init}")
        return system

    def finish(self, trained: TrainedRun) -> dict[str, Any]:
        """Score the test cases with the best checkpoint (the last one when no validation ran)."""
        note = None
        if trained.best_score is None:
            note = (
                f"no validation ran in {trained.steps} steps, so there is no best.ckpt and best_val_dice is null: "
                "the test cases were scored with the final weights (last.ckpt)"
                if trained.best_checkpoint is None
                else "val_dice was NaN at every validation (no foreground in the validation cases' truth or "
                "predictions), so best_val_dice is null and best.ckpt is the first validation's weights"
            )
            console.print(f"[yellow]note[/yellow]: {note}", highlight=False, soft_wrap=True)
        test = self.split["test"]
        if test:
            summary, files = evaluate_test_cases(
                load_trained_model(trained.run),
                (load_checked_case(self.by_id[i], self.index) for i in test),
                trained.run,
                overlap=self.cfg.sw_overlap,
                overlay_cases=self.cfg.overlay_cases,
                progress=trained.progress,
                n=len(test),
            )
            self.test_summary = summary
            trained.files.update(files)
        best = trained.best_checkpoint
        return {
            "best_checkpoint": str(best) if best else None,
            "best_val_dice": trained.best_score,
            **({"best_val_dice_note": note} if note else {}),
            "test_summary": self.test_summary,
        }


def _choose_split(
    ids: set[str],
    cfg: FinetuneConfig,
    saved: Path | None,
    split_file: str | Path | None,
    label_fraction: float,
    seed: int,
    *,
    leave_out: set[str] | None = None,
    held_out_from: set[str] | None = None,
) -> dict[str, Any]:
    """The run's split: the saved one (``--resume``), the ``--split`` file, or a seeded one made without the cases
    of ``leave_out`` (a given split just has them removed), its validation and test cases drawn from
    ``held_out_from`` when given (``make_split``)."""
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
            held_out_from=held_out_from,
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


__all__ = ["FinetuneResult", "TrainedModel", "run_finetune"]
