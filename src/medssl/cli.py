"""The ``medssl`` command: a thin typer layer over ``medssl.api``.

User mistakes (``MedsslError``) are printed as one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup, TyperOption

from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, default_of
from medssl.errors import MedsslError

# Placeholders in help texts -> the registry kind whose names replace them.
_REGISTERED = {
    "{pretrain_methods}": "pretraining",
    "{labelfree_methods}": "label-free",
    "{evaluation_protocols}": "evaluation",
}


class _HelpFixes:
    """Help output of every command: flags shown as flags (typer prints ``<bool>`` after them, as if they took a
    value), and the ``_REGISTERED`` placeholders in a help text replaced by the registered names of their kind,
    looked up only when help is shown (the registered modules import torch)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if isinstance(param, TyperOption) and param.is_flag:
                param.metavar = ""
            for placeholder, kind in _REGISTERED.items():
                if param.help and placeholder in param.help:
                    from medssl import registry

                    param.help = param.help.replace(placeholder, ", ".join(registry.names(kind)))
        super().format_help(ctx, formatter)  # type: ignore[misc]


class _Command(_HelpFixes, TyperCommand):
    pass


class _Group(_HelpFixes, TyperGroup):
    pass


_P = ParamSpec("_P")


def _resumable(command: Callable[_P, None]) -> Callable[_P, None]:
    """A training command stopped by SIGINT or SIGTERM (``medssl.engine.resume``) prints one line with the command
    that resumes it and exits 130 (SIGINT) or 143 (SIGTERM); Typer would exit 130 without a word."""

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt as exc:
            describe = getattr(exc, "describe", None)
            if describe is None:
                raise
            from medssl.engine.run_folder import is_main_process

            if is_main_process():  # DDP processes each stop; one line is enough
                err_console.print(describe(sys.argv), highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None

    return run


def _default(cls: type[Any], name: str) -> str:
    """``(default: <the dataclass default>)`` for the help of an option whose typer default is None because the
    config supplies it."""
    value = default_of(cls, name)
    shown = "none" if value is None else ",".join(map(str, value)) if isinstance(value, list) else value
    return f"(default: {shown}, or the --config file's {name})"


app = typer.Typer(
    cls=_Group,
    help="Label-efficient medical image segmentation in 2D and 3D.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(cls=_Group, help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(
    cls=_Group, help="Experiments that compare methods on the same splits.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")
out_console = Console()
err_console = Console(stderr=True)


def _version() -> str:
    try:
        return importlib.metadata.version("medssl")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        from medssl import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        out_console.print(f"medssl {_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Label-efficient medical image segmentation in 2D and 3D."""


Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier output of this command (never any other folder).")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
SkipBadCases = Annotated[
    bool,
    typer.Option(
        "--skip-bad-cases",
        help="Leave out the cases `medssl data check` reports (listed, and recorded in the run folder) instead of "
        "refusing the dataset.",
    ),
]
SkipBadInputs = Annotated[
    bool,
    typer.Option(
        "--skip-bad-inputs",
        help="Leave out the inputs that would be refused (unreadable, NaN/inf, wrong dimensionality or channels; "
        "listed at the end) instead of refusing them all.",
    ),
]


@data_app.command("check", cls=_Command)
def data_check(path: Annotated[Path, typer.Argument(help="Dataset folder.")]) -> None:
    """Report every problem in a dataset (unpaired files, shape or geometry mismatches, undeclared label values,
    NaN/inf, unreadable files, duplicate stems); exit 1 if there is any."""
    from medssl import api

    report = api.check_data(path)
    out_console.print(f"{path}: {report.layout or 'unknown'} layout, {report.n_cases} case(s)", highlight=False)
    for note in report.notes:
        out_console.print(f"  {note}", highlight=False, soft_wrap=True)
    if not report.ok:
        for p in report.problems:
            out_console.print(f"[red]✗[/red] {p}", highlight=False, soft_wrap=True)
        out_console.print(f"{len(report.problems)} problem(s) in {path}")
        raise typer.Exit(1)
    out_console.print("[green]✓[/green] no problems found")


@app.command(cls=_Command)
@_resumable
def finetune(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder (any labelled layout).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    label_fraction: Annotated[float, typer.Option("--label-fraction", help="Share of training labels used.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the labelled subset and training.")] = 0,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help=f"Optimiser steps {_default(FinetuneConfig, 'max_steps')}.")
    ] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Encoder weights to start from.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of FinetuneConfig options.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    devices: Annotated[str, typer.Option("--devices", help="Devices per node (DDP when > 1), or 'auto'.")] = "1",
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Nodes for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")] = "32-true",
    split: Annotated[Path | None, typer.Option("--split", help="JSON split file to use instead.")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option("--max-minutes", help=f"Wall-clock training limit {_default(FinetuneConfig, 'max_minutes')}."),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
) -> None:
    """Fine-tune a U-Net with Dice + cross-entropy, validate, and score the held-out test cases."""
    from medssl import api

    n_devices: int | str = int(devices) if devices.isdigit() else devices
    result = api.finetune(
        data,
        out,
        dims=dims,
        label_fraction=label_fraction,
        seed=seed,
        max_steps=max_steps,
        init=init,
        config=config,
        resume=resume,
        overwrite=overwrite,
        devices=n_devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        precision=precision,
        split_file=split,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
        max_minutes=max_minutes,
    )
    if result.test_summary:
        _print_summary(result.test_summary, f"test cases of {out}")
    out_console.print(f"run folder: {result.run_dir}")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command(cls=_Command)
@_resumable
def pretrain(
    data: Annotated[Path, typer.Option("--data", help="Image folder (unlabelled or any labelled layout).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    method: Annotated[str, typer.Option("--method", help="Pretraining method: {pretrain_methods}.")],
    preset: Annotated[
        str | None, typer.Option("--preset", help="Method preset, e.g. pgl's 'paper' (3D ResNet-50, for GPUs).")
    ] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help=f"Optimiser steps {_default(PretrainConfig, 'max_steps')}.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of PretrainConfig options.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, views and patches.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")] = "32-true",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
) -> None:
    """Self-supervised pretraining of a U-Net encoder; writes RUN/encoder.pt for `medssl finetune --init`
    (fine-tune with the same `channels`)."""
    from medssl import api

    result = api.pretrain(
        data,
        out,
        method=method,
        preset=preset,
        dims=dims,
        max_steps=max_steps,
        config=config,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
    )
    out_console.print(f"run folder: {result.run_dir} ({result.global_step} steps, final loss {result.final_loss})")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command(cls=_Command)
def predict(
    model: Annotated[Path, typer.Option("--model", help="Run folder of `medssl finetune`.")],
    input: Annotated[Path, typer.Option("--input", help="An image, a DICOM series folder, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the predictions.")],
    overlap: Annotated[float, typer.Option("--overlap", help="Sliding-window overlap of the tiles, in [0, 1).")] = 0.25,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_inputs: SkipBadInputs = False,
) -> None:
    """Sliding-window prediction; outputs named by input stem, with the input's geometry."""
    from medssl import api

    if not 0 <= overlap < 1:
        raise MedsslError(f"--overlap must be in [0, 1), not {overlap}")
    written = api.predict(
        model, input, out, overwrite=overwrite, overlap=overlap, quiet=quiet, skip_bad_inputs=skip_bad_inputs
    )
    out_console.print(f"wrote {len(written)} file(s) to {out}")


@app.command(cls=_Command)
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predictions.")],
    truth: Annotated[Path, typer.Option("--truth", help="Folder of ground truth (same stems).")],
    spacing_aware: Annotated[bool, typer.Option("--spacing-aware", help="Distances in mm where known.")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Surface Dice tolerance (mm or px).")] = 1.0,
    out: Annotated[Path | None, typer.Option("--out", help="JSON file to write (CSV beside it).")] = None,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="Evaluation protocol: {evaluation_protocols}. label-map scores label maps as they are; the others "
            "pick one cluster of each `medssl segment` cluster map (`medssl list evaluation` says how).",
        ),
    ] = "label-map",
    images: Annotated[Path | None, typer.Option("--images", help="Images (same stems), for protocol darkest.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Per case and structure: Dice, HD95, Hausdorff, normalised surface Dice, XOR."""
    from medssl import api

    result = api.evaluate(
        pred,
        truth,
        spacing_aware=spacing_aware,
        tolerance=tolerance,
        out=out,
        protocol=protocol,
        images=images,
        overwrite=overwrite,
    )
    from medssl.labelfree.cluster_evaluation import metric_names

    metrics = None if protocol == "label-map" else list(metric_names(protocol))
    title = f"{pred} vs {truth}" + ("" if protocol == "label-map" else f" ({protocol} protocol)")
    _print_summary(result["summary"], title, metrics)
    if out is not None:
        out_console.print(f"wrote {out} and {Path(out).with_suffix('.csv')}")


@app.command(cls=_Command)
def segment(
    input: Annotated[Path, typer.Option("--input", help="An image or a folder of 2D images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the cluster maps.")],
    method: Annotated[
        str, typer.Option("--method", help="Label-free method: {labelfree_methods} (`medssl list label-free`).")
    ] = "s3",
    clusters: Annotated[int | None, typer.Option("--clusters", help="Number of clusters K (default 2).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of S3Config/KMeansConfig options.")] = None,
    select: Annotated[
        str | None, typer.Option("--select", help="Also write the cluster a rule picks: border or darkest.")
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_inputs: SkipBadInputs = False,
) -> None:
    """Annotation-free segmentation: one cluster map per image (same stem and size; 1..K from darkest to
    brightest, 0 outside the field of view), overlays, and the settings used."""
    from medssl import api

    result = api.segment(
        input,
        out,
        method=method,
        clusters=clusters,
        config=config,
        select=select,
        overwrite=overwrite,
        quiet=quiet,
        skip_bad_inputs=skip_bad_inputs,
    )
    seconds = [r["seconds"] for r in result.records]
    out_console.print(
        f"wrote {len(result.maps)} cluster map(s) to {result.out_dir} "
        f"({sum(seconds) / max(len(seconds), 1):.2f} s per image); overlays in {result.out_dir / 'overlays'}"
    )


@app.command("list", cls=_Command)
def list_registered(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="Only this kind: pretraining, segmentation, label-free, evaluation or super-resolution.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """What is registered, per kind (pretraining methods, segmentation systems, label-free methods, evaluation
    protocols), with one line on each."""
    from medssl import registry

    for shown in registry.kinds() if kind is None else [kind]:
        entries = registry.names(shown)  # an unknown kind is refused with the known ones
        out_console.print(f"[bold]{shown}[/bold] (used by: {registry.used_by(shown)})", highlight=False)
        if not entries:
            out_console.print("  none registered yet", highlight=False)
        width = max((len(name) for name in entries), default=0)
        for name in entries:
            line = f"  {name.ljust(width)}  {registry.describe(shown, name)}"
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command(cls=_Command)
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's dataset and run.")] = Path("medssl-demo"),
    max_steps: Annotated[int, typer.Option("--max-steps", help="Training steps.")] = 300,
    overwrite: Overwrite = False,
) -> None:
    """End-to-end on real data that ships with the install (MNI ICBM152 T1 with grey/white-matter maps):
    fine-tune on some slices, predict the held-out ones, evaluate, and say where everything is."""
    from medssl.demo import run_demo

    report = run_demo(out, max_steps=max_steps, overwrite=overwrite)
    out_console.print(report)


@experiment_app.command("label-efficiency", cls=_Command)
@_resumable
def label_efficiency(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Experiment folder to create.")],
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Comma-separated: random and pretraining methods ({pretrain_methods}) "
            f"{_default(LabelEfficiencyConfig, 'methods')}.",
        ),
    ] = None,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions", help=f"Comma-separated label fractions {_default(LabelEfficiencyConfig, 'fractions')}."
        ),
    ] = None,
    seeds: Annotated[
        int | None,
        typer.Option(
            "--seeds",
            help=f"Fine-tuning seeds per method and fraction {_default(LabelEfficiencyConfig, 'seeds')}.",
        ),
    ] = None,
    pretrain_steps: Annotated[
        int | None,
        typer.Option(
            "--pretrain-steps", help=f"Steps per pretraining {_default(LabelEfficiencyConfig, 'pretrain_steps')}."
        ),
    ] = None,
    finetune_steps: Annotated[
        int | None,
        typer.Option(
            "--finetune-steps", help=f"Steps per fine-tuning {_default(LabelEfficiencyConfig, 'finetune_steps')}."
        ),
    ] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of LabelEfficiencyConfig options.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help=f"32-true, bf16-mixed, 16-mixed {_default(LabelEfficiencyConfig, 'precision')}.",
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
    from medssl.engine.experiment_report import spread_text

    result = api.label_efficiency(
        data,
        out,
        methods=_split_list(methods, str, "--methods"),
        fractions=_split_list(fractions, float, "--fractions"),
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
    table = Table(title=f"test Dice, {out}")
    for column in ("method", "labels", "seeds", "mean ± std", "vs random", "p (seeds)", "p (cases)", "wins"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in result.summary:
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
    out_console.print(table)
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


def _split_list(text: str | None, kind: type[Any], option: str) -> list[Any] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise MedsslError(f"{option} must be a comma-separated list of {kind.__name__} values, not {text!r}") from None


def _print_summary(summary: dict[str, dict[str, Any]], title: str, metrics: list[str] | None = None) -> None:
    table = Table(title=title)
    metrics = metrics or ["dice", "hd95", "hd", "nsd", "xor"]
    table.add_column("label")
    for m in metrics:
        table.add_column(m, justify="right")
    for label, values in summary.items():
        table.add_row(label, *[_fmt(values.get(m)) for m in metrics])
    out_console.print(table)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else json.dumps(v)


def main() -> None:
    """Entry point: run the app, turning user errors into one message."""
    try:
        app()
    except MedsslError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
