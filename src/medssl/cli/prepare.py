"""``medssl data prepare``: preprocess a dataset once into a store that ``medssl pretrain --data STORE`` reads patch
by patch (bounded memory on large unlabelled data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medssl.cli.common import Command, Overwrite, Quiet, SkipBadCases, data_app, out_console, split_list


@data_app.command("prepare", cls=Command)
def data_prepare(
    src: Annotated[Path, typer.Argument(help="Dataset folder (any layout; labels are ignored).")],
    out: Annotated[Path, typer.Option("--out", help="Store folder to create, or to complete (resumable).")],
    spacing: Annotated[
        str | None,
        typer.Option("--spacing", help="Target spacing per axis, e.g. 1,1,1 (default: derived as pretrain does)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes reading and preprocessing cases.")] = 1,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    skip_bad_cases: SkipBadCases = False,
) -> None:
    """Resample and normalise every image once (as `medssl pretrain` does) into OUT/<case>.npy (float16) with an
    index OUT/store.json; a second run redoes only missing, partial or changed cases. Then `medssl pretrain --data
    OUT` reads only the patches it trains on."""
    from medssl import api

    report = api.prepare_store(
        src,
        out,
        spacing=split_list(spacing, float, "--spacing"),
        workers=workers,
        skip_bad_cases=skip_bad_cases,
        overwrite=overwrite,
        quiet=quiet,
    )
    out_console.print(
        f"{report.store}: {report.cases} case(s); {len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed, {len(report.skipped)} skipped ({report.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    plan = report.plan
    line = f"  spacing {plan.target_spacing}, normalisation {plan.normalization}"
    out_console.print(line, highlight=False, soft_wrap=True)
