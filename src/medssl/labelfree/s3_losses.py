"""The losses of S3-Net's per-image optimisation, and the random affine transforms of its consistency term.

Karimijafarbigloo et al., "Self-supervised Semantic Segmentation: Consistency over Transformation", ICCV
Workshops 2023, https://arxiv.org/abs/2309.00143; the boundary loss is the source document's improvement.

Every loss takes a ``valid`` mask ``(B, H, W)`` (the field of view, and for transformed images the part that
came from inside the picture) and averages over its pixels only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.segment.augment import apply_affine

# Neighbour offsets of the spatial-consistency loss: right, down and down-right (the document's X, Y and XY).
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1))


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values (B, H, W)`` over ``valid (B, H, W)``; 0 (with a gradient path) when nothing is valid."""
    weight = valid.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def self_training_loss(response: Tensor, valid: Tensor, target: Tensor | None = None) -> Tensor:
    """Cross-entropy between the soft prediction and its own argmax map (the clustering's self-training).

    Args:
        response: ``(B, K, H, W)`` logits.
        valid: ``(B, H, W)`` pixels to average over.
        target: ``(B, H, W)`` labels to use instead of the argmax map (None: the argmax map).

    Returns:
        Scalar loss.
    """
    if target is None:
        target = response.detach().argmax(dim=1)
    return _masked_mean(F.cross_entropy(response, target, reduction="none"), valid)


def affine_consistency_loss(response_transformed: Tensor, transformed_labels: Tensor, valid: Tensor) -> Tensor:
    """Cross-entropy between the prediction on a transformed image and the transformed prediction's labels.

    Args:
        response_transformed: ``(B, K, H, W)`` logits of the network on ``T(image)``.
        transformed_labels: ``(B, H, W)`` integer labels ``T(argmax f(image))`` (nearest-neighbour warp).
        valid: ``(B, H, W)`` pixels of ``T(image)`` that came from inside the picture's field of view.

    Returns:
        Scalar loss.
    """
    loss = F.cross_entropy(response_transformed, transformed_labels.long(), reduction="none")
    return _masked_mean(loss, valid)


def _shift_pairs(x: Tensor, dy: int, dx: int) -> tuple[Tensor, Tensor]:
    """``(x[p], x[p + (dy, dx)])`` over the pixels ``p`` whose neighbour is inside the image."""
    h, w = x.shape[-2:]
    return x[..., : h - dy, : w - dx], x[..., dy:, dx:]


def spatial_consistency_loss(probabilities: Tensor, image: Tensor, valid: Tensor) -> Tensor:
    """Edge-aware smoothness: neighbouring pixels should agree unless the image has an edge between them.

    ``L = mean_d mean_p exp(-|I_p - I_q|^2 / (2 sigma^2)) * ||S_p - S_q||_1`` over the neighbours ``q = p + d``
    to the right, below and diagonally below, with ``sigma`` the mean image difference over all valid pairs.
    The document's formula relates the prediction's differences along x, y and xy to the image edges ``Z``;
    it is computed here on tensors, so (unlike the public code's numpy rendering) it has a gradient.

    Args:
        probabilities: ``(B, K, H, W)`` soft prediction ``S``.
        image: ``(B, C, H, W)`` network input ``I``.
        valid: ``(B, H, W)``; a pair counts when both pixels are valid.

    Returns:
        Scalar loss.
    """
    pairs = []
    for dy, dx in _NEIGHBOURS:
        s_p, s_q = _shift_pairs(probabilities, dy, dx)
        i_p, i_q = _shift_pairs(image, dy, dx)
        v_p, v_q = _shift_pairs(valid, dy, dx)
        pairs.append(((s_p - s_q).abs().sum(dim=1), (i_p - i_q).square().sum(dim=1), v_p & v_q))
    # One sigma for all directions: the mean image difference over every valid pair.
    total = torch.stack([(edge.sqrt() * pair_valid).sum() for _, edge, pair_valid in pairs]).sum()
    count = int(sum(int(pair_valid.sum()) for _, _, pair_valid in pairs))
    sigma2 = (total / max(count, 1)).detach().square().clamp_min(1e-6)
    terms = [_masked_mean(torch.exp(-edge / (2 * sigma2)) * change, ok) for change, edge, ok in pairs]
    return torch.stack(terms).mean()


def boundary_loss(probabilities: Tensor, valid: Tensor, factor: int = 16) -> Tensor:
    """``mean |up(down(S)) - S|``: large along cluster boundaries, so minimising it shortens and smooths them.

    Args:
        probabilities: ``(B, K, H, W)`` soft prediction ``S`` with ``H`` and ``W`` divisible by ``factor``.
        valid: ``(B, H, W)`` pixels to average over.
        factor: average-pooling factor ``beta`` (document: 16); the upsampling is bilinear.

    Returns:
        Scalar loss.
    """
    coarse = F.avg_pool2d(probabilities, factor)
    restored = F.interpolate(coarse, size=probabilities.shape[-2:], mode="bilinear", align_corners=False)
    return _masked_mean((restored - probabilities).abs().sum(dim=1), valid)


def random_affine(
    batch: int,
    *,
    max_degrees: float,
    scale_range: tuple[float, float] | list[float],
    max_translation: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random rotation, isotropic scale and translation as ``(B, 2, 3)`` matrices for ``F.affine_grid``.

    The matrix maps output coordinates to input coordinates (``affine_grid``'s convention, ``[-1, 1]`` across
    the image), so a scale ``s`` zooms the content by ``s``.

    Args:
        batch: number of matrices ``B``.
        max_degrees: rotation uniform in ``[-max_degrees, max_degrees]``.
        scale_range: zoom uniform in this range.
        max_translation: shift uniform in ``[-t, t]`` of the image size per axis.
        generator: random generator.

    Returns:
        ``(B, 2, 3)`` float32 matrices.
    """
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(max_degrees)
    scale = scale_range[0] + torch.rand(batch, generator=generator) * (scale_range[1] - scale_range[0])
    shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * max_translation * 2  # [-1, 1] spans the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    )


def transform_pair(image: Tensor, labels: Tensor, valid: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Apply the same affine transform to an image (bilinear) and to its labels and valid mask (nearest).

    Args:
        image: ``(B, C, H, W)``.
        labels: ``(B, H, W)`` integer labels.
        valid: ``(B, H, W)`` boolean mask.
        theta: ``(B, 2, 3)`` matrices (``random_affine``).

    Returns:
        ``(image, labels, valid)`` transformed; ``valid`` is False where the transform reads outside the image.
    """
    targets = torch.stack([labels.to(image.dtype), valid.to(image.dtype)], dim=1)
    warped, warped_targets = apply_affine(image, targets, theta)
    return warped, warped_targets[:, 0].round().long(), warped_targets[:, 1] > 0.5
