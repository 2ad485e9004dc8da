"""The label-efficiency experiment: pretrain each method once, fine-tune every method x label fraction x seed on
the same seeded split, and compare on the same held-out test cases.

Folder layout of an experiment ``OUT``::

    OUT/experiment.yaml         resolved LabelEfficiencyConfig
    OUT/split.json              the train / val / test cases every run shares
    OUT/plan.json               the shared plan (patch size, widths, batch) of the training images
    OUT/pretrain/<method>/      one ``medssl pretrain`` run folder per method (training images only)
    OUT/finetune/<method>/<fraction>_seed<k>/   one ``medssl finetune`` run folder per run
    OUT/runs.csv|json, OUT/summary.csv|json, OUT/label_efficiency.png   (``experiment_report``)

Finished runs (their ``result.json`` exists) are never repeated, so ``--resume`` continues an interrupted
experiment where it stopped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve, save_config
from medssl.data.layouts import discover
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_cases, load_image_channels, print_skipped
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.data.split import make_split, save_split
from medssl.engine.experiment_report import RANDOM, RunRecord, read_run, write_report
from medssl.engine.finetune import labelled_index, run_finetune
from medssl.engine.partial_labels import fully_annotated
from medssl.engine.pretraining import run_pretrain
from medssl.engine.run_folder import console, prepare_output_dir, progress_bar
from medssl.errors import MedsslError

__all__ = ["ExperimentResult", "check_experiment_config", "run_label_efficiency", "run_name"]


@dataclass
class ExperimentResult:
    """What an experiment produced: its folder, one record per fine-tuning run, the summary rows and files."""

    out: Path
    runs: list[RunRecord]
    summary: list[dict[str, Any]]
    files: dict[str, str]


def run_name(fraction: float, seed: int) -> str:
    """Folder name of one fine-tuning run, e.g. ``frac0.05_seed2``."""
    return f"frac{fraction:g}_seed{seed}"


def check_experiment_config(cfg: LabelEfficiencyConfig) -> None:
    """Refuse settings that cannot run, naming the bad value, before any work starts.

    Raises:
        MedsslError: unknown or repeated method, fraction outside (0, 1] or repeated, fewer than one seed or step,
            or an unknown pretraining/fine-tuning option.
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
    for shared in ("max_steps", "patch_size", "channels", "method"):
        if shared in cfg.pretrain or shared in cfg.finetune:
            raise MedsslError(f"set {shared!r} at the top level of the experiment config, not per stage")


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
    # Only now, with the data and the split checked: a user error must not wipe what --overwrite replaces.
    root = prepare_output_dir(out, kind="experiment", overwrite=overwrite, resume=resume, inputs=(data,))
    save_config(cfg, root / "experiment.yaml")
    save_split(split, root / "split.json")
    plan = _shared_plan(data, split["train"], cfg, dims, root / "plan.json", quiet)
    shared: dict[str, Any] = {
        "batch_size": plan.batch_size,
        "patch_size": list(plan.patch_size),
        "channels": list(plan.channels),
    }
    encoders = _pretrain_all(data, root, split["train"], cfg, shared, dims, accelerator, quiet)
    ft_cfg = dataclasses.replace(ft_cfg, **{**shared, **{k: v for k, v in cfg.finetune.items() if k in shared}})
    records = _finetune_all(
        data,
        root,
        cfg,
        ft_cfg,
        encoders,
        dims=plan.spatial_dims,
        accelerator=accelerator,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
    )
    summary, files = write_report(records, root)
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
    *,
    dims: int,
    accelerator: str,
    quiet: bool,
    skip_bad_cases: bool,
) -> list[RunRecord]:
    """Fine-tune every fraction x seed x method (skipping finished runs) and read back each run's record."""
    jobs = [(m, f, s) for f in cfg.fractions for s in range(cfg.seeds) for m in cfg.methods]
    records: list[RunRecord] = []
    for k, (method, fraction, seed) in enumerate(jobs, 1):
        run = root / "finetune" / method / run_name(fraction, seed)
        if not (run / "result.json").is_file():
            console.print(f"[{k}/{len(jobs)}] fine-tuning {method}, {fraction:g} of the labels, seed {seed}")
            run_finetune(
                data,
                run,
                ft_cfg,
                dims=dims,
                label_fraction=fraction,
                seed=seed,
                init=encoders[method],
                resume=run.is_dir() and any(run.iterdir()),
                accelerator=accelerator,
                precision=cfg.precision,
                quiet=quiet,
                skip_bad_cases=skip_bad_cases,
            )
        record = read_run(run, method, fraction, seed)
        if not quiet:
            console.print(f"[{k}/{len(jobs)}] {method} {fraction:g} seed {seed}: mean test Dice {record.mean_dice:.4f}")
        records.append(record)
    return records


def _finetune_config(cfg: LabelEfficiencyConfig) -> FinetuneConfig:
    return resolve(FinetuneConfig, None, **{**cfg.finetune, "max_steps": cfg.finetune_steps})


def _check_same_settings(root: Path, cfg: LabelEfficiencyConfig) -> None:
    """A resumed experiment must keep the settings its finished runs were made with (more methods, fractions or
    seeds may be added)."""
    before = resolve(LabelEfficiencyConfig, root / "experiment.yaml")
    fixed = (
        "pretrain_steps",
        "finetune_steps",
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
    stage |= {k: v for k, v in shared.items() if k not in cfg.pretrain}
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
