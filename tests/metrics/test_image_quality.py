"""PSNR and SSIM: the stated intensity range, scikit-image's definitions, masks and bad inputs.

scikit-image is not a dependency: its comparisons run where it is installed. torchmetrics (installed with
lightning) computes the same SSIM map with the same Gaussian window, so the interior of its map is checked
everywhere; its mean differs from scikit-image's only by including the 5-pixel border.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from medssl.errors import MedsslError
from medssl.metrics.image_quality import psnr, ssim, ssim_map

# The images span 0.1 .. 0.8, the stated range is 1.0: a metric that takes the range from the data is caught.
RANGE = 1.0


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = 0.1 + 0.7 * rng.random(shape)
    pred = np.clip(truth + 0.05 * rng.standard_normal(shape), 0.1, 0.8)
    return pred, truth


def _torchmetrics_ssim_interior(pred: np.ndarray, truth: np.ndarray, data_range: float) -> float:
    _, full = tm_ssim(
        torch.from_numpy(pred)[None, None],
        torch.from_numpy(truth)[None, None],
        data_range=data_range,
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        k1=0.01,
        k2=0.03,
        return_full_image=True,
    )
    return float(full[(0, 0, *[slice(5, -5)] * pred.ndim)].mean())


def test_psnr_uses_the_stated_range() -> None:
    pred, truth = _pair((32, 40))
    mse = float(np.mean((pred - truth) ** 2))
    assert psnr(pred, truth, RANGE) == pytest.approx(10 * math.log10(RANGE**2 / mse), abs=1e-12)
    reference = float(tm_psnr(torch.from_numpy(pred), torch.from_numpy(truth), data_range=RANGE))
    assert psnr(pred, truth, RANGE) == pytest.approx(reference, abs=1e-5)
    assert psnr(pred, truth, 255.0) - psnr(pred, truth, 1.0) == pytest.approx(20 * math.log10(255.0), abs=1e-9)
    assert psnr(truth, truth, RANGE) == math.inf


def test_psnr_and_ssim_equal_scikit_image() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    for shape in [(32, 40), (14, 16, 18)]:
        pred, truth = _pair(shape)
        assert psnr(pred, truth, RANGE) == pytest.approx(
            metrics.peak_signal_noise_ratio(truth, pred, data_range=RANGE), abs=1e-6
        )
        expected = metrics.structural_similarity(
            truth, pred, data_range=RANGE, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ssim(pred, truth, RANGE) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("shape", [(32, 40), (14, 16, 18)])
def test_ssim_is_the_gaussian_ssim_on_the_stated_range(shape: tuple[int, ...]) -> None:
    pred, truth = _pair(shape)
    assert ssim(pred, truth, RANGE) == pytest.approx(_torchmetrics_ssim_interior(pred, truth, RANGE), abs=1e-4)
    # the constants depend on the range: another range is another number
    assert abs(ssim(pred, truth, 0.7) - ssim(pred, truth, RANGE)) > 1e-4
    assert ssim(truth, truth, RANGE) == pytest.approx(1.0, abs=1e-12)


def test_masked_metrics_use_the_mask_pixels_only() -> None:
    pred, truth = _pair((30, 30), seed=1)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[8:22, 10:25] = True
    pred_out = pred.copy()
    pred_out[~mask] = 0.0  # errors outside the mask do not count
    assert psnr(pred_out, truth, RANGE, mask) == pytest.approx(psnr(pred[mask], truth[mask], RANGE), abs=1e-12)
    assert psnr(pred, truth, RANGE, np.ones(truth.shape)) == psnr(pred, truth, RANGE)
    assert ssim(pred, truth, RANGE, np.ones(truth.shape)) == ssim(pred, truth, RANGE)
    values = ssim_map(pred, truth, RANGE)
    assert ssim(pred, truth, RANGE, mask) == pytest.approx(float(values[mask].mean()), abs=1e-12)
    border = np.zeros(truth.shape, dtype=bool)
    border[:, 20:] = True
    inner = np.zeros(truth.shape, dtype=bool)
    inner[5:25, 20:25] = True  # the border band of the map is left out, inside a mask too
    assert ssim(pred, truth, RANGE, border) == pytest.approx(float(values[inner].mean()), abs=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p, t: psnr(p, t[:-1], RANGE), "shape"),
        (lambda p, t: psnr(p, t, 0.0), "data_range"),
        (lambda p, t: ssim(p, t, float("nan")), "data_range"),
        (lambda p, t: psnr(p, t, RANGE, np.zeros(t.shape)), "mask"),
        (lambda p, t: ssim(p, t, RANGE, np.ones((3, 3))), "mask"),
        (lambda p, t: ssim(p[:, :4], t[:, :4], RANGE), "11"),
        (lambda p, t: ssim(p, t, RANGE, np.pad(np.ones((20, 20)), 5) == 0), "border"),
    ],
)
def test_bad_inputs_raise_medssl_error(call: object, message: str) -> None:
    pred, truth = _pair((30, 30))
    with pytest.raises(MedsslError, match=message):
        call(pred, truth)  # type: ignore[operator]
