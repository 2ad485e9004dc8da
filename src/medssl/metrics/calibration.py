"""Calibration of probability maps: reliability bins and the expected calibration error (ECE).

A prediction is a probability map ``prob`` in [0, 1] of one binary structure, shape ``(*spatial)``; the truth is a
binary mask or a soft one in [0, 1] (e.g. the mean of several raters' masks), same shape. Every pixel (voxel) is
one prediction, as in Guo et al. 2017 applied per pixel. An optional boolean ``mask`` (the field of view) keeps
only the pixels where it is true.

Bins are equal-width on [0, 1]: bin ``b`` holds ``b / n <= p < (b + 1) / n``, so 0.0 lands in the first bin and
the last bin is closed (1.0 lands in it). ``Bins`` keeps per-bin sums rather than means, so that bins of many
images merge exactly (``Bins.merge``, ``merge_bins``): the ECE of a test set is that of its merged bins, which
equals the ECE of all its pixels pooled.

The input checks (``probabilities``, ``field_of_view``) are shared with ``medssl.metrics.raters``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medssl.errors import MedsslError


def probabilities(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """Convert ``values`` to float64 and check that every value lies in [0, 1].

    Args:
        values: probabilities (or soft truth) of any shape.
        name: what the values are, for the error message (e.g. ``"prediction"``).

    Returns:
        The values as a float64 array of the same shape.

    Raises:
        MedsslError: if a value is outside [0, 1] or not a number.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MedsslError(f"{name} must be an array of numbers in [0, 1] ({exc})") from None
    # written so that NaN fails too (every comparison with NaN is false)
    if arr.size and not bool(np.all((arr >= 0.0) & (arr <= 1.0))):
        raise MedsslError(
            f"{name} must lie in [0, 1] (found values from {np.nanmin(arr):g} to {np.nanmax(arr):g}, or NaN); "
            "pass probabilities (e.g. after a sigmoid), not logits or label values"
        )
    return arr


def field_of_view(mask: npt.ArrayLike | None, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    """The boolean field-of-view mask for arrays of spatial shape ``shape`` (all true when ``mask`` is None).

    Args:
        mask: boolean (or 0/1) mask, shape ``shape``; None keeps every pixel.
        shape: the spatial shape of the arrays the mask restricts.

    Returns:
        A boolean array of shape ``shape``.

    Raises:
        MedsslError: if the mask's shape differs from ``shape``.
    """
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask).astype(bool, copy=False)
    if m.shape != tuple(shape):
        raise MedsslError(f"field-of-view mask shape {m.shape} does not match the image shape {tuple(shape)}")
    return m


@dataclass(frozen=True, eq=False)
class Bins:
    """Reliability bins: per equal-width confidence bin, the pixel count and the sums of confidence and truth.

    Attributes:
        edges: bin edges ``b / n`` for ``b = 0..n``, shape ``(n + 1,)``.
        counts: pixels per bin, shape ``(n,)``.
        confidence_sum: sum of the predicted probabilities per bin, shape ``(n,)``.
        truth_sum: sum of the (binary or soft) truth per bin, shape ``(n,)``.
    """

    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    confidence_sum: npt.NDArray[np.float64]
    truth_sum: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, n_bins: int = 10) -> Bins:
        """Bins holding no pixel: the start of an accumulation.

        Args:
            n_bins: number of equal-width bins on [0, 1].

        Returns:
            Bins with every count and sum zero.

        Raises:
            MedsslError: if ``n_bins`` is below 1.
        """
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
            raise MedsslError(f"n_bins must be a whole number >= 1, got {n_bins!r}")
        # k / n (not linspace's k * step) so that an edge equals the float a user writes, e.g. 0.3
        edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
        zeros = np.zeros(n_bins, dtype=np.float64)
        return cls(edges, np.zeros(n_bins, dtype=np.int64), zeros, zeros.copy())

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self.counts.size)

    @property
    def total(self) -> int:
        """Number of pixels in all bins."""
        return int(self.counts.sum())

    @property
    def confidence(self) -> npt.NDArray[np.float64]:
        """Mean predicted probability per bin; NaN for an empty bin."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.confidence_sum / self.counts, np.nan)

    @property
    def frequency(self) -> npt.NDArray[np.float64]:
        """Mean truth per bin (the observed frequency of the structure); NaN for an empty bin."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.truth_sum / self.counts, np.nan)

    def ece(self) -> float:
        """Expected calibration error ``sum_b (n_b / N) |conf_b - freq_b|`` over the non-empty bins.

        Returns:
            A value in [0, 1].

        Raises:
            MedsslError: if the bins hold no pixel (e.g. an empty field of view).
        """
        if self.total == 0:
            raise MedsslError("no pixels to compute the calibration error over: the field-of-view mask is empty")
        full = self.counts > 0
        gap = np.abs(self.confidence_sum[full] - self.truth_sum[full]) / self.counts[full]
        return float(np.sum(self.counts[full] / self.total * gap))

    def merge(self, other: Bins) -> Bins:
        """Bins of the pixels of both: counts and sums add.

        Args:
            other: bins with the same edges.

        Returns:
            The merged bins.

        Raises:
            MedsslError: if the bin edges differ.
        """
        if self.edges.shape != other.edges.shape or not np.array_equal(self.edges, other.edges):
            raise MedsslError(f"cannot merge bins of {self.n_bins} and {other.n_bins} bins; use the same n_bins")
        return Bins(
            self.edges,
            self.counts + other.counts,
            self.confidence_sum + other.confidence_sum,
            self.truth_sum + other.truth_sum,
        )


def merge_bins(bins: Iterable[Bins], n_bins: int = 10) -> Bins:
    """Merge the bins of many images (e.g. a test set).

    Args:
        bins: bins with equal edges.
        n_bins: number of bins of the result when ``bins`` is empty.

    Returns:
        The merged bins (``Bins.empty(n_bins)`` for no input).

    Raises:
        MedsslError: if the bins' edges differ.
    """
    merged: Bins | None = None
    for b in bins:
        merged = b if merged is None else merged.merge(b)
    return Bins.empty(n_bins) if merged is None else merged


def calibration_bins(
    prob: npt.ArrayLike, truth: npt.ArrayLike, n_bins: int = 10, mask: npt.ArrayLike | None = None
) -> Bins:
    """Reliability bins of one probability map against a binary or soft truth.

    Args:
        prob: predicted probabilities in [0, 1], shape ``(*spatial)``.
        truth: binary or soft truth in [0, 1], same shape; a bin's frequency is the mean truth of its pixels.
        n_bins: number of equal-width bins on [0, 1].
        mask: field of view, same shape; only its true pixels count. None: every pixel.

    Returns:
        The bins.

    Raises:
        MedsslError: if shapes differ, a value is outside [0, 1] or ``n_bins`` is below 1.
    """
    empty = Bins.empty(n_bins)
    p = probabilities(prob, "prediction")
    t = probabilities(truth, "truth")
    if p.shape != t.shape:
        raise MedsslError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    fov = field_of_view(mask, p.shape)
    p, t = p[fov], t[fov]
    # right-side search: a value equal to an edge opens the bin above it; 1.0 is folded into the last bin
    index = np.minimum(np.searchsorted(empty.edges, p, side="right") - 1, empty.n_bins - 1)
    return Bins(
        empty.edges,
        np.bincount(index, minlength=empty.n_bins).astype(np.int64),
        np.bincount(index, weights=p, minlength=empty.n_bins).astype(np.float64),
        np.bincount(index, weights=t, minlength=empty.n_bins).astype(np.float64),
    )


def expected_calibration_error(
    prob: npt.ArrayLike, truth: npt.ArrayLike, n_bins: int = 10, mask: npt.ArrayLike | None = None
) -> float:
    """Expected calibration error (Guo et al. 2017, per pixel): ``sum_b (n_b / N) |conf_b - freq_b|``.

    Args:
        prob: predicted probabilities in [0, 1], shape ``(*spatial)``.
        truth: binary or soft truth in [0, 1], same shape.
        n_bins: number of equal-width bins on [0, 1].
        mask: field of view, same shape; None: every pixel.

    Returns:
        A value in [0, 1]; 0 is perfectly calibrated.

    Raises:
        MedsslError: if shapes differ, a value is outside [0, 1], or the field of view is empty.
    """
    return calibration_bins(prob, truth, n_bins, mask).ece()
