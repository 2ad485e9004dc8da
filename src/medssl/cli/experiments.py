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
from medssl.errors import MedsslError

Fractions = Annotated[
    str | None,
    typer.Option(
        "--fractions",
        help="Comma-separated label fractions, when --labelled is not given "
        f"{config_default(LabelEfficiencyConfig, 'fractions')}.",
    ),
]
Labelled = Annotated[
    str | None,
    typer.Option(
        "--labelled",
        help="Comma-separated numbers of labelled training cases, 'all' for every one (e.g. 1,2,5,10,20,all); "
        f"used instead of --fractions {config_default(LabelEfficiencyConfig, 'labelled')}.",
    ),
]


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
    fractions: Fractions = None,
    labelled: Labelled = None,
    seeds: Annotated[
        int | None,
        typer.Option("--seeds", help=f"Seeds per method and amount {config_default(LabelEfficiencyConfig, 'seeds')}."),
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
            "--finetune-steps",
            help="Most steps per fine-tuning (each stops at a validation plateau, see the config's patience) "
            f"{config_default(LabelEfficiencyConfig, 'finetune_steps')}.",
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
    """Pretrain each method once on the training images (no labels), fine-tune every method x number of labelled
    cases (or label fraction) x seed on the same split to a validation plateau, score the same test cases, and
    write a table, a plot and experiment.json."""
    from medssl import api

    amounts = _amounts(labelled, split_list(fractions, float, "--fractions"))
    result = api.label_efficiency(
        data, out, methods=split_list(methods, str, "--methods"), labelled=amounts.get("labelled"),
        fractions=amounts.get("fractions"), seeds=seeds, pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps, config=config, dims=dims, precision=precision, resume=resume,
        overwrite=overwrite, accelerator=accelerator, quiet=quiet, skip_bad_cases=skip_bad_cases,
    )  # fmt: skip
    out_console.print(_experiment_table(result.summary, out))
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


def _amounts(labelled: str | None, fractions: list[float] | None) -> dict[str, Any]:
    """``{"labelled": [...]}`` or ``{"fractions": [...]}`` from the command line (empty: the config's).

    Raises:
        MedsslError: both options, or a --labelled item that is neither a whole number nor ``all``.
    """
    if labelled is not None and fractions is not None:
        raise MedsslError("give --labelled (numbers of cases) or --fractions (shares of the cases), not both")
    if fractions is not None:
        return {"fractions": fractions}
    if labelled is None:
        return {}
    items = [t.strip() for t in labelled.split(",") if t.strip()]
    if not items or not all(t == "all" or t.isdigit() for t in items):
        raise MedsslError(f"--labelled must be a comma-separated list of numbers of cases or all, not {labelled!r}")
    return {"labelled": [t if t == "all" else int(t) for t in items]}


def _experiment_table(summary: list[dict[str, Any]], out: Path) -> Table:
    """The experiment's summary as a table: mean Dice per method and amount of labels, the steps taken, the gain
    over random with its paired tests and bootstrap interval."""
    from medssl.engine.experiment_report import spread_text

    table = Table(title=f"test Dice, {out}")
    columns = (
        "method",
        "labels",
        "seeds",
        "steps",
        "mean ± std",
        "vs random",
        "95% CI",
        "p (seeds)",
        "p (cases)",
        "wins",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in summary:
        diff = row["diff_vs_random"]
        table.add_row(
            row["method"],
            f"{100 * row['fraction']:g}%" if row.get("labelled") is None else str(row["labelled"]),
            str(row["n_seeds"]),
            f"{row['mean_steps']:.0f}" if row.get("mean_steps") is not None else "-",
            f"{row['mean_dice']:.4f}{spread_text(row['std_dice'])}",
            "-" if diff is None else f"{100 * diff:+.2f}{spread_text(row['diff_std'], 2, 100)} pt",
            "-" if row.get("ci_low") is None else f"[{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]",
            "-" if row["p_seeds"] is None else f"{row['p_seeds']:.3g}",
            "-" if row["p_wilcoxon"] is None else f"{row['p_wilcoxon']:.3g}",
            "-" if row["wins"] is None else f"{100 * row['wins']:.0f}%",
        )
    return table
