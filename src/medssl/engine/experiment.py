"""The label-efficiency experiment: pretrain each method once, fine-tune every method x amount of labels x seed on
the same seeded split, and compare on the same held-out test cases.

The amount of labels is a number of labelled training cases N (``labelled``; ``all`` = every training case) or a
share of them (``fractions``). A run with N cases fine-tunes with ``label_fraction = N / n_train``, which labels
exactly N cases of the seeded permutation of the training cases (``medssl.data.split.make_split``): the N = 2
cases of a seed are among its N = 5 cases, and the validation and test cases depend on ``split_seed`` only. Every
fine-tune stops at a validation plateau (``patience``) or at ``finetune_steps``, with the same schedule for every
method.

Folder layout of an experiment ``OUT``::

    OUT/experiment.yaml         resolved LabelEfficiencyConfig
    OUT/split.json              the train / val / test cases every run shares
    OUT/plan.json               the shared plan (patch size, widths, batch) of the training images
    OUT/pretrain/<method>/      one ``medssl pretrain`` run folder per method (training images only)
    OUT/finetune/<method>/n<N>_seed<k>/   one ``medssl finetune`` run folder per run (n005_seed0, nall_seed0),
                                          or <method>/frac<fraction>_seed<k>/ in an experiment by fractions
    OUT/runs.csv|json, OUT/summary.csv|json, OUT/label_efficiency.png   (``experiment_report``)
    OUT/experiment.json   settings, every run (steps, why it stopped, validation curve, per-case test Dice), the
                          summary, the crossover and each pretraining run's loss movement

Finished runs (their ``result.json`` exists) are never repeated, so ``--resume`` continues an interrupted
experiment where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve, save_config
from medssl.data.layouts import discover
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_cases, load_image_channels, print_skipped
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.data.split import make_split, save_split
from medssl.engine.experiment_report import (
    ALL,
    RANDOM,
    Amount,
    RunRecord,
    pretraining_records,
    read_run,
    run_name,
    write_report,
)
from medssl.engine.finetune import labelled_index, run_finetune
from medssl.engine.partial_labels import fully_annotated
from medssl.engine.pretraining import run_pretrain
from medssl.engine.run_folder import console, prepare_output_dir, progress_bar
from medssl.errors import MedsslError

__all__ = [
    "ALL",
    "Amount",
    "ExperimentResult",
    "amounts",
    "check_experiment_config",
    "run_label_efficiency",
    "run_name",
]

# Settings of every run that the experiment sets once, at its top level.
_TOP_LEVEL = ("max_steps", "patch_size", "channels", "method", "target_spacing", "patience", "min_delta")


@dataclass
class ExperimentResult:
    """What an experiment produced: its folder, one record per fine-tuning run, the summary rows and files."""

    out: Path
    runs: list[RunRecord]
    summary: list[dict[str, Any]]
    files: dict[str, str]


def amounts(cfg: LabelEfficiencyConfig, n_train: int) -> list[Amount]:
    """The amounts of labels of the experiment: ``labelled`` (N / n_train labels exactly N cases), else
    ``fractions``.

    Raises:
        MedsslError: a number of cases above ``n_train``, or one equal to it beside ``all``.
    """
    if cfg.labelled is None:
        return [Amount(f) for f in cfg.fractions]
    too_many = [n for n in cfg.labelled if n != ALL and int(n) > n_train]
    if too_many:
        raise MedsslError(
            f"labelled {too_many[0]} is more than the {n_train} training cases of the split; "
            f"use at most {n_train}, or {ALL}"
        )
    if ALL in cfg.labelled and n_train in cfg.labelled:
        raise MedsslError(f"labelled {n_train} and {ALL} are the same {n_train} training cases; give one of them")
    return [
        Amount(1.0, n_train, True) if n == ALL else Amount(int(n) / n_train, int(n))
        for n in sorted(cfg.labelled, key=lambda n: n_train if n == ALL else int(n))
    ]


def check_experiment_config(cfg: LabelEfficiencyConfig) -> None:
    """Refuse settings that cannot run, naming the bad value, before any work starts.

    Raises:
        MedsslError: unknown or repeated method, fraction outside (0, 1] or repeated, a labelled count below 1 or
            repeated, fewer than one seed or step, or an unknown pretraining/fine-tuning option.
    """
    from medssl.pretrain import names

    known = [RANDOM, *names()]
    if not cfg.methods:
        raise MedsslError(f"give at least one method; known: {', '.join(known)}")
    for method in cfg.methods:
        if method not in known:
            raise MedsslError(f"unknown method {method!r}; known: {', '.join(known)}")
    if len(set(cfg.methods)) != len(cfg.methods):
        raise MedsslError(f"methods repeat: {', '.join(cfg.methods)}")
    if not cfg.fractions or any(not 0 < f <= 1 for f in cfg.fractions):
        raise MedsslError(f"fractions must be in (0, 1], got {cfg.fractions}")
    if len(set(cfg.fractions)) != len(cfg.fractions):
        raise MedsslError(f"fractions repeat: {cfg.fractions}")
    if cfg.labelled is not None:
        _check_labelled(cfg.labelled)
    for what, value in (("seeds", cfg.seeds), ("pretrain_steps", cfg.pretrain_steps)):
        if value < 1:
            raise MedsslError(f"{what} must be at least 1, not {value}")
    if cfg.finetune_steps < 1:
        raise MedsslError(f"finetune_steps must be at least 1, not {cfg.finetune_steps}")
    unknown = set(cfg.method_options) - set(cfg.methods)
    if unknown:
        raise MedsslError(f"method_options for methods not in the experiment: {', '.join(sorted(unknown))}")
    _finetune_config(cfg)  # unknown fine-tuning options fail here
    resolve(PretrainConfig, None, **cfg.pretrain)
    for shared in _TOP_LEVEL:
        if shared in cfg.pretrain or shared in cfg.finetune:
            top = "finetune_steps or pretrain_steps" if shared == "max_steps" else shared
            raise MedsslError(f"set {top!r} at the top level of the experiment config, not per stage")


def _check_labelled(labelled: Sequence[int | str]) -> None:
    if not labelled or any(n != ALL and (isinstance(n, str) or n < 1) for n in labelled):
        raise MedsslError(f"labelled must be numbers of cases of at least 1, or {ALL}; got {labelled}")
    if len(set(labelled)) != len(labelled):
        raise MedsslError(f"labelled counts repeat: {labelled}")


def run_label_efficiency(
    data: str | Path,
    out: str | Path,
    cfg: LabelEfficiencyConfig,
    *,
    dims: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    quiet: bool = False,
    skip_bad_cases: bool = False,
) -> ExperimentResult:
    """Run (or continue) the label-efficiency experiment on a labelled dataset.

    Args:
        data: labelled dataset folder (any supported labelled layout).
        out: experiment folder (created; an existing one needs ``overwrite`` or ``resume``).
        cfg: resolved settings (``check_experiment_config`` is applied).
        dims: 2 or 3 (default: the data's).
        resume: continue an experiment: finished runs are kept, interrupted ones resume from their checkpoint.
        overwrite: wipe an existing experiment folder first.
        accelerator: Lightning accelerator of every run.
        quiet: no progress bars.
        skip_bad_cases: leave out the cases ``medssl data check`` would report instead of refusing the dataset.

    Returns:
        The records of every fine-tuning run and the summary table (see ``experiment_report.summarize_runs``).
    """
    check_experiment_config(cfg)
    if resume and (Path(out) / "experiment.yaml").is_file():
        _check_same_settings(Path(out), cfg)
    ft_cfg = _finetune_config(cfg)
    split = _checked_split(data, ft_cfg, quiet=quiet, skip_bad_cases=skip_bad_cases)
    grid = amounts(cfg, len(split["train"]))  # a count above the training cases fails here, before any work
    # Only now, with the data and the split checked: a user error must not wipe what --overwrite replaces.
    root = prepare_output_dir(out, kind="experiment", overwrite=overwrite, resume=resume, inputs=(data,))
    save_config(cfg, root / "experiment.yaml")
    save_split(split, root / "split.json")
    plan = _shared_plan(data, split["train"], cfg, dims, root / "plan.json", quiet)
    shared = {"batch_size": plan.batch_size, "patch_size": list(plan.patch_size), "channels": list(plan.channels)}
    encoders = _pretrain_all(data, root, split["train"], cfg, shared, dims, accelerator, quiet)
    ft_cfg = dataclasses.replace(ft_cfg, **{**shared, **{k: v for k, v in cfg.finetune.items() if k in shared}})
    records = _finetune_all(
        data,
        root,
        cfg,
        ft_cfg,
        encoders,
        grid,
        dims=plan.spatial_dims,
        accelerator=accelerator,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
    )
    extra = {
        "settings": dataclasses.asdict(cfg),
        "n_train": len(split["train"]),
        "test_cases": split["test"],
        "pretraining": pretraining_records(root, cfg.methods),
    }
    summary, files = write_report(records, root, extra)
    return ExperimentResult(root, records, summary, files)


def _checked_split(data: str | Path, ft_cfg: FinetuneConfig, *, quiet: bool, skip_bad_cases: bool) -> dict[str, Any]:
    """The train / val / test split every run shares, made from the cases that pass the data check.

    Raises:
        MedsslError: a bad case (unless ``skip_bad_cases``) or a split without a test case.
    """
    index = labelled_index(data)
    # Every case is checked before the split and any pretraining, so that a bad case cannot stop the experiment
    # hours later; one more reading of the data beside the many of its runs.
    bad = load_checked_cases(index, index.cases, keep=(), progress=progress_bar(quiet)).bad
    if bad and not skip_bad_cases:
        raise bad_cases_error(data, bad)
    print_skipped(bad)
    ids = sorted(c.case_id for c in index.cases if c.case_id not in bad)
    split = make_split(
        ids,
        test_fraction=ft_cfg.test_fraction,
        val_fraction=ft_cfg.val_fraction,
        split_seed=ft_cfg.split_seed,
        held_out_from=fully_annotated(index),  # partially labelled data: only fully annotated cases are scored
    )
    if not split["test"]:
        raise MedsslError("the split has no test case; raise test_fraction in the finetune options or add cases")
    return split


def _finetune_all(
    data: str | Path,
    root: Path,
    cfg: LabelEfficiencyConfig,
    ft_cfg: FinetuneConfig,
    encoders: dict[str, Path | None],
    grid: list[Amount],
    *,
    dims: int,
    accelerator: str,
    quiet: bool,
    skip_bad_cases: bool,
) -> list[RunRecord]:
    """Fine-tune every amount of labels x seed x method (skipping finished runs) and read back each run's record.

    Raises:
        MedsslError: a run labelled another number of cases than its amount asks for.
    """
    jobs = [(m, a, s) for a in grid for s in range(cfg.seeds) for m in cfg.methods]
    records: list[RunRecord] = []
    for k, (method, amount, seed) in enumerate(jobs, 1):
        run = root / "finetune" / method / amount.name(seed)
        if not (run / "result.json").is_file():
            console.print(f"[{k}/{len(jobs)}] fine-tuning {method}, {amount}, seed {seed}")
            run_finetune(
                data,
                run,
                ft_cfg,
                dims=dims,
                label_fraction=amount.fraction,
                seed=seed,
                init=encoders[method],
                resume=run.is_dir() and any(run.iterdir()),
                accelerator=accelerator,
                precision=cfg.precision,
                quiet=quiet,
                skip_bad_cases=skip_bad_cases,
            )
        if amount.labelled is not None:
            _check_labelled_cases(run, amount.labelled)
        record = read_run(run, method, amount.fraction, seed, amount.labelled)
        if not quiet:
            console.print(
                f"[{k}/{len(jobs)}] {method}, {amount}, seed {seed}: mean test Dice {record.mean_dice:.4f} "
                f"after {record.steps} steps ({record.stopped})"
            )
        records.append(record)
    return records


def _check_labelled_cases(run: Path, wanted: int) -> None:
    """The run's split labels exactly the N cases its folder is named after (N / n_train is exact in split.py)."""
    got = len(json.loads((run / "split.json").read_text())["train_labelled"])
    if got != wanted:
        raise MedsslError(f"run {run} labelled {got} training cases instead of {wanted}; use a new --out folder")


def _finetune_config(cfg: LabelEfficiencyConfig) -> FinetuneConfig:
    """Every fine-tune's settings: the stage options, and the plateau schedule and spacing set at the top level
    (``finetune.val_interval`` takes the place of the top-level one)."""
    top = {"patience": cfg.patience, "min_delta": cfg.min_delta, "target_spacing": cfg.target_spacing}
    options = {"val_interval": cfg.val_interval, **cfg.finetune, **top, "max_steps": cfg.finetune_steps}
    return resolve(FinetuneConfig, None, **options)


def _check_same_settings(root: Path, cfg: LabelEfficiencyConfig) -> None:
    """A resumed experiment must keep the settings its finished runs were made with (more methods, fractions,
    labelled counts or seeds may be added; an experiment by fractions stays one, and one by cases too)."""
    before = resolve(LabelEfficiencyConfig, root / "experiment.yaml")
    if (before.labelled is None) != (cfg.labelled is None):
        was, now = ("fractions", "labelled") if before.labelled is None else ("labelled", "fractions")
        raise MedsslError(f"--resume of an experiment by {was} with {now} would mix amounts; use a new --out folder")
    fixed = (
        "pretrain_steps",
        "finetune_steps",
        "val_interval",
        "patience",
        "min_delta",
        "target_spacing",
        "batch_size",
        "patch_size",
        "channels",
        "precision",
        "pretrain",
        "finetune",
    )
    changed = [f for f in fixed if getattr(before, f) != getattr(cfg, f)]
    if changed:
        raise MedsslError(
            f"--resume with different settings ({', '.join(changed)}) would mix runs made differently; "
            "use a new --out folder"
        )


def _shared_plan(
    data: str | Path, train_ids: list[str], cfg: LabelEfficiencyConfig, dims: int | None, path: Path, quiet: bool
) -> Plan:
    """One plan for every run, from the training images, so that pretrained encoders fit every U-Net."""
    if path.is_file():
        return Plan.load(path)
    index = discover(data)
    wanted = set(train_ids)
    progress = progress_bar(quiet)
    loaded = [
        LoadedCase(c.case_id, *load_image_channels(c.images))
        for c in progress([c for c in index.cases if c.case_id in wanted], "planning")
    ]
    plan = make_plan(
        compute_fingerprint(loaded, index.modality),
        spatial_dims=dims,
        patch_size=cfg.patch_size,
        channels=cfg.channels,
        batch_size=cfg.batch_size,
        require_labels=False,
        target_spacing=cfg.target_spacing,
    )
    plan.save(path)
    return plan


def _pretrain_all(
    data: str | Path,
    root: Path,
    train_ids: list[str],
    cfg: LabelEfficiencyConfig,
    shared: dict[str, Any],
    dims: int | None,
    accelerator: str,
    quiet: bool,
) -> dict[str, Path | None]:
    """Pretrain every method once on the training images (a finished run is kept, an interrupted one resumed);
    method -> its encoder (None for ``random``)."""
    encoders: dict[str, Path | None] = {RANDOM: None}
    stage = {k: v for k, v in cfg.pretrain.items() if k != "method_options"}  # per method: cfg.method_options
    stage |= {k: v for k, v in shared.items() if k not in cfg.pretrain} | {"target_spacing": cfg.target_spacing}
    for method in [m for m in cfg.methods if m != RANDOM]:
        run = root / "pretrain" / method
        encoder = run / "encoder.pt"
        if (run / "result.json").is_file() and encoder.is_file():
            encoders[method] = encoder
            continue
        console.print(f"pretraining {method} on {len(train_ids)} training images ({cfg.pretrain_steps} steps)")
        settings = resolve(PretrainConfig, None, **stage, method=method, max_steps=cfg.pretrain_steps)
        settings = dataclasses.replace(settings, method_options=dict(cfg.method_options.get(method, {})))
        result = run_pretrain(
            data,
            run,
            settings,
            dims=dims,
            cases=train_ids,
            resume=run.is_dir() and any(run.iterdir()),
            accelerator=accelerator,
            precision=cfg.precision,
            quiet=quiet,
        )
        if result.encoder is None:
            raise MedsslError(f"pretraining {method} wrote no encoder in {run}")
        encoders[method] = result.encoder
    return encoders
