"""``medssl export``: a fine-tuning run's network as a file other tools run (``medssl.export``), and the
``--backend`` option of ``medssl predict`` that runs such a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medssl.cli.common import Command, app, out_console
from medssl.errors import MedsslError

FORMATS = ("onnx", "nnunet")

Backend = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="torch, or onnx (ONNX Runtime on the CPU; --model a `medssl export` .onnx file or a run folder). "
        "Default: onnx for a .onnx file, else torch.",
    ),
]


@app.command(cls=Command)
def export(
    run: Annotated[
        Path,
        typer.Argument(
            help="Run folder of `medssl finetune` (onnx: its best checkpoint), or of `medssl pretrain` or its "
            "encoder.pt (nnunet)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="File to write, e.g. model.onnx or pretrained.pth (outside the run folder).")
    ],
    format: Annotated[
        str, typer.Option("--format", help="onnx, or nnunet (nnU-Net v2 -pretrained_weights; with --plans).")
    ] = "onnx",
    plans: Annotated[
        Path | None, typer.Option("--plans", help="nnunet: the dataset's nnUNetPlans.json from nnU-Net's planning.")
    ] = None,
    configuration: Annotated[
        str | None, typer.Option("--configuration", help="nnunet: the configuration trained (2d, 3d_fullres, ...).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export at --out (never any other file).")
    ] = False,
) -> None:
    """Export a trained network for use outside medssl.

    onnx: the segmentation network of a fine-tuning run, with dynamic batch and spatial axes, the run's plan
    (spacing, normalisation, classes) in its metadata, checked against torch; `medssl predict --model model.onnx`
    runs it through ONNX Runtime (needs `pip install onnx onnxruntime`). nnunet: a pretrained U-Net encoder as the
    file `nnUNetv2_train DATASET CONFIGURATION FOLD -pretrained_weights FILE` loads (encoder pretrained, decoder
    initialised as nnU-Net does); the plans' network must be one a medssl encoder can be (see docs/export.md)."""
    if format not in FORMATS:
        raise MedsslError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "nnunet":
        _export_nnunet(run, out, plans, configuration, overwrite)
        return
    if plans is not None or configuration is not None:
        raise MedsslError("--plans and --configuration belong to --format nnunet")
    from medssl.export.onnx import export_onnx

    result = export_onnx(run, out, overwrite=overwrite)
    out_console.print(
        f"wrote {result.path} (system {result.system}; ONNX Runtime vs torch logits on a random batch: "
        f"max relative difference {result.max_difference:.1e})",
        highlight=False,
    )


def _export_nnunet(run: Path, out: Path, plans: Path | None, configuration: str | None, overwrite: bool) -> None:
    if plans is None or configuration is None:
        raise MedsslError("--format nnunet needs --plans nnUNetPlans.json and --configuration (2d, 3d_fullres, ...)")
    from medssl.export.nnunet import export_nnunet_weights

    written = export_nnunet_weights(run, plans, configuration, out, overwrite=overwrite)
    out_console.print(
        f"wrote {written}: nnUNetv2_train DATASET {configuration} FOLD -pretrained_weights {written}", highlight=False
    )
