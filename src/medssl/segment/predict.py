"""Prediction with a trained run folder: load the plan and the best checkpoint, predict images, write label
maps with the input's geometry."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from medssl.config import FinetuneConfig, check_options
from medssl.data.check import nonfinite_problem
from medssl.data.geometry import ImageMeta
from medssl.data.io import image_suffix, read_image, stem, write_image
from medssl.data.layouts import Case
from medssl.data.loading import load_image_channels
from medssl.data.plan import Plan
from medssl.data.preprocess import preprocess_image, probabilities_on_input_grid, probabilities_to_labels
from medssl.errors import MedsslError
from medssl.networks.unet import build_unet
from medssl.networks.weights import load_checkpoint_file
from medssl.segment.inference import activate, predict_logits
from medssl.systems import System
from medssl.systems.options import check_system_options

_PICTURES = {".png", ".bmp", ".tif", ".tiff"}


@dataclass
class TrainedModel:
    """A network with the plan it was trained under (``data``: the training ``--data``, where known without the
    run folder: an ONNX export carries it)."""

    network: nn.Module
    plan: Plan
    checkpoint: Path
    data: str | None = None


def build_network(plan: Plan) -> nn.Module:
    """The U-Net the plan describes."""
    return build_unet(plan.spatial_dims, plan.in_channels, plan.out_channels, channels=tuple(plan.channels))


def load_trained_model(run_dir: str | Path) -> TrainedModel:
    """Load ``plan.json`` and ``checkpoints/best.ckpt`` (else ``last.ckpt``) of a fine-tuning run.

    Raises:
        MedsslError: the folder does not exist, is a file, is a pretraining run or an experiment folder (each
            said as such), lacks the plan or a checkpoint, or the checkpoint does not fit the plan's network.
    """
    run = Path(run_dir)
    if not run.exists():
        raise MedsslError(f"model folder {run} does not exist (--model takes the folder of a `medssl finetune` run)")
    if not run.is_dir():
        raise MedsslError(f"{run} is a file; --model takes the folder of a `medssl finetune` run (its --out)")
    pretraining = (
        f"{run} is a pretraining run (medssl pretrain); predict needs a fine-tuning run (medssl finetune); "
        "its encoder.pt is for finetune --init"
    )
    if (run / "experiment.yaml").is_file():
        raise MedsslError(
            f"{run} is a label-efficiency experiment; --model takes one of its fine-tuning runs, "
            f"{run / 'finetune' / '<method>' / '<fraction>_seed<k>'}"
        )
    plan_file = run / "plan.json"
    if not plan_file.is_file():
        if (run / "encoder.pt").is_file():
            raise MedsslError(pretraining)
        raise MedsslError(f"{run} is not a medssl fine-tuning run folder (no plan.json)")
    plan = Plan.load(plan_file)
    # A pretraining run has a plan too (without classes) and exports encoder.pt; a fine-tuning run does neither.
    if (run / "encoder.pt").is_file() or plan.out_channels < 1:
        raise MedsslError(pretraining)
    ckpt = next(
        (p for p in (run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt") if p.is_file()), None
    )
    if ckpt is None:
        raise MedsslError(f"{run} has no checkpoint (checkpoints/best.ckpt or last.ckpt)")
    checkpoint = load_checkpoint_file(ckpt)
    _check_saved_plan(checkpoint.get("plan"), plan, ckpt, plan_file)
    state = checkpoint.get("state_dict", {})
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    system = _run_system(run, plan)
    try:
        system.load_state_dict(weights)
    except RuntimeError as exc:
        raise MedsslError(f"checkpoint {ckpt} does not fit the network in {plan_file}: {exc}") from None
    network = system.export()["network"]
    network.eval()
    return TrainedModel(network, plan, ckpt)


def load_model(model: str | Path, backend: str | None = None) -> TrainedModel:
    """The model ``predict --model`` names, run by ``backend``: ``torch`` (a run folder, ``load_trained_model``)
    or ``onnx`` (a ``medssl export`` ``.onnx`` file, or a run folder exported in memory; ONNX Runtime on the CPU,
    ``medssl.export.onnx``). Default: ``onnx`` for a ``.onnx`` file, else ``torch``.

    Raises:
        MedsslError: an unknown backend, a ``.onnx`` file with ``torch``, or the loader's errors (onnx or
            onnxruntime missing, a file that is not a medssl export, a folder that is not a fine-tuning run).
    """
    onnx_file = Path(model).suffix == ".onnx"
    backend = backend or ("onnx" if onnx_file else "torch")
    if backend == "onnx":
        from medssl.export.onnx import load_onnx_model

        return load_onnx_model(model)
    if backend != "torch":
        raise MedsslError(f"--backend must be torch or onnx, not {backend!r}")
    if onnx_file:
        raise MedsslError(f"{model} is an ONNX export; it runs with --backend onnx")
    return load_trained_model(model)


def _check_saved_plan(saved: Any, plan: Plan, ckpt: Path, plan_file: Path) -> None:
    """Refuse a checkpoint trained under another plan than the run folder's (a copied or edited plan.json would
    otherwise predict at the wrong spacing or with the classes renamed); checkpoints without a plan pass."""
    if not isinstance(saved, dict):
        return
    current = json.loads(json.dumps(dataclasses.asdict(plan)))
    saved = json.loads(json.dumps(saved))
    differ = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
    if differ:
        shown = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, plan.json {current.get(k)!r}" for k in differ[:3])
        raise MedsslError(f"checkpoint {ckpt} was trained under another plan than {plan_file} ({shown})")


def _run_system(run: Path, plan: Plan) -> System:
    """The segmentation system a fine-tuning run trained (``system`` and ``system_options`` of its ``config.yaml``;
    ``supervised`` for runs without them), built fresh for the plan; its state dict is the checkpoint's ``model.*``."""
    from medssl import registry

    saved: dict[str, Any] = {}
    if (run / "config.yaml").is_file():
        try:
            saved = yaml.safe_load((run / "config.yaml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise MedsslError(f"{run / 'config.yaml'} is not valid YAML: {exc}") from None
        if not isinstance(saved, dict):
            raise MedsslError(f"{run / 'config.yaml'} must hold a mapping of option: value")
    name = saved.get("system") or "supervised"
    where = f" (in {run / 'config.yaml'})"
    options = check_system_options("segmentation", name, saved.get("system_options") or {}, where)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    try:  # the augmentation/validation settings do not shape the network: defaults do where the saved ones fail
        cfg = FinetuneConfig(**check_options(FinetuneConfig, {k: v for k, v in saved.items() if k in fields}))
    except (MedsslError, TypeError):
        cfg = FinetuneConfig()
    system: System = registry.get("segmentation", name).for_run(plan, cfg, **options)
    return system


def input_problem(model: TrainedModel, image: np.ndarray, meta: ImageMeta, name: str) -> str | None:
    """Why ``model`` cannot predict this image, in one line naming it; None when it can.

    Refused: NaN or infinite values (the line ``medssl data check`` prints), and a dimensionality or channel count
    other than the training images'.

    Args:
        model: the trained model.
        image: the image as read, ``(C, *spatial)``.
        meta: its geometry.
        name: how to name the file.

    Returns:
        The problem, or None.
    """
    problem = nonfinite_problem(image, name)
    if problem:
        return problem
    plan = model.plan
    if image.ndim - 1 == plan.data_dims and image.shape[0] == plan.in_channels:
        return None
    trained_on = _training_data(model)
    return (
        f"the model expects {_image_kind(plan.data_dims, plan.in_channels)} images"
        f"{f' (trained on {trained_on})' if trained_on else ''}; "
        f"{name} is a {_image_kind(image.ndim - 1, image.shape[0])} image"
    )


def check_inputs(
    model: TrainedModel, cases: list[Case], progress: Callable[[list[Case], str], Iterable[Case]] | None = None
) -> dict[str, str]:
    """Read every input once and say which ones ``model`` cannot predict, before any output is written.

    Inputs are read again for prediction: reading is cheap beside the network, and keeping every volume of a
    folder in memory is not.

    Args:
        model: the trained model.
        cases: the inputs (``medssl.data.layouts.discover_input_cases``).
        progress: ``wrap(items, what)`` progress bar.

    Returns:
        Case id -> its problem (``input_problem``, or the reader's message for an unreadable file), for the bad
        ones.
    """
    bad: dict[str, str] = {}
    for case in progress(cases, "checking inputs") if progress else cases:
        try:
            image, meta = read_input(case)
        except MedsslError as exc:
            bad[case.case_id] = str(exc)
            continue
        name = str(case.images[0] if len(case.images) == 1 else case.images[0].parent)
        problem = input_problem(model, image, meta, name)
        if problem:
            bad[case.case_id] = problem
    return bad


def _image_kind(dims: int, channels: int) -> str:
    colour = {1: "single-channel", 3: "RGB" if dims == 2 else "3-channel"}.get(channels, f"{channels}-channel")
    return f"{dims}D {colour}"


def _training_data(model: TrainedModel) -> str | None:
    """The ``--data`` the model was fine-tuned on, from its run folder's ``command.json`` (None if unknown)."""
    if model.data or model.checkpoint.suffix != ".ckpt":
        return model.data
    try:
        data = json.loads((model.checkpoint.parents[1] / "command.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return str(data) if data else None


def read_input(case: Case) -> tuple[np.ndarray, ImageMeta]:
    """One input of ``medssl.data.layouts.discover_input_cases``: its file, or its channel files (a case folder)
    stacked ``(C, *spatial)`` with the first file's geometry."""
    return read_image(case.images[0]) if len(case.images) == 1 else load_image_channels(case.images)


def predict_image(
    model: TrainedModel, image: np.ndarray, meta: ImageMeta, *, overlap: float = 0.25, sw_batch_size: int = 4
) -> np.ndarray:
    """Labels for one raw image ``(C, *spatial)`` on its own grid: a label map ``(*spatial)`` with the
    training label values, or ``(S, *spatial)`` masks for multi-label models; an image the model cannot take
    (``input_problem``) raises ``MedsslError``."""
    probs = predict_probabilities(model, image, meta, overlap=overlap, sw_batch_size=sw_batch_size)
    return probabilities_to_labels(probs, model.plan, meta)


def predict_probabilities(
    model: TrainedModel, image: np.ndarray, meta: ImageMeta, *, overlap: float = 0.25, sw_batch_size: int = 4
) -> torch.Tensor:
    """Probabilities ``(K, *S)`` on the plan's grid for one raw image (softmax of a label map's classes, or a
    sigmoid per structure); an image the model cannot take (``input_problem``) raises ``MedsslError``."""
    problem = input_problem(model, image, meta, meta.source or "the image")
    if problem:
        raise MedsslError(problem)
    x = torch.from_numpy(preprocess_image(image, meta, model.plan))
    logits = predict_logits(model.network, x, model.plan, overlap=overlap, sw_batch_size=sw_batch_size)
    return activate(logits, model.plan)


def output_suffix(source: str | Path) -> str:
    """Suffix of a prediction file: the input's for lossless formats, NIfTI for DICOM, PNG for JPEG/GIF/PPM."""
    suffix = image_suffix(Path(source)) if source else ""
    renamed = {".nii": ".nii.gz", ".mhd": ".mha", ".nhdr": ".nrrd"}
    if suffix in {".nii.gz", ".nrrd", ".mha"} | _PICTURES | set(renamed):
        return renamed.get(suffix, suffix)
    return ".nii.gz" if not suffix else ".png"


def write_prediction(labels: np.ndarray, meta: ImageMeta, plan: Plan, out_dir: Path, name: str) -> list[Path]:
    """Write a label map to ``out_dir/<name><suffix>``, or each structure to ``out_dir/<structure>/...``.

    Binary structure masks are written 0/255 in picture formats (visible in any viewer), 0/1 otherwise.
    """
    suffix = output_suffix(meta.source)
    if plan.task == "labelmap":
        path = out_dir / f"{name}{suffix}"
        write_image(path, labels, meta)
        return [path]
    scale = 255 if suffix in _PICTURES else 1
    written = []
    for s, structure in enumerate(plan.class_names):
        path = out_dir / structure / f"{name}{suffix}"
        write_image(path, (labels[s] * scale).astype(np.uint8), meta)
        written.append(path)
    return written


def write_probabilities(probs: torch.Tensor, meta: ImageMeta, plan: Plan, out_dir: Path, name: str) -> list[Path]:
    """Write each foreground class's (or structure's) probability map, on the input's grid and geometry, to
    ``out_dir/probabilities/<class>/<name><suffix>``: float32 where the format holds it, 0-255 in pictures."""
    suffix = output_suffix(meta.source)
    maps = probabilities_on_input_grid(probs, meta).numpy()
    names = plan.class_names[1:] if plan.task == "labelmap" else plan.class_names
    maps = maps[1:] if plan.task == "labelmap" else maps
    written = []
    for structure, p in zip(names, maps, strict=True):
        path = out_dir / "probabilities" / structure / f"{name}{suffix}"
        pixels = np.rint(p * 255).astype(np.uint8) if suffix in _PICTURES else p.astype(np.float32)
        write_image(path, pixels, meta)
        written.append(path)
    return written


def expertise_vector(model: TrainedModel, raters: str) -> list[float]:
    """The rater-expertise weights ``--raters`` names for a model trained on several raters: ``uniform``, a
    rater's name (that rater alone), or one non-negative weight per rater (``1,0``; scaled to sum to 1).

    Raises:
        MedsslError: the model was not trained with rater conditioning, or the weights are not valid.
    """
    names = list(model.plan.extra.get("raters") or [])
    if not hasattr(model.network, "set_expertise") or not names:
        raise MedsslError("--raters needs a model trained on several raters with rater conditioning (system mrnet)")
    spec = raters.strip()
    if spec == "uniform":
        return [1.0 / len(names)] * len(names)
    if spec in names:
        return [float(n == spec) for n in names]
    try:
        weights = [float(v) for v in spec.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(names) or min(weights) < 0 or sum(weights) <= 0:
        raise MedsslError(
            f"--raters takes 'uniform', a rater's name ({', '.join(names)}) or {len(names)} non-negative weights "
            f"such as {','.join(['1'] + ['0'] * (len(names) - 1))}; got {raters!r}"
        )
    return [w / sum(weights) for w in weights]


def prediction_name(source: str | Path) -> str:
    """Output name of a prediction: the input's stem."""
    return stem(Path(source))
