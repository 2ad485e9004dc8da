"""Metrics against several raters: soft Dice, Dice per rater, inter-rater agreement and the generalized energy
distance.

The truth is ``R`` raters' binary masks ``raters`` of shape ``(R, *spatial)`` (0/1 or boolean); the soft truth is
their mean (``soft_truth``, optionally weighted), in [0, 1]. Predictions are probability maps ``prob`` in [0, 1]
of shape ``(*spatial)``, or binary samples ``(M, *spatial)`` for the energy distance. An optional boolean
``mask`` (the field of view, shape ``(*spatial)``) keeps only the pixels where it is true, in every metric.

Empty-mask rules: a Dice of two empty masks is 1.0 (perfect agreement on absence, as ``medssl.metrics.dice``);
the distance ``1 - IoU`` of two empty masks is 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from medssl.errors import MedsslError
from medssl.metrics.calibration import field_of_view, probabilities
from medssl.metrics.overlap import dice

#: The thresholds of the MRNet / QUBIQ soft Dice.
SOFT_DICE_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def binary_stack(masks: npt.ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    """Check that a stack of masks ``(K, *spatial)`` is binary and return it as booleans.

    Args:
        masks: 0/1 or boolean masks, one per leading index.
        name: what the masks are, for the error message (e.g. ``"raters"``).

    Returns:
        A boolean array of the same shape.

    Raises:
        MedsslError: if there is no leading axis, it is empty, or a value is neither 0 nor 1.
    """
    arr = np.asarray(masks)
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise MedsslError(f"{name} must be a non-empty stack of masks, shape (K, *spatial); got shape {arr.shape}")
    if arr.dtype != np.bool_ and not bool(np.all((arr == 0) | (arr == 1))):
        raise MedsslError(f"{name} must be binary masks of 0 and 1; binarise them first (e.g. masks > 0)")
    return arr.astype(bool, copy=False)


def soft_truth(raters: npt.ArrayLike, weights: Sequence[float] | None = None) -> npt.NDArray[np.float64]:
    """The raters' (weighted) mean mask: the fraction of raters marking each pixel.

    Args:
        raters: binary masks, shape ``(R, *spatial)``.
        weights: one non-negative weight per rater (normalised to sum 1); None: equal weights.

    Returns:
        The soft truth in [0, 1], shape ``(*spatial)``.

    Raises:
        MedsslError: if the masks are not binary or the weights do not fit.
    """
    r = binary_stack(raters, "raters")
    if weights is None:
        return r.mean(axis=0, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (r.shape[0],) or not bool(np.all(w >= 0)) or not w.sum() > 0:
        raise MedsslError(f"weights must be {r.shape[0]} non-negative numbers (one per rater) with a positive sum")
    return np.tensordot(w / w.sum(), r.astype(np.float64), axes=1)


def soft_dice(
    prob: npt.ArrayLike,
    soft_truth: npt.ArrayLike,
    thresholds: Sequence[float] = SOFT_DICE_THRESHOLDS,
    mask: npt.ArrayLike | None = None,
) -> float:
    """Soft Dice (MRNet / QUBIQ): the mean over thresholds ``t`` of ``Dice(prob > t, soft_truth > t)``.

    Both the prediction and the soft truth are thresholded at each ``t``. At a threshold where both are empty
    the Dice is 1.0 (perfect agreement on absence).

    Args:
        prob: predicted probabilities in [0, 1], shape ``(*spatial)``.
        soft_truth: soft truth in [0, 1] (e.g. ``soft_truth(raters)``), same shape.
        thresholds: the thresholds ``t``, each in [0, 1].
        mask: field of view, same shape; None: every pixel.

    Returns:
        A value in [0, 1].

    Raises:
        MedsslError: if shapes differ, a value or threshold is outside [0, 1], or there are no thresholds.
    """
    p = probabilities(prob, "prediction")
    s = probabilities(soft_truth, "soft truth")
    if p.shape != s.shape:
        raise MedsslError(f"prediction shape {p.shape} does not match soft truth shape {s.shape}")
    ts = probabilities(thresholds, "thresholds")
    if ts.ndim != 1 or ts.size == 0:
        raise MedsslError("thresholds must be a non-empty list of numbers in [0, 1]")
    fov = field_of_view(mask, p.shape)
    p, s = p[fov], s[fov]
    return float(np.mean([dice(p > t, s > t) for t in ts]))


def rater_dice(
    prob: npt.ArrayLike,
    raters: npt.ArrayLike,
    threshold: float = 0.5,
    mask: npt.ArrayLike | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Hard Dice of ``prob > threshold`` against each rater and against the raters' mean mask.

    The mean mask is ``soft_truth(raters) > 0.5``: a pixel more than half of the raters mark (a tie, e.g. one of
    two raters, counts as background; with two raters it is their intersection).

    Args:
        prob: predicted probabilities in [0, 1], shape ``(*spatial)``.
        raters: binary masks, shape ``(R, *spatial)``.
        threshold: the prediction is foreground where ``prob > threshold``.
        mask: field of view, shape ``(*spatial)``; None: every pixel.
        names: one key per rater; None: ``rater0``, ``rater1``, ...

    Returns:
        ``{name: Dice}`` per rater, in rater order, then ``"mean"``; values in [0, 1] (both empty: 1.0).

    Raises:
        MedsslError: if shapes differ, values are out of range, or the names do not fit.
    """
    p = probabilities(prob, "prediction")
    r = binary_stack(raters, "raters")
    if r.shape[1:] != p.shape:
        raise MedsslError(f"raters' mask shape {r.shape[1:]} does not match prediction shape {p.shape}")
    keys = [f"rater{i}" for i in range(r.shape[0])] if names is None else [str(n) for n in names]
    if len(keys) != r.shape[0] or len(set(keys)) != len(keys) or "mean" in keys:
        raise MedsslError(f"names must be {r.shape[0]} distinct names (one per rater), none of them 'mean'")
    if not 0.0 <= float(threshold) <= 1.0:
        raise MedsslError(f"threshold must lie in [0, 1], got {threshold}")
    fov = field_of_view(mask, p.shape)
    pred, r = p[fov] > threshold, r[:, fov]
    scores = {key: dice(pred, rater) for key, rater in zip(keys, r, strict=True)}
    scores["mean"] = dice(pred, r.mean(axis=0) > 0.5)
    return scores


def rater_agreement(raters: npt.ArrayLike, mask: npt.ArrayLike | None = None) -> float:
    """Inter-rater agreement: the mean Dice over all pairs of distinct raters.

    Args:
        raters: binary masks, shape ``(R, *spatial)``, ``R >= 2``.
        mask: field of view, shape ``(*spatial)``; None: every pixel.

    Returns:
        A value in [0, 1] (a pair of empty masks counts 1.0).

    Raises:
        MedsslError: if there are fewer than two raters or the masks are not binary.
    """
    r = binary_stack(raters, "raters")
    if r.shape[0] < 2:
        raise MedsslError(f"agreement needs at least two raters, got {r.shape[0]}")
    r = r[:, field_of_view(mask, r.shape[1:])]
    pairs = [dice(r[i], r[j]) for i in range(r.shape[0]) for j in range(i + 1, r.shape[0])]
    return float(np.mean(pairs))


def iou_distances(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """All pairwise distances ``1 - IoU`` between two stacks of flattened masks.

    Args:
        a: boolean masks, shape ``(K, N)``.
        b: boolean masks, shape ``(L, N)``.

    Returns:
        Shape ``(K, L)``, values in [0, 1]; 0.0 for two empty masks.
    """
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    inter = fa @ fb.T  # exact: counts are far below 2**53
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, 1.0 - inter / np.maximum(union, 1.0), 0.0)


def generalized_energy_distance(
    samples: npt.ArrayLike, raters: npt.ArrayLike, mask: npt.ArrayLike | None = None
) -> float:
    """Generalized energy distance (Kohl et al. 2018), ``2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]``.

    ``d = 1 - IoU`` of binary masks, with ``d(empty, empty) = 0``. ``S`` ranges over the prediction samples and
    ``Y`` over the raters; ``S, S'`` (and ``Y, Y'``) are pairs of distinct indices. A single sample (or rater)
    has no pair: its term is 0, as for a deterministic prediction whose samples are all the same.

    Args:
        samples: binary prediction samples, shape ``(M, *spatial)``.
        raters: binary masks, shape ``(R, *spatial)``.
        mask: field of view, shape ``(*spatial)``; None: every pixel.

    Returns:
        ``D^2_GED``, at most 2; 0 when every sample and rater agree. Over distinct pairs the estimate is
        unbiased but can fall slightly below 0 when there are few samples or raters.

    Raises:
        MedsslError: if the spatial shapes differ or the masks are not binary.
    """
    s = binary_stack(samples, "samples")
    y = binary_stack(raters, "raters")
    if s.shape[1:] != y.shape[1:]:
        raise MedsslError(f"samples' mask shape {s.shape[1:]} does not match raters' mask shape {y.shape[1:]}")
    fov = field_of_view(mask, s.shape[1:])
    s, y = s[:, fov], y[:, fov]
    cross = float(iou_distances(s, y).mean())

    def within(m: npt.NDArray[np.bool_]) -> float:
        # the diagonal d(X, X) is 0, so the sum over all pairs is the sum over distinct ones
        k = m.shape[0]
        return float(iou_distances(m, m).sum() / (k * (k - 1))) if k > 1 else 0.0

    return 2.0 * cross - within(s) - within(y)
