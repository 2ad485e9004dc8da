"""Sliding-window prediction of a whole image, memory bounded by the tile size.

Volumes are tiled with MONAI's ``sliding_window_inference`` (Gaussian-weighted overlap); a 2D network on
a volume predicts it slice by slice, a few slices at a time.
"""

from __future__ import annotations

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medssl.data.plan import Plan


@torch.no_grad()
def predict_logits(
    network: nn.Module,
    image: torch.Tensor,
    plan: Plan,
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 4,
) -> torch.Tensor:
    """Logits ``(K, *spatial)`` for one preprocessed image ``(C, *spatial)`` on the plan's grid."""
    network.eval()
    if plan.slice_axis is not None and plan.spatial_dims < plan.data_dims:
        ax = plan.slice_axis + 1
        slices = image.movedim(ax, 0)  # (S, C, *plane)
        outs = [
            _tiles(network, slices[i : i + sw_batch_size], plan, overlap, sw_batch_size)
            for i in range(0, slices.shape[0], sw_batch_size)
        ]
        return torch.cat(outs, 0).movedim(0, ax)
    return _tiles(network, image[None], plan, overlap, sw_batch_size)[0]


def _tiles(network: nn.Module, batch: torch.Tensor, plan: Plan, overlap: float, sw_batch_size: int) -> torch.Tensor:
    out = sliding_window_inference(
        batch,
        roi_size=tuple(plan.patch_size),
        sw_batch_size=sw_batch_size,
        predictor=network,
        overlap=overlap,
        mode="gaussian",
    )
    assert isinstance(out, torch.Tensor)
    return out


def activate(logits: torch.Tensor, plan: Plan) -> torch.Tensor:
    """Probabilities from logits: softmax over classes, or sigmoid per structure."""
    return torch.sigmoid(logits) if plan.task == "multilabel" else torch.softmax(logits, dim=0)
