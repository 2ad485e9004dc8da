"""The ``medssl`` command: a thin typer layer over ``medssl.api``.

User mistakes (``MedsslError``) are printed as one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medssl.errors import MedsslError

app = typer.Typer(
    help="Label-efficient medical image segmentation in 2D and 3D.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out_console = Console()
err_console = Console(stderr=True)

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


@data_app.command("check")
def data_check(path: Annotated[Path, typer.Argument(help="Dataset folder.")]) -> None:
    """Report every problem in a dataset (unpaired files, shape or geometry mismatches, undeclared label values,
    NaN/inf, unreadable files, duplicate stems); exit 1 if there is any."""
    from medssl import api

    report = api.check_data(path)
    out_console.print(f"{path}: {report.layout or 'unknown'} layout, {report.n_cases} case(s)", highlight=False)
    if not report.ok:
        for p in report.problems:
            out_console.print(f"[red]✗[/red] {p}", highlight=False, soft_wrap=True)
        out_console.print(f"{len(report.problems)} problem(s) in {path}")
        raise typer.Exit(1)
    out_console.print("[green]✓[/green] no problems found")


@app.command()
def finetune(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder (MSD, paired, suffix layouts).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    label_fraction: Annotated[float, typer.Option("--label-fraction", help="Share of training labels used.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the labelled subset and training.")] = 0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimiser steps.")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Encoder weights to start from.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of FinetuneConfig options.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    devices: Annotated[str, typer.Option("--devices", help="Devices per node (DDP when > 1), or 'auto'.")] = "1",
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Nodes for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu, ...")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")] = "32-true",
    split: Annotated[Path | None, typer.Option("--split", help="JSON split file to use instead.")] = None,
    max_minutes: Annotated[float | None, typer.Option("--max-minutes", help="Wall-clock training limit.")] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
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
        max_minutes=max_minutes,
    )
    if result.test_summary:
        _print_summary(result.test_summary, f"test cases of {out}")
    out_console.print(f"run folder: {result.run_dir}")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command()
def pretrain(
    data: Annotated[Path, typer.Option("--data", help="Image folder (unlabelled or any labelled layout).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    method: Annotated[str | None, typer.Option("--method", help="Pretraining method (simclr, byol, ...).")] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimiser steps.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of PretrainConfig options.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, views and patches.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu, ...")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")] = "32-true",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Self-supervised pretraining of a U-Net encoder; writes RUN/encoder.pt for `medssl finetune --init`
    (fine-tune with the same `channels`)."""
    from medssl import api

    result = api.pretrain(
        data,
        out,
        method=method,
        dims=dims,
        max_steps=max_steps,
        config=config,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
    )
    out_console.print(f"run folder: {result.run_dir} ({result.global_step} steps, final loss {result.final_loss})")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option("--model", help="Run folder of `medssl finetune`.")],
    input: Annotated[Path, typer.Option("--input", help="An image, a DICOM series folder, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the predictions.")],
    overlap: Annotated[float, typer.Option("--overlap", help="Sliding-window overlap, 0-0.9.")] = 0.25,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Sliding-window prediction; outputs named by input stem, with the input's geometry."""
    from medssl import api

    if not 0 <= overlap < 1:
        raise MedsslError(f"--overlap must be in [0, 1), not {overlap}")
    written = api.predict(model, input, out, overwrite=overwrite, overlap=overlap, quiet=quiet)
    out_console.print(f"wrote {len(written)} file(s) to {out}")


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predictions.")],
    truth: Annotated[Path, typer.Option("--truth", help="Folder of ground truth (same stems).")],
    spacing_aware: Annotated[bool, typer.Option("--spacing-aware", help="Distances in mm where known.")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Surface Dice tolerance (mm or px).")] = 1.0,
    out: Annotated[Path | None, typer.Option("--out", help="JSON file to write (CSV beside it).")] = None,
) -> None:
    """Per case and structure: Dice, HD95, Hausdorff, normalised surface Dice, XOR."""
    from medssl import api

    result = api.evaluate(pred, truth, spacing_aware=spacing_aware, tolerance=tolerance, out=out)
    _print_summary(result["summary"], f"{pred} vs {truth}")
    if out is not None:
        out_console.print(f"wrote {out} and {Path(out).with_suffix('.csv')}")


@app.command()
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


def _print_summary(summary: dict[str, dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    metrics = ["dice", "hd95", "hd", "nsd", "xor"]
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
