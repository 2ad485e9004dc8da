"""The functions behind every CLI command; notebooks and tests call them directly.

Each function validates its input and raises ``MedsslError`` with one clear message for user mistakes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import track

from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve
from medssl.data.check import CheckReport, check_dataset_report
from medssl.data.layouts import discover_input_cases
from medssl.data.loading import bad_inputs_error, print_skipped_inputs
from medssl.data.merge import merged_for_run
from medssl.data.preprocess import probabilities_to_labels
from medssl.data.store_prepare import prepare_store as prepare_store  # `medssl data prepare`
from medssl.engine.experiment import ExperimentResult
from medssl.engine.finetune import FinetuneResult, run_finetune
from medssl.engine.pretraining import PretrainResult, run_pretrain
from medssl.engine.run_folder import check_output_location, prepare_output_dir, progress_bar, removed_on_failure
from medssl.engine.trainer_setup import check_trainer_options
from medssl.errors import MedsslError
from medssl.evaluation import evaluate_folders, write_evaluation
from medssl.networks.weights import load_checkpoint_file
from medssl.segment.predict import (
    check_inputs,
    expertise_vector,
    load_model,
    predict_probabilities,
    read_input,
    write_prediction,
    write_probabilities,
)
from medssl.systems.options import check_system_options, split_config_fields

if TYPE_CHECKING:
    from medssl.labelfree.segment import SegmentResult

console = Console(stderr=True)


def check_data(path: str | Path) -> CheckReport:
    """Every problem found in a dataset folder, with its layout and case counts (``report.ok``: clean)."""
    return check_dataset_report(Path(path))


def finetune(
    data: str | Path | Sequence[str | Path],
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
    precision: str = "auto",
    split_file: str | Path | None = None,
    quiet: bool = False,
    skip_bad_cases: bool = False,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a segmentation system, a U-Net by default (see ``medssl.engine.finetune.run_finetune``).

    Settings come from ``FinetuneConfig`` defaults < the YAML ``config`` (a file or a preset name, ``medssl list
    presets``) < ``max_steps`` and ``overrides``: ``FinetuneConfig`` fields, or options of the system ``cfg.system``
    (``medssl list segmentation --options``), which go on top of the config's ``system_options``; every one is
    checked before any data is read. Cases ``medssl data check`` would report are refused, or left out with
    ``skip_bad_cases``. ``precision="auto"``: bf16 autocast on a CPU with bf16 instructions, else float32. Several
    ``data`` folders are first merged by structure name into ``<out>-data-merged`` (``merged_for_run``: reused while
    its folders are unchanged) and fine-tuned on together."""
    folders = [data] if isinstance(data, str | Path) else list(data)
    _check_dims(dims)
    check_trainer_options(accelerator, devices, precision, num_nodes)
    if init is not None:
        if not Path(init).is_file():
            raise MedsslError(f"--init file not found: {init}")
        load_checkpoint_file(init)  # a file that is no checkpoint fails now, before the run folder is written
    check_output_location(out, (*folders, init, split_file))
    fields, given = split_config_fields(FinetuneConfig, overrides)
    cfg = resolve(FinetuneConfig, config, max_steps=max_steps, **fields)
    where = _where(config, "system_options", fields)
    cfg.system_options = _system_options("segmentation", cfg.system, cfg.system_options, where, given, FinetuneConfig)
    # several folders: merged beside the run folder, which may not contain its inputs
    dataset = folders[0] if len(folders) == 1 else merged_for_run(folders, out, overwrite=overwrite, quiet=quiet)
    with removed_on_failure(out, resume=resume):
        return run_finetune(
            dataset,
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
            skip_bad_cases=skip_bad_cases,
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
    devices: int | str = 1,
    num_nodes: int = 1,
    quiet: bool = False,
    preset: str | None = None,
    skip_bad_cases: bool = False,
    **options: Any,
) -> PretrainResult:
    """Self-supervised pretraining of an encoder (see ``medssl.engine.pretraining.run_pretrain``).

    Settings: ``PretrainConfig`` defaults < the YAML ``config`` (a file or a preset name, ``medssl list presets``) <
    these arguments. ``options`` are ``PretrainConfig`` fields (``weight_decay=1e-4``) or options of the method
    (``temperature=0.2``, ``medssl list pretraining --options``) that go on top of the config's ``method_options``;
    all are checked before any data is read. ``preset`` is the method's ``preset`` option (PGL's ``"paper"``: a 3D
    ResNet-50). ``RUN/encoder.pt`` is for ``finetune(init=...)`` with the same ``channels`` (and a U-Net encoder).
    ``devices`` / ``num_nodes`` > 1: DDP, each process with ``batch_size`` patches and its own views
    (``docs/distributed.md``).
    """
    from medssl.pretrain import names

    _check_dims(dims)
    check_trainer_options(accelerator, devices, precision, num_nodes)
    fields, given = split_config_fields(PretrainConfig, options)
    named = {"batch_size": batch_size, "patch_size": patch_size, "channels": channels, "lr": lr}
    cfg = resolve(PretrainConfig, config, method=method, max_steps=max_steps, **named, **fields)
    if not cfg.method:
        raise MedsslError(f"choose a pretraining method (--method); known methods: {', '.join(names())}")
    given |= {} if preset is None else {"preset": preset}
    where = _where(config, "method_options", fields)
    method_options = _system_options("pretraining", cfg.method, cfg.method_options, where, given, PretrainConfig)
    cfg = dataclasses.replace(cfg, method_options=method_options)
    check_output_location(out, (data,))
    with removed_on_failure(out, resume=resume):
        return run_pretrain(
            data,
            out,
            cfg,
            dims=dims,
            seed=seed,
            resume=resume,
            overwrite=overwrite,
            accelerator=accelerator,
            precision=precision,
            devices=devices,
            num_nodes=num_nodes,
            quiet=quiet,
            skip_bad_cases=skip_bad_cases,
        )


def _check_dims(dims: int | None) -> None:
    if dims not in (None, 2, 3):
        raise MedsslError(f"--dims must be 2 or 3, not {dims}")


def _where(config: str | Path | None, field: str, given: dict[str, Any]) -> str:
    """`` (in CONFIG)`` when the config's ``field`` came from the YAML ``config``, not from the arguments ``given``."""
    return f" (in {config})" if config is not None and field not in given else ""


def _system_options(
    kind: str, name: str, in_config: dict[str, Any], where: str, given: dict[str, Any], cls: type[Any]
) -> dict[str, Any]:
    """The options of system ``name``: the config's (``where`` names their file) < ``given`` (arguments or ``--set``,
    which may also be fields of the config dataclass ``cls``), each checked against the system's declaration."""
    fields = [f.name for f in dataclasses.fields(cls)]
    checked = check_system_options(kind, name, in_config, where)
    return checked | check_system_options(kind, name, given, also=fields)


def label_efficiency(
    data: str | Path,
    out: str | Path,
    *,
    methods: list[str] | None = None,
    labelled: list[int | str] | None = None,
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
    skip_bad_cases: bool = False,
) -> ExperimentResult:
    """The label-efficiency experiment (see ``medssl.engine.experiment.run_label_efficiency``); settings come from
    ``LabelEfficiencyConfig`` defaults < the YAML ``config`` (a file or a preset name) < these arguments.
    ``labelled`` (numbers of labelled cases, ``all``) or ``fractions``: given ``fractions``, a ``labelled`` of the
    config no longer applies."""
    from medssl.engine.experiment import run_label_efficiency

    _check_dims(dims)
    if labelled is not None and fractions is not None:
        raise MedsslError("give labelled (numbers of cases) or fractions (shares of the cases), not both")
    cfg = resolve(
        LabelEfficiencyConfig,
        config,
        methods=methods,
        labelled=labelled,
        fractions=fractions,
        seeds=seeds,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        precision=precision,
    )
    if fractions is not None:
        cfg.labelled = None  # the fractions given take the place of the config's numbers of cases
    _check_stage_options(cfg, _where(config, "method_options", {}))
    check_trainer_options(accelerator, 1, cfg.precision)
    check_output_location(out, (data,))
    with removed_on_failure(out, resume=resume):
        return run_label_efficiency(
            data,
            out,
            cfg,
            dims=dims,
            resume=resume,
            overwrite=overwrite,
            accelerator=accelerator,
            quiet=quiet,
            skip_bad_cases=skip_bad_cases,
        )


def _check_stage_options(cfg: LabelEfficiencyConfig, where: str) -> None:
    """Each pretraining method's ``method_options`` and the fine-tuning system's options, checked (and typed) before
    any data is read (a method not in the experiment is left to ``check_experiment_config``)."""
    from medssl.pretrain import names

    for method, options in cfg.method_options.items():
        if method in names():
            cfg.method_options[method] = check_system_options("pretraining", method, options, where)
    if "system_options" in cfg.finetune or "system" in cfg.finetune:
        system, options = cfg.finetune.get("system", "supervised"), cfg.finetune.get("system_options", {})
        cfg.finetune["system_options"] = check_system_options("segmentation", system, options, where)


def predict(
    model: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    overlap: float = 0.25,
    quiet: bool = False,
    skip_bad_inputs: bool = False,
    raters: str | None = None,
    probabilities: bool = False,
    backend: str | None = None,
) -> list[Path]:
    """Predict every image under ``input`` with the run folder (or ``medssl export`` ``.onnx`` file) ``model``;
    outputs named by input stem, written with the input's geometry. Returns the files written.

    Every input is read and checked first (readable, finite, the model's dimensionality and channels): one the
    model cannot take is refused before anything is written, or left out and listed with ``skip_bad_inputs``.
    ``raters``: for a model trained on several raters (system mrnet), whose opinion to predict: ``uniform``, a
    rater's name, or one weight per rater (``1,0``); see ``medssl.segment.predict.expertise_vector``.
    ``probabilities``: also write each class's probability map under ``out/probabilities/<class>/``.
    ``backend``: ``torch`` or ``onnx`` (ONNX Runtime, same tiles and post-processing; see ``load_model``)."""
    trained = load_model(model, backend)
    if raters is not None:
        trained.network.set_expertise(expertise_vector(trained, raters))  # type: ignore[operator]
    check_output_location(out, (model, input))  # before the inputs are read
    inputs = discover_input_cases(Path(input))  # a case folder's channel files are one input
    bad = check_inputs(trained, inputs, progress_bar(quiet))
    if bad and not skip_bad_inputs:
        raise bad_inputs_error(bad, len(inputs))
    inputs = [case for case in inputs if case.case_id not in bad]
    written: list[Path] = []
    with removed_on_failure(out):
        out_dir = prepare_output_dir(out, kind="predict", overwrite=overwrite, inputs=(model, input))
        items = inputs if quiet else track(inputs, description="predicting", console=console)
        for case in items:
            image, meta = read_input(case)
            probs = predict_probabilities(trained, image, meta, overlap=overlap)
            labels = probabilities_to_labels(probs, trained.plan, meta)
            written += write_prediction(labels, meta, trained.plan, out_dir, case.case_id)
            if probabilities:
                written += write_probabilities(probs, meta, trained.plan, out_dir, case.case_id)
    print_skipped_inputs(bad)
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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score predictions against ground truth; writes JSON + per-case CSV when ``out`` is given (existing files
    are only replaced with ``overwrite``; never inside the ``pred``, ``truth`` or ``images`` folders).

    ``protocol`` (registry kind ``"evaluation"``, ``medssl list evaluation``): ``label-map`` scores label maps as
    they are; the cluster-map protocols of label-free segmentation (``best-cluster``, ``border``, ``darkest``,
    ``paper-code``; see ``medssl.labelfree.protocols``) first pick one cluster per case and structure.
    ``darkest`` needs the ``images``.
    """
    from medssl import registry

    registry.get("evaluation", protocol)  # an unknown protocol is refused with the registered ones
    if out is not None:
        _check_evaluation_out(Path(out), overwrite, (pred, truth, images))
    if protocol == "label-map":
        if images is not None:
            raise MedsslError("--images is only used by the darkest protocol")
        result = evaluate_folders(Path(pred), Path(truth), spacing_aware=spacing_aware, tolerance=tolerance)
        for warning in result["warnings"]:  # unused references, geometry, values no reference holds
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    else:
        from medssl.labelfree.cluster_evaluation import evaluate_clusters

        result = evaluate_clusters(
            pred, truth, protocol=protocol, images_dir=images, spacing_aware=spacing_aware, tolerance=tolerance
        )
    if out is not None:
        write_evaluation(result, Path(out))
    return result


def _check_evaluation_out(out: Path, overwrite: bool, inputs: tuple[str | Path | None, ...]) -> None:
    """Refuse, before scoring, an evaluation file that is not JSON, lies in an input folder, or exists (without
    ``overwrite``), JSON or its CSV sibling."""
    if out.suffix.lower() != ".json":
        raise MedsslError(f"evaluation output must be a .json file, got {out}")
    check_output_location(out, inputs)
    for path in (out, out.with_suffix(".csv")):
        if path.is_dir():
            raise MedsslError(f"{path} is a folder; --out takes a .json file (its .csv is written beside it)")
        if path.exists() and not overwrite:
            raise MedsslError(f"{path} already exists; pass --overwrite to replace it or choose another --out")


def segment(
    input: str | Path,
    out: str | Path,
    *,
    method: str = "s3",
    clusters: int | str | None = None,
    config: str | Path | None = None,
    select: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    skip_bad_inputs: bool = False,
    **overrides: Any,
) -> SegmentResult:
    """Annotation-free segmentation of every image under ``input`` (see ``medssl.labelfree.segment``).

    Settings come from the method's dataclass (``S3Config`` or ``KMeansConfig``) < the YAML ``config`` <
    ``clusters`` and ``overrides``.
    """
    from medssl.labelfree.config import resolve_method_config
    from medssl.labelfree.segment import segment_folder

    cfg = resolve_method_config(method, config, clusters=clusters, **overrides)
    with removed_on_failure(out):
        return segment_folder(
            input, out, method, cfg, select=select, overwrite=overwrite, quiet=quiet, skip_bad_inputs=skip_bad_inputs
        )
