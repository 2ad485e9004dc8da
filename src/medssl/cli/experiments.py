"""``medssl experiment``: experiments that compare methods on the same splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medssl.cli.common import (
    Command,
    ConfigFile,
    Overwrite,
    Quiet,
    SkipBadCases,
    config_default,
    experiment_app,
    out_console,
    resumable,
    split_list,
)
from medssl.config import LabelEfficiencyConfig


@experiment_app.command("label-efficiency", cls=Command)
@resumable
def label_efficiency(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Experiment folder to create.")],
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Comma-separated: random and pretraining methods ({pretrain_methods}) "
            f"{config_default(LabelEfficiencyConfig, 'methods')}.",
        ),
    ] = None,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions", help=f"Comma-separated label fractions {config_default(LabelEfficiencyConfig, 'fractions')}."
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            help=f"Fine-tuning seeds per method and fraction {config_default(LabelEfficiencyConfig, 'seeds')}.",
        ),
    ] = None,
    pretrain_steps: Annotated[
        int | None,
        typer.Option(
            "--pretrain-steps", help=f"Steps per pretraining {config_default(LabelEfficiencyConfig, 'pretrain_steps')}."
        ),
    ] = None,
    finetune_steps: Annotated[
        int | None,
        typer.Option(
            "--finetune-steps", help=f"Steps per fine-tuning {config_default(LabelEfficiencyConfig, 'finetune_steps')}."
        ),
    ] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    config: ConfigFile = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help=f"32-true, bf16-mixed, 16-mixed {config_default(LabelEfficiencyConfig, 'precision')}.",
        ),
    ] = None,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue: finished runs are kept.")] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
) -> None:
    """Pretrain each method once on the training images (no labels), fine-tune every method x label fraction x
    seed on the same split, score the same test cases, and write a table and a plot."""
    from medssl import api

    result = api.label_efficiency(
        data,
        out,
        methods=split_list(methods, str, "--methods"),
        fractions=split_list(fractions, float, "--fractions"),
        seeds=seeds,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        config=config,
        dims=dims,
        precision=precision,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
    )
    out_console.print(_experiment_table(result.summary, out))
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


def _experiment_table(summary: list[dict[str, Any]], out: Path) -> Table:
    """The experiment's summary as a table: mean Dice per method and label fraction, the gain over random with its
    paired tests."""
    from medssl.engine.experiment_report import spread_text

    table = Table(title=f"test Dice, {out}")
    for column in ("method", "labels", "seeds", "mean ± std", "vs random", "p (seeds)", "p (cases)", "wins"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in summary:
        diff = row["diff_vs_random"]
        table.add_row(
            row["method"],
            f"{100 * row['fraction']:g}%",
            str(row["n_seeds"]),
            f"{row['mean_dice']:.4f}{spread_text(row['std_dice'])}",
            "-" if diff is None else f"{100 * diff:+.2f}{spread_text(row['diff_std'], 2, 100)} pt",
            "-" if row["p_seeds"] is None else f"{row['p_seeds']:.3g}",
            "-" if row["p_wilcoxon"] is None else f"{row['p_wilcoxon']:.3g}",
            "-" if row["wins"] is None else f"{100 * row['wins']:.0f}%",
        )
    return table
