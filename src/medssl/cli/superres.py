"""``medssl superres``: train a super-resolution system and apply it to volumes (``medssl.superres``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medssl.cli.common import (
    Command,
    ConfigFile,
    Group,
    Overwrite,
    Precision,
    Quiet,
    Sets,
    SkipBadCases,
    app,
    merge_sets,
    out_console,
    parse_sets,
    resumable,
)

superres_app = typer.Typer(
    cls=Group, help="MR super-resolution: train SERAN (or a baseline) and apply it to volumes.", no_args_is_help=True
)
app.add_typer(superres_app, name="superres")


@superres_app.command("train", cls=Command)
@resumable
def train(
    data: Annotated[Path, typer.Option("--data", help="Folder of high-resolution 3D volumes (any layout).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    scale: Annotated[int | None, typer.Option("--scale", help="2, 3 or 4 (default 2).")] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="seran, edsr (no attention) or rcan (default seran).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="Degradation: bicubic or kspace (default bicubic).")
    ] = None,
    dims: Annotated[
        int | None, typer.Option("--dims", help="2: slices (default); 3: 3D patches, every axis super-resolved.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimiser steps (default 1000).")] = None,
    config: ConfigFile = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation and the patches.")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    accelerator: Annotated[str, typer.Option("--accelerator", help="auto, cpu, gpu (= cuda), mps or tpu.")] = "auto",
    precision: Precision = "32-true",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
    sets: Sets = None,
) -> None:
    """Train a super-resolution system on slices (or, with --dims 3, 3D patches) of the volumes (split by volume
    into split.json); writes RUN/network.pt and RUN/model.json for `medssl superres apply`. More options with --set
    (axis, patch_size, batch_size, lr, val_interval, patience, val_fraction, width, blocks, ...); --config: a YAML
    file of them, or a preset (`medssl list presets`: superres-*), under the options given here."""
    from medssl.superres.workflow import train as run

    flags = {"scale": scale, "system": system, "mode": mode, "dims": dims, "max_steps": max_steps}
    options = with_config(config, merge_sets(flags, parse_sets(sets)))
    trained = run(
        data,
        out,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
        skip_bad_cases=skip_bad_cases,
        **options,
    )
    best = "" if trained.best_score is None else f", best validation PSNR {trained.best_score:.2f} dB on [0, 1]"
    out_console.print(f"run folder: {trained.run} ({trained.steps} steps{best})", highlight=False)
    for what, path in trained.files.items():
        out_console.print(f"  {what}: {path}", highlight=False)


def with_config(config: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``superres train``: ``SuperResConfig`` defaults < the YAML ``config`` (a file or a preset) <
    ``options`` (flags and ``--set``; a key that is no config field is a system option and goes on top of the
    file's ``system_options``). The file's keys are checked here, so that a wrong one names the file.

    Raises:
        MedsslError: an unreadable file, an unknown key or a value of the wrong type in it (naming the file).
    """
    if config is None:
        return options
    import dataclasses

    from medssl.config import check_options, load_yaml
    from medssl.superres.workflow import SuperResConfig
    from medssl.systems.options import check_system_options

    where = f" (in {config})"
    raw = load_yaml(config)
    values = check_options(SuperResConfig, raw, where=dict.fromkeys(raw, where))
    given = {k: v for k, v in options.items() if v is not None}
    own = values.pop("system_options", None) or {}
    if own and "system_options" not in given:  # --set system_options=... replaces the file's, as any field does
        system = given.get("system", values.get("system", SuperResConfig.system))
        names = {f.name for f in dataclasses.fields(SuperResConfig)}
        extra = {k: given.pop(k) for k in list(given) if k not in names}
        given["system_options"] = {**check_system_options("super-resolution", system, own, where), **extra}
    return {**values, **given}


@superres_app.command("apply", cls=Command)
def apply(
    model: Annotated[Path, typer.Option("--model", help="Run folder of `medssl superres train`.")],
    input: Annotated[Path, typer.Option("--input", help="A volume, a DICOM series folder, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the super-resolved volumes (NIfTI).")],
    axis: Annotated[
        int | None, typer.Option("--axis", help="Slicing axis 0, 1 or 2 (default: the run's rule).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Slices per forward pass.")] = 16,
    tile: Annotated[int, typer.Option("--tile", help="3D models: tile side in input voxels.")] = 32,
    normalised: Annotated[
        bool, typer.Option("--normalised", help="Write the [0, 1] range the metrics use, not the input's units.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Super-resolve every slice of each volume (a 3D model: the whole volume, tile by tile, along every axis);
    outputs named by input stem, with the finer spacing and a geometry that keeps every voxel at its place in the
    world."""
    from medssl.superres.applying import apply as run

    written = run(
        model,
        input,
        out,
        axis=axis,
        batch_size=batch_size,
        tile=tile,
        normalised=normalised,
        device=device,
        overwrite=overwrite,
        quiet=quiet,
    )
    out_console.print(f"wrote {len(written)} file(s) to {out}", highlight=False)
