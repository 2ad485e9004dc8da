"""The commands: data check, data merge, finetune, pretrain, predict, evaluate, segment, list, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medssl.cli.common import (
    OPTION_KINDS,
    Command,
    ConfigFile,
    Overwrite,
    Precision,
    PrecisionAuto,
    Quiet,
    Sets,
    SkipBadCases,
    SkipBadInputs,
    app,
    config_default,
    data_app,
    list_options,
    list_presets,
    merge_sets,
    out_console,
    parse_sets,
    print_summary,
    resumable,
)
from medssl.cli.export import Backend
from medssl.config import FinetuneConfig, PretrainConfig
from medssl.errors import MedsslError


@data_app.command("check", cls=Command)
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


@data_app.command("merge", cls=Command)
def data_merge(
    folders: Annotated[
        list[Path], typer.Argument(metavar="folder", help="Labelled dataset folders (any labelled layouts).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Merged dataset folder to create.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier `data merge` output.")] = False,
    quiet: Quiet = False,
) -> None:
    """Merge partially labelled dataset folders into one paired-multilabel dataset (structures matched by name,
    annotations.json saying which structures each case annotates), for `medssl finetune --set system=dodnet`."""
    from rich.table import Table

    from medssl.data.merge import merge_datasets, merge_record

    index = merge_datasets(folders, out, overwrite=overwrite, quiet=quiet)
    partial = sum(c.annotated is not None for c in index.cases)
    out_console.print(
        f"{out}: {index.layout} layout, {len(index.cases)} case(s), {partial} annotating only some structures",
        highlight=False,
    )
    sources = (merge_record(out) or {}).get("sources", [])
    table = Table(title="cases per structure and source folder")
    table.add_column("structure")
    for folder in folders:
        table.add_column(folder.name or str(folder), justify="right")
    for name in index.structures or []:
        table.add_row(name, *[str(s["cases"]) if name in s["structures"] else "-" for s in sources])
    out_console.print(table)
    for folder, s in zip(folders, sources, strict=True):
        renamed = ", ".join(f"{a!r} -> {b!r}" for a, b in s["renamed"].items())
        if renamed:
            out_console.print(f"  {folder}: structures renamed {renamed}", highlight=False, soft_wrap=True)
        if s["prefixed"]:
            out_console.print(
                f"  {folder}: {s['prefixed']} case id(s) shared with another folder, prefixed with "
                f"'{Path(s['folder']).name}_'",
                highlight=False,
                soft_wrap=True,
            )
    out_console.print(f"check it with `medssl data check {out}`", highlight=False)


DataFolders = Annotated[
    list[Path],
    typer.Option(
        "--data",
        metavar="<path>",
        help="Labelled dataset folder (any labelled layout). Repeatable: several folders are merged by structure name "
        "into <out>-data-merged (`medssl data merge`) and fine-tuned on together.",
    ),
]


@app.command(cls=Command)
@resumable
def finetune(
    data: DataFolders,
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    label_fraction: Annotated[float, typer.Option("--label-fraction", help="Share of training labels used.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the labelled subset and training.")] = 0,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help=f"Optimiser steps {config_default(FinetuneConfig, 'max_steps')}.")
    ] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Encoder weights to start from.")] = None,
    config: ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    devices: Annotated[str, typer.Option("--devices", help="Devices per node (DDP when > 1), or 'auto'.")] = "1",
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Nodes for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    precision: PrecisionAuto = "auto",
    split: Annotated[Path | None, typer.Option("--split", help="JSON split file to use instead.")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes", help=f"Wall-clock training limit {config_default(FinetuneConfig, 'max_minutes')}."
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
    sets: Sets = None,
) -> None:
    """Fine-tune a U-Net (Dice + cross-entropy, or a `medssl list segmentation` system), validate, score the tests."""
    from medssl import api

    flags = {
        "dims": dims,
        "label_fraction": label_fraction,
        "seed": seed,
        "max_steps": max_steps,
        "init": init,
        "config": config,
        "resume": resume,
        "overwrite": overwrite,
        "devices": int(devices) if devices.isdigit() else devices,
        "num_nodes": num_nodes,
        "accelerator": accelerator,
        "precision": precision,
        "split_file": split,
        "quiet": quiet,
        "skip_bad_cases": skip_bad_cases,
        "max_minutes": max_minutes,
    }
    folders = data[0] if len(data) == 1 else data  # one folder: exactly as before
    result = api.finetune(folders, out, **merge_sets(flags, parse_sets(sets)))
    if result.test_summary:
        print_summary(result.test_summary, f"test cases of {out}")
    out_console.print(f"run folder: {result.run_dir}")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command(cls=Command)
@resumable
def pretrain(
    data: Annotated[Path, typer.Option("--data", help="Image folder (any layout), or a `medssl data prepare` store.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    method: Annotated[
        str | None, typer.Option("--method", help="Pretraining method: {pretrain_methods} (or the --config's).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Method preset, e.g. pgl's 'paper' (3D ResNet-50, for GPUs).")
    ] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="2 or 3; default: the data's.")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help=f"Optimiser steps {config_default(PretrainConfig, 'max_steps')}.")
    ] = None,
    config: ConfigFile = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, views and patches.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    devices: Annotated[str, typer.Option("--devices", help="Devices per node (DDP when > 1), or 'auto'.")] = "1",
    num_nodes: Annotated[int, typer.Option("--num-nodes", help="Nodes for multi-node DDP.")] = 1,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    precision: Precision = "32-true",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
    sets: Sets = None,
) -> None:
    """Self-supervised pretraining of a U-Net encoder: RUN/encoder.pt for `medssl finetune --init` (same `channels`)."""
    from medssl import api

    flags = {
        "method": method,
        "preset": preset,
        "dims": dims,
        "max_steps": max_steps,
        "config": config,
        "seed": seed,
        "resume": resume,
        "overwrite": overwrite,
        "devices": int(devices) if devices.isdigit() else devices,
        "num_nodes": num_nodes,
        "accelerator": accelerator,
        "precision": precision,
        "quiet": quiet,
        "skip_bad_cases": skip_bad_cases,
    }
    result = api.pretrain(data, out, **merge_sets(flags, parse_sets(sets)))
    out_console.print(f"run folder: {result.run_dir} ({result.global_step} steps, final loss {result.final_loss})")
    for what, path in result.files.items():
        out_console.print(f"  {what}: {path}")


@app.command(cls=Command)
def predict(
    model: Annotated[Path, typer.Option("--model", help="Run folder of `medssl finetune`.")],
    input: Annotated[Path, typer.Option("--input", help="An image, a DICOM series folder, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the predictions.")],
    overlap: Annotated[float, typer.Option("--overlap", help="Sliding-window overlap of the tiles, in [0, 1).")] = 0.25,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_inputs: SkipBadInputs = False,
    raters: Annotated[
        str | None,
        typer.Option(
            "--raters",
            help="Models trained on several raters (system mrnet): whose opinion to predict: 'uniform', a rater's "
            "name, or one weight per rater ('1,0').",
        ),
    ] = None,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Also write each class's probability map (out/probabilities/).")
    ] = False,
    backend: Backend = None,
) -> None:
    """Sliding-window prediction; outputs named by input stem, with the input's geometry."""
    from medssl import api

    if not 0 <= overlap < 1:
        raise MedsslError(f"--overlap must be in [0, 1), not {overlap}")
    written = api.predict(
        model,
        input,
        out,
        overwrite=overwrite,
        overlap=overlap,
        quiet=quiet,
        skip_bad_inputs=skip_bad_inputs,
        raters=raters,
        probabilities=probabilities,
        backend=backend,
    )
    out_console.print(f"wrote {len(written)} file(s) to {out}")


@app.command(cls=Command)
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
    print_summary(result["summary"], title, metrics)
    if out is not None:
        out_console.print(f"wrote {out} and {Path(out).with_suffix('.csv')}")


@app.command(cls=Command)
def segment(
    input: Annotated[Path, typer.Option("--input", help="An image or a folder of 2D images.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the cluster maps.")],
    method: Annotated[
        str, typer.Option("--method", help="Label-free method: {labelfree_methods} (`medssl list label-free`).")
    ] = "s3",
    clusters: Annotated[
        str | None,
        typer.Option("--clusters", help="Number of clusters K, or auto (chosen per image over 2..5; the default)."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of S3Config/KMeansConfig options.")] = None,
    select: Annotated[
        str | None,
        typer.Option(
            "--select",
            help="The rule that picks the lesion mask written to selected/: lesion (default), border or darkest.",
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_inputs: SkipBadInputs = False,
) -> None:
    """Annotation-free segmentation: one cluster map per image (same stem and size; 1..K from darkest to
    brightest, 0 outside the field of view), overlays, and the settings used."""
    from medssl import api

    if clusters is not None and clusters != "auto" and not clusters.isdigit():
        raise MedsslError(f"--clusters takes a whole number or auto, not {clusters!r}")
    result = api.segment(
        input,
        out,
        method=method,
        clusters=clusters if clusters in (None, "auto") else int(clusters),
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


@app.command("list", cls=Command)
def list_registered(
    kind: Annotated[
        str | None,
        typer.Argument(
            help="Only this kind: pretraining, segmentation, label-free, evaluation or super-resolution; or presets "
            "(the --config presets shipped with medssl).",
            show_default=False,
        ),
    ] = None,
    options: Annotated[
        bool,
        typer.Option(
            "--options", help="Also each method's or system's options (type, default, what it does), for --set."
        ),
    ] = False,
) -> None:
    """What is registered, per kind (pretraining methods, segmentation systems, label-free methods, evaluation
    protocols), with one line on each; `medssl list presets`: the --config presets."""
    from medssl import registry

    if kind == "presets":
        list_presets()
        return
    for shown in registry.kinds() if kind is None else [kind]:
        entries = registry.names(shown)  # an unknown kind is refused with the known ones
        out_console.print(f"[bold]{shown}[/bold] (used by: {registry.used_by(shown)})", highlight=False)
        if not entries:
            out_console.print("  none registered yet", highlight=False)
        width = max((len(name) for name in entries), default=0)
        for name in entries:
            line = f"  {name.ljust(width)}  {registry.describe(shown, name)}"
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
            if options and shown in OPTION_KINDS:
                list_options(shown, name)
    if kind is None:
        out_console.print("presets for --config: `medssl list presets`", highlight=False)


@app.command(cls=Command)
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
