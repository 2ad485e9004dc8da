"""Prediction with a trained run folder: load the plan and the best checkpoint, predict images, write label
maps with the input's geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medssl.data.geometry import ImageMeta
from medssl.data.io import image_suffix, stem, write_image
from medssl.data.plan import Plan
from medssl.data.preprocess import preprocess_image, probabilities_to_labels
from medssl.errors import MedsslError
from medssl.networks.unet import build_unet
from medssl.networks.weights import load_checkpoint_file
from medssl.segment.inference import activate, predict_logits

_PICTURES = {".png", ".bmp", ".tif", ".tiff"}


@dataclass
class TrainedModel:
    """A network with the plan it was trained under."""

    network: nn.Module
    plan: Plan
    checkpoint: Path


def build_network(plan: Plan) -> nn.Module:
    """The U-Net the plan describes."""
    return build_unet(plan.spatial_dims, plan.in_channels, plan.out_channels, channels=tuple(plan.channels))


def load_trained_model(run_dir: str | Path) -> TrainedModel:
    """Load ``plan.json`` and ``checkpoints/best.ckpt`` (else ``last.ckpt``) of a fine-tuning run."""
    run = Path(run_dir)
    plan_file = run / "plan.json"
    if not plan_file.is_file():
        raise MedsslError(f"{run} is not a medssl fine-tuning run folder (no plan.json)")
    plan = Plan.load(plan_file)
    ckpt = next(
        (p for p in (run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt") if p.is_file()), None
    )
    if ckpt is None:
        raise MedsslError(f"{run} has no checkpoint (checkpoints/best.ckpt or last.ckpt)")
    state = load_checkpoint_file(ckpt).get("state_dict", {})
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    network = build_network(plan)
    try:
        network.load_state_dict(weights)
    except RuntimeError as exc:
        raise MedsslError(f"checkpoint {ckpt} does not fit the network in {plan_file}: {exc}") from None
    network.eval()
    return TrainedModel(network, plan, ckpt)


def predict_image(
    model: TrainedModel, image: np.ndarray, meta: ImageMeta, *, overlap: float = 0.25, sw_batch_size: int = 4
) -> np.ndarray:
    """Labels for one raw image ``(C, *spatial)`` on its own grid: a label map ``(*spatial)`` with the
    training label values, or ``(S, *spatial)`` masks for multi-label models."""
    x = torch.from_numpy(preprocess_image(image, meta, model.plan))
    logits = predict_logits(model.network, x, model.plan, overlap=overlap, sw_batch_size=sw_batch_size)
    return probabilities_to_labels(activate(logits, model.plan), model.plan, meta)


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


def prediction_name(source: str | Path) -> str:
    """Output name of a prediction: the input's stem."""
    return stem(Path(source))
