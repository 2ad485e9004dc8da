"""Voxel-overlap metrics between a predicted and a reference binary mask.

Both functions take masks of any dimensionality (and equal shape); non-zero values are foreground.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


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
