"""Image-quality metrics for super-resolution: PSNR and SSIM, pure functions of numpy arrays.

Both take the intensity range from the caller (``data_range``: the span of the intensity scale the images are
on, e.g. 1.0 for images normalised to [0, 1]) and never rescale or clip: a metric on another range than the one
stated is another number. Both work over the whole image or inside a foreground ``mask`` (e.g. the head).

- ``psnr = 10 log10(data_range^2 / MSE)``, the MSE over all pixels or over the mask's; ``inf`` when equal.
  Equals scikit-image's ``peak_signal_noise_ratio(truth, pred, data_range=data_range)``.
- ``ssim``: Wang et al. (2004) with a Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 taps), K1 = 0.01,
  K2 = 0.03 and population (not sample) covariances: scikit-image's ``structural_similarity`` with
  ``gaussian_weights=True, use_sample_covariance=False, data_range=data_range``. Local statistics are Gaussian
  filtered with reflected borders; as in scikit-image, the SSIM map is averaged without its 5-pixel border (where
  the window leaves the image and the padding mode would matter), so the whole-image value equals scikit-image's
  whatever its padding. Inside a mask: the mean of the
  same map over the mask's pixels outside that border. 2D or 3D (every axis at least 11 long).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter

from medssl.errors import MedsslError

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_TRUNCATE", "psnr", "ssim", "ssim_map"]

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: an 11-tap window
SSIM_K1 = 0.01
SSIM_K2 = 0.03

Float = npt.NDArray[np.float64]


def _prepare(
    pred: npt.ArrayLike, truth: npt.ArrayLike, data_range: float, mask: npt.ArrayLike | None
) -> tuple[Float, Float, npt.NDArray[np.bool_] | None]:
    """Check shapes, range and mask; return float64 images and a boolean mask (or None)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape:
        raise MedsslError(f"prediction shape {p.shape} does not match reference shape {t.shape}")
    if isinstance(data_range, bool) or not (isinstance(data_range, int | float) and math.isfinite(data_range)):
        raise MedsslError(f"data_range must be a finite positive number (the intensity span), got {data_range!r}")
    if data_range <= 0:
        raise MedsslError(f"data_range must be positive (the span of the intensity scale), got {data_range!r}")
    if mask is None:
        return p, t, None
    m = np.asarray(mask).astype(bool, copy=False)
    if m.shape != t.shape:
        raise MedsslError(f"mask shape {m.shape} does not match image shape {t.shape}")
    return p, t, m


def psnr(pred: npt.ArrayLike, truth: npt.ArrayLike, data_range: float, mask: npt.ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    Args:
        pred: the estimate, any shape.
        truth: the reference, same shape.
        data_range: the span of the intensity scale (the "peak"), stated by the caller; not taken from the data.
        mask: optional foreground, same shape; the MSE is then over its pixels only.

    Returns:
        PSNR in dB; ``inf`` when the images agree exactly (where it is computed).

    Raises:
        MedsslError: shapes that differ, a non-positive or non-finite ``data_range``, or an empty mask.
    """
    p, t, m = _prepare(pred, truth, data_range, mask)
    diff = p - t if m is None else (p - t)[m]
    if diff.size == 0:
        raise MedsslError("PSNR of an empty image or mask is undefined: give a mask with foreground pixels")
    mse = float(np.mean(diff**2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim_map(pred: npt.ArrayLike, truth: npt.ArrayLike, data_range: float) -> Float:
    """The local SSIM of every pixel (Gaussian window; see the module docstring), border included.

    Args:
        pred: the estimate, 2D or 3D, every axis at least 11 long.
        truth: the reference, same shape.
        data_range: the span of the intensity scale.

    Returns:
        SSIM values of ``truth``'s shape, float64.

    Raises:
        MedsslError: shapes that differ, not 2D/3D, an axis shorter than the window, or a bad ``data_range``.
    """
    p, t, _ = _prepare(pred, truth, data_range, None)
    window = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
    if p.ndim not in (2, 3) or min(p.shape) < window:
        raise MedsslError(f"SSIM needs a 2D or 3D image with every axis >= {window} pixels, got shape {p.shape}")

    def smooth(a: Float) -> Float:
        return np.asarray(gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect"))

    mu_p, mu_t = smooth(p), smooth(t)
    var_p = smooth(p * p) - mu_p * mu_p
    var_t = smooth(t * t) - mu_t * mu_t
    cov = smooth(p * t) - mu_p * mu_t
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))


def ssim(pred: npt.ArrayLike, truth: npt.ArrayLike, data_range: float, mask: npt.ArrayLike | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004), over the image or inside ``mask``.

    Args:
        pred: the estimate, 2D or 3D, every axis at least 11 long.
        truth: the reference, same shape.
        data_range: the span of the intensity scale, stated by the caller; not taken from the data.
        mask: optional foreground, same shape; the SSIM map is averaged over its pixels.

    Returns:
        The mean of the SSIM map without its 5-pixel border (scikit-image's value), over the mask if given.

    Raises:
        MedsslError: see ``ssim_map``; a mask with no pixel outside the border.
    """
    _, t, m = _prepare(pred, truth, data_range, mask)
    values = ssim_map(pred, truth, data_range)
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    inner = tuple(slice(pad, n - pad) for n in t.shape)
    if m is None:
        return float(values[inner].mean(dtype=np.float64))
    picked = values[inner][m[inner]]
    if picked.size == 0:
        raise MedsslError(f"the mask has no pixel more than {pad} pixels from the border: SSIM inside it is undefined")
    return float(picked.mean(dtype=np.float64))
