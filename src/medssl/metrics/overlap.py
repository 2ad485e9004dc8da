"""Voxel-overlap metrics between a predicted and a reference binary mask.

``dice``, ``xor_error`` take masks of any dimensionality (and equal shape); non-zero values are foreground.
``dice_scores`` is the one Dice implementation: ``dice`` (test metrics) and validation's ``foreground_dice``
both call it, each with its own empty-mask rule.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from medssl.errors import MedsslError


def as_mask_pair(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Convert two masks to boolean arrays and check that their shapes agree.

    Args:
        pred: predicted mask, shape ``(*spatial)``.
        truth: reference mask, shape ``(*spatial)``.

    Returns:
        ``(pred, truth)`` as boolean arrays of shape ``(*spatial)``.

    Raises:
        MedsslError: if the shapes differ.
    """
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise MedsslError(f"prediction shape {p.shape} does not match reference shape {t.shape}")
    return p, t


def dice(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice similarity coefficient ``2|P ∩ G| / (|P| + |G|)``.

    Args:
        pred: predicted mask ``P``, shape ``(*spatial)``.
        truth: reference mask ``G``, same shape.

    Returns:
        A value in [0, 1]; 1.0 when both masks are empty (perfect agreement on absence), 0.0 when only one is.
    """
    p, t = as_mask_pair(pred, truth)
    # flattened to one axis so that 0-d masks work too; contiguous so that torch shares the memory (no copy)
    flat_p, flat_t = (torch.from_numpy(np.ascontiguousarray(m).reshape(-1)) for m in (p, t))
    return float(dice_scores(flat_p, flat_t, spatial_dims=1, empty=1.0, dtype=torch.float64))


def dice_scores(
    pred: torch.Tensor, truth: torch.Tensor, *, spatial_dims: int, empty: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Dice ``2|P ∩ G| / (|P| + |G|)`` of boolean masks, summed over their last ``spatial_dims`` axes.

    Torch, not numpy: validation calls it on (GPU) tensors every validation step, where a trip to the host per
    case would cost; numpy masks convert without a copy (see ``dice``).

    Args:
        pred: predicted masks ``P``, boolean, shape ``(*leading, *spatial)`` (e.g. ``(K, H, W)``: one per class).
        truth: reference masks ``G``, boolean, same shape.
        spatial_dims: how many trailing axes are spatial (2 or 3 for images; the leading axes are kept).
        empty: the value where ``P`` and ``G`` are both empty, where the ratio is 0/0. The test metrics use 1.0
            (perfect agreement on absence); validation uses NaN and skips it in its mean. Only one empty gives 0.
        dtype: floating type of the counts and the ratio (validation: float32; test metrics: float64).

    Returns:
        Shape ``(*leading)``, values in [0, 1] or ``empty``.

    Raises:
        MedsslError: if the shapes differ or ``spatial_dims`` is not in ``[1, pred.ndim]``.
    """
    if pred.shape != truth.shape:
        raise MedsslError(f"prediction shape {tuple(pred.shape)} does not match reference shape {tuple(truth.shape)}")
    if not 1 <= spatial_dims <= pred.ndim:
        raise MedsslError(f"spatial_dims must be in [1, {pred.ndim}] for masks of shape {tuple(pred.shape)}")
    dims = tuple(range(pred.ndim - spatial_dims, pred.ndim))
    inter = (pred & truth).sum(dims).to(dtype)
    total = pred.sum(dims).to(dtype) + truth.sum(dims).to(dtype)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.full_like(total, empty))


def xor_error(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float | None:
    """Disagreeing voxels relative to the reference size, ``|P xor G| / |G|``.

    Args:
        pred: predicted mask ``P``, shape ``(*spatial)``.
        truth: reference mask ``G``, same shape.

    Returns:
        A value >= 0 (it exceeds 1 when the prediction is much larger than the reference); ``None`` when the
        reference is empty, where the ratio is undefined.
    """
    p, t = as_mask_pair(pred, truth)
    n_truth = int(t.sum())
    if n_truth == 0:
        return None
    return int(np.logical_xor(p, t).sum()) / n_truth
