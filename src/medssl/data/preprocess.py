"""Applying a plan: resampling to the target spacing, intensity normalisation, and label encoding; and the
way back from network output to a label map on the input's grid.

Label maps are only ever resampled with nearest neighbour; predictions are resampled as probabilities
(linear) and then turned into labels, as nnU-Net does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medssl.data.geometry import ImageMeta
from medssl.data.loading import LoadedCase
from medssl.data.plan import Plan
from medssl.errors import MedsslError


def resampled_shape(meta: ImageMeta, shape: tuple[int, ...], plan: Plan) -> tuple[int, ...]:
    """Spatial shape of an image of ``shape`` after resampling to the plan's target spacing."""
    if plan.target_spacing is None:
        return tuple(shape)
    return tuple(max(1, round(s * sp / t)) for s, sp, t in zip(shape, meta.spacing, plan.target_spacing, strict=True))


def resample(array: np.ndarray, shape: tuple[int, ...], *, nearest: bool) -> np.ndarray:
    """Resample ``(C, *spatial)`` to ``shape``; ``nearest`` for labels, (bi/tri)linear otherwise."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    mode = "nearest-exact" if nearest else ("bilinear" if len(shape) == 2 else "trilinear")
    t = torch.from_numpy(np.ascontiguousarray(array)).float()[None]
    out = F.interpolate(t, size=tuple(shape), mode=mode, **({} if nearest else {"align_corners": False}))[0]
    return out.numpy().astype(array.dtype if nearest else np.float32, copy=False)


def normalize(image: np.ndarray, plan: Plan) -> np.ndarray:
    """Intensity normalisation per channel, ``(C, *spatial)`` float32."""
    out = np.empty(image.shape, dtype=np.float32)
    for ch in range(image.shape[0]):
        x = image[ch].astype(np.float32)
        x = np.where(np.isfinite(x), x, 0.0)
        if plan.normalization == "ct":
            st = plan.intensity[ch]
            x = (np.clip(x, st["p00_5"], st["p99_5"]) - st["mean"]) / max(st["std"], 1e-8)
        elif plan.normalization == "rgb":
            x = x / 255.0
        else:
            x = (x - x.mean()) / max(float(x.std()), 1e-8)
        out[ch] = x
    return out


def preprocess_image(image: np.ndarray, meta: ImageMeta, plan: Plan) -> np.ndarray:
    """Raw ``(C, *spatial)`` image to network input on the plan's grid."""
    if image.shape[0] != plan.in_channels:
        raise MedsslError(
            f"{meta.source or 'image'} has {image.shape[0]} channel(s), the model expects {plan.in_channels}"
        )
    if image.ndim - 1 != plan.data_dims:
        raise MedsslError(f"{meta.source or 'image'} is {image.ndim - 1}D, the model was trained on {plan.data_dims}D")
    shape = resampled_shape(meta, image.shape[1:], plan)
    return normalize(resample(image, shape, nearest=False), plan)


def encode_target(case: LoadedCase, plan: Plan) -> np.ndarray:
    """The case's labels as training targets on the plan's grid.

    Returns:
        ``(1, *spatial)`` uint8 class indices (labelmap) or ``(S, *spatial)`` uint8 masks (multilabel).
    """
    shape = resampled_shape(case.meta, case.image.shape[1:], plan)
    if plan.task == "multilabel":
        if case.structures is None:
            raise MedsslError(f"case {case.case_id} has no structure masks")
        return resample(case.structures.astype(np.uint8), shape, nearest=True)
    if case.label is None:
        raise MedsslError(f"case {case.case_id} has no label map")
    return resample(_class_indices(case.label[None], case.case_id, plan), shape, nearest=True)


def encode_raters(case: LoadedCase, plan: Plan) -> np.ndarray:
    """Every rater's label map as a training target on the plan's grid, encoded as ``encode_target`` encodes the
    label (a labelmap plan: the raters of a multi-rater dataset draw label maps). With a binary plan (classes 0/1
    or 0/255), a rater's binary mask is foreground where nonzero whichever of 0/1 and 0/255 it uses: DRIVE's first
    observer draws 0/255, its second 0/1.

    Returns:
        ``(R, *spatial)`` uint8 class indices, one map per rater (``LoadedCase.raters`` order).

    Raises:
        MedsslError: the case has no raters' maps (one observer, or not loaded with ``raters=True``), the plan is
            not a labelmap plan, or a rater used a value that is not a planned class.
    """
    if case.raters is None:
        raise MedsslError(f"case {case.case_id} has no raters' label maps (one observer, or not loaded with raters)")
    if plan.task == "multilabel":
        raise MedsslError(f"case {case.case_id}: raters' label maps need a labelmap plan, not a multilabel one")
    maps = case.raters
    if plan.class_values in ([0, 1], [0, 255]):
        binary = [any(set(np.unique(m).tolist()) <= pair for pair in ({0, 1}, {0, 255})) for m in maps]
        maps = np.stack([(m > 0) * plan.class_values[1] if yes else m for m, yes in zip(maps, binary, strict=True)])
    shape = resampled_shape(case.meta, case.image.shape[1:], plan)
    return resample(_class_indices(maps, case.case_id, plan), shape, nearest=True)


def _class_indices(labels: np.ndarray, case_id: str, plan: Plan) -> np.ndarray:
    """Raw label values to the plan's class indices, uint8, same shape."""
    lut = {v: i for i, v in enumerate(plan.class_values)}
    values = np.unique(labels)
    unknown = [int(v) for v in values if int(v) not in lut]
    if unknown:
        raise MedsslError(
            f"case {case_id}: label values {unknown} are not among the planned classes {plan.class_values}"
        )
    encoded = np.zeros(labels.shape, dtype=np.uint8)
    for v in values:
        encoded[labels == v] = lut[int(v)]
    return encoded


def probabilities_on_input_grid(probs: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """Network probabilities ``(K, *spatial)`` on the plan's grid, interpolated (linearly) to the input's grid."""
    shape = tuple(meta.shape)
    if tuple(probs.shape[1:]) != shape:
        mode = "bilinear" if len(shape) == 2 else "trilinear"
        probs = F.interpolate(probs[None].float(), size=shape, mode=mode, align_corners=False)[0]
    return probs


def probabilities_to_labels(probs: torch.Tensor, plan: Plan, meta: ImageMeta) -> np.ndarray:
    """Network probabilities ``(K, *spatial)`` on the plan's grid to raw labels on the input's grid.

    Returns:
        ``(*spatial)`` label map with the raw label values (labelmap) or ``(S, *spatial)`` uint8 masks.
    """
    probs = probabilities_on_input_grid(probs, meta)
    if plan.task == "multilabel":
        return (probs > 0.5).to(torch.uint8).numpy()
    index = probs.argmax(0).numpy()
    values = np.asarray(plan.class_values)
    out = values[index]
    return out.astype(np.uint8 if values.max() < 256 else np.uint16)
