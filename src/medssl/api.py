"""The functions behind every CLI command; notebooks and tests call them directly.

Each function validates its input and raises ``MedsslError`` with one clear message for user mistakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import track

from medssl.config import FinetuneConfig, PretrainConfig, resolve
from medssl.data.check import CheckReport, check_dataset_report
from medssl.data.io import read_image
from medssl.data.layouts import discover_inputs
from medssl.engine.experiment import ExperimentResult
from medssl.engine.finetune import FinetuneResult, run_finetune
from medssl.engine.pretraining import PretrainResult, run_pretrain
from medssl.engine.run_folder import prepare_output_dir
from medssl.errors import MedsslError
from medssl.metrics.evaluate import evaluate_folders, write_evaluation
from medssl.segment.predict import load_trained_model, predict_image, prediction_name, write_prediction

if TYPE_CHECKING:
    from medssl.labelfree.segment import SegmentResult

console = Console(stderr=True)


def check_data(path: str | Path) -> CheckReport:
    """Every problem found in a dataset folder, with its layout and case counts (``report.ok``: clean)."""
    return check_dataset_report(Path(path))


def finetune(
    data: str | Path,
    out: str | Path,
    *,
    dims: int | None = None,
    label_fraction: float = 1.0,
    seed: int = 0,
    max_steps: int | None = None,
    init: str | Path | None = None,
    config: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    devices: int | str = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    precision: str = "32-true",
    split_file: str | Path | None = None,
    quiet: bool = False,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a U-Net (see ``medssl.engine.finetune.run_finetune``); ``overrides`` set ``FinetuneConfig``
    fields on top of the YAML ``config``."""
    if dims not in (None, 2, 3):
        raise MedsslError(f"--dims must be 2 or 3, not {dims}")
    if init is not None and not Path(init).is_file():
        raise MedsslError(f"--init file not found: {init}")
    cfg = resolve(FinetuneConfig, config, max_steps=max_steps, **overrides)
    if cfg.max_steps < 1:
        raise MedsslError(f"max_steps must be at least 1, not {cfg.max_steps}")
    return run_finetune(
        data,
        out,
        cfg,
        dims=dims,
        label_fraction=label_fraction,
        seed=seed,
        init=init,
        resume=resume,
        overwrite=overwrite,
        devices=devices,
        num_nodes=num_nodes,
        accelerator=accelerator,
        precision=precision,
        split_file=split_file,
        quiet=quiet,
    )


def pretrain(
    data: str | Path,
    out: str | Path,
    *,
    method: str | None = None,
    dims: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    patch_size: list[int] | None = None,
    channels: list[int] | None = None,
    lr: float | None = None,
    seed: int = 0,
    config: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    precision: str = "32-true",
    quiet: bool = False,
    preset: str | None = None,
    **method_kwargs: Any,
) -> PretrainResult:
    """Self-supervised pretraining of an encoder (see ``medssl.engine.pretraining.run_pretrain``).

    Settings come from ``PretrainConfig`` defaults < the YAML ``config`` < these arguments; ``method_kwargs`` are
    added to the config's ``method_options`` (the method's own keyword arguments). ``preset`` is the method's
    ``preset`` option (e.g. PGL's ``"paper"``: a 3D ResNet-50), stored in ``method_options``. ``RUN/encoder.pt`` is
    for ``finetune(init=...)``, which needs the same ``channels`` (and a U-Net encoder: a preset with another
    encoder exports that encoder).
    """
    from medssl.pretrain import get, names

    if dims not in (None, 2, 3):
        raise MedsslError(f"--dims must be 2 or 3, not {dims}")
    cfg = resolve(
        PretrainConfig,
        config,
        method=method,
        max_steps=max_steps,
        batch_size=batch_size,
        patch_size=patch_size,
        channels=channels,
        lr=lr,
    )
    if not cfg.method:
        raise MedsslError(f"choose a pretraining method (--method); known methods: {', '.join(names())}")
    get(cfg.method)
    options = {**cfg.method_options, **method_kwargs}
    if preset is not None:
        options["preset"] = preset
    return run_pretrain(
        data,
        out,
        method=cfg.method,
        dims=dims,
        max_steps=cfg.max_steps,
        batch_size=cfg.batch_size,
        patch_size=cfg.patch_size,
        channels=cfg.channels,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule=cfg.schedule,
        warmup_steps=cfg.warmup_steps,
        log_interval=cfg.log_interval,
        checkpoint_interval=cfg.checkpoint_interval,
        max_minutes=cfg.max_minutes,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        accelerator=accelerator,
        precision=precision,
        quiet=quiet,
        **options,
    )


def label_efficiency(
    data: str | Path,
    out: str | Path,
    *,
    methods: list[str] | None = None,
    fractions: list[float] | None = None,
    seeds: int | None = None,
    pretrain_steps: int | None = None,
    finetune_steps: int | None = None,
    config: str | Path | None = None,
    dims: int | None = None,
    precision: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    accelerator: str = "auto",
    quiet: bool = False,
) -> ExperimentResult:
    """The label-efficiency experiment (see ``medssl.engine.experiment.run_label_efficiency``); settings come from
    ``LabelEfficiencyConfig`` defaults < the YAML ``config`` < these arguments."""
    from medssl.config import LabelEfficiencyConfig
    from medssl.engine.experiment import run_label_efficiency

    if dims not in (None, 2, 3):
        raise MedsslError(f"--dims must be 2 or 3, not {dims}")
    cfg = resolve(
        LabelEfficiencyConfig,
        config,
        methods=methods,
        fractions=fractions,
        seeds=seeds,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        precision=precision,
    )
    return run_label_efficiency(
        data, out, cfg, dims=dims, resume=resume, overwrite=overwrite, accelerator=accelerator, quiet=quiet
    )


def predict(
    model: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    overlap: float = 0.25,
    quiet: bool = False,
) -> list[Path]:
    """Predict every image under ``input`` with the run folder ``model``; outputs named by input stem, written
    with the input's geometry. Returns the files written."""
    trained = load_trained_model(model)
    inputs = discover_inputs(Path(input))
    out_dir = prepare_output_dir(out, overwrite=overwrite)
    written: list[Path] = []
    items = inputs if quiet else track(inputs, description="predicting", console=console)
    for path in items:
        image, meta = read_image(path)
        labels = predict_image(trained, image, meta, overlap=overlap)
        written += write_prediction(labels, meta, trained.plan, out_dir, prediction_name(path))
    return written


def evaluate(
    pred: str | Path,
    truth: str | Path,
    *,
    spacing_aware: bool = False,
    tolerance: float = 1.0,
    out: str | Path | None = None,
    protocol: str = "label-map",
    images: str | Path | None = None,
) -> dict[str, Any]:
    """Score predictions against ground truth; writes JSON + per-case CSV when ``out`` is given.

    ``protocol`` ``label-map`` scores label maps as they are; the cluster-map protocols of label-free
    segmentation (``best-cluster``, ``border``, ``darkest``, ``paper-code``; see
    ``medssl.labelfree.cluster_evaluation``) first pick one cluster per case and structure. ``darkest`` needs
    the ``images``.
    """
    if protocol == "label-map":
        if images is not None:
            raise MedsslError("--images is only used by the darkest protocol")
        result = evaluate_folders(Path(pred), Path(truth), spacing_aware=spacing_aware, tolerance=tolerance)
    else:
        from medssl.labelfree.cluster_evaluation import PROTOCOLS, evaluate_clusters

        if protocol not in PROTOCOLS:
            raise MedsslError(f"unknown protocol {protocol!r}; choose one of label-map, {', '.join(PROTOCOLS)}")
        result = evaluate_clusters(
            pred, truth, protocol=protocol, images_dir=images, spacing_aware=spacing_aware, tolerance=tolerance
        )
    if out is not None:
        write_evaluation(result, Path(out))
    return result


def segment(
    input: str | Path,
    out: str | Path,
    *,
    method: str = "s3",
    clusters: int | None = None,
    config: str | Path | None = None,
    select: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> SegmentResult:
    """Annotation-free segmentation of every image under ``input`` (see ``medssl.labelfree.segment``).

    Settings come from the method's dataclass (``S3Config`` or ``KMeansConfig``) < the YAML ``config`` <
    ``clusters`` and ``overrides``.
    """
    from medssl.labelfree.config import resolve_method_config
    from medssl.labelfree.segment import segment_folder

    cfg = resolve_method_config(method, config, clusters=clusters, **overrides)
    return segment_folder(input, out, method, cfg, select=select, overwrite=overwrite, quiet=quiet)
