import numpy as np
import pytest
import torch

from medssl.data.geometry import ImageMeta
from medssl.data.loading import LoadedCase
from medssl.data.plan import Plan
from medssl.data.preprocess import (
    encode_target,
    normalize,
    preprocess_image,
    probabilities_to_labels,
    resample,
    resampled_shape,
)
from medssl.errors import MedsslError


def _plan(**kw):
    base = dict(
        spatial_dims=3,
        data_dims=3,
        in_channels=1,
        task="labelmap",
        class_values=[0, 3, 7],
        class_names=["background", "a", "b"],
        target_spacing=[2.0, 2.0, 2.0],
        normalization="zscore",
        intensity=[{"mean": 10.0, "std": 2.0, "p00_5": 0.0, "p99_5": 20.0, "min": 0.0, "max": 30.0}],
        patch_size=[16, 16, 16],
        channels=[8, 16],
        batch_size=2,
    )
    base.update(kw)
    return Plan(**base)


def _meta(shape, spacing):
    m = ImageMeta.default(shape, physical=True)
    return ImageMeta(spacing, m.origin, m.direction, m.shape, physical=True)


def _nearest_index(size_in, size_out):
    """Source index of each output voxel for nearest neighbour with voxel centres aligned ("nearest-exact")."""
    return np.minimum(np.floor((np.arange(size_out) + 0.5) * size_in / size_out).astype(int), size_in - 1)


def test_label_resampling_is_nearest_only():
    lab = np.random.default_rng(0).choice([0, 3, 7], size=(1, 9, 9, 9)).astype(np.uint8)
    out = resample(lab, (17, 5, 12), nearest=True)
    assert set(np.unique(out)) <= {0, 3, 7}
    assert out.dtype == np.uint8
    # Each output voxel holds the label of the input voxel whose centre is nearest: positions are kept.
    expected = lab[np.ix_([0], *(_nearest_index(n, m) for n, m in zip((9, 9, 9), (17, 5, 12), strict=True)))]
    np.testing.assert_array_equal(out, expected)


def test_resampled_shape_follows_each_axis_spacing():
    meta = _meta((8, 6, 4), (1.0, 2.0, 4.0))
    assert resampled_shape(meta, (8, 6, 4), _plan()) == (4, 6, 8)
    assert resampled_shape(meta, (8, 6, 4), _plan(target_spacing=None)) == (8, 6, 4)
    assert resampled_shape(meta, (8, 6, 4), _plan(target_spacing=[100.0, 100.0, 100.0])) == (1, 1, 1)


def test_image_resampling_interpolates_a_ramp_linearly_per_axis():
    # f = i + 10 j + 100 k on a (8, 6, 4) grid of spacing (1, 2, 4) mm, resampled to 2 mm: halved along i, kept
    # along j, doubled along k. Linear interpolation reproduces a per-axis linear function exactly, with the
    # voxel centres aligned (align_corners=False): new index n reads old index (n + 0.5) * old / new - 0.5,
    # clamped at the edges.
    i, j, k = np.meshgrid(np.arange(8.0), np.arange(6.0), np.arange(4.0), indexing="ij")
    image = (i + 10 * j + 100 * k)[None].astype(np.float32)
    out = preprocess_image(image, _meta((8, 6, 4), (1.0, 2.0, 4.0)), _plan(normalization="rgb")) * 255
    a, b, c = np.meshgrid(np.arange(4.0), np.arange(6.0), np.arange(8.0), indexing="ij")
    expected = (2 * a + 0.5) + 10 * b + 100 * np.clip((c + 0.5) / 2 - 0.5, 0, 3)
    assert out.shape == (1, 4, 6, 8)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-3)


def test_encode_target_maps_values_and_resamples():
    shape = (8, 8, 8)
    label = np.zeros(shape, np.int64)
    label[2:6, 2:6, 2:6] = 7
    label[0, 0, 0] = 3
    case = LoadedCase("c", np.zeros((1, *shape), np.float32), _meta(shape, (1.0, 1.0, 1.0)), label=label)
    target = encode_target(case, _plan())
    assert target.shape == (1, 4, 4, 4) and set(np.unique(target)) <= {0, 1, 2}
    assert (target == 2).sum() == 8  # the 4^3 cube at half resolution
    # New voxel n covers old voxels 2n and 2n + 1 and reads old voxel 2n + 1 (centres aligned): the cube at
    # 2..5 lands on 1..2, not shifted; the single voxel at the corner is lost at half resolution.
    assert (target[0, 1:3, 1:3, 1:3] == 2).all()


def test_encode_target_rejects_unplanned_values():
    case = LoadedCase(
        "c9", np.zeros((1, 4, 4, 4), np.float32), _meta((4, 4, 4), (2.0, 2.0, 2.0)), label=np.full((4, 4, 4), 5)
    )
    with pytest.raises(MedsslError, match="c9"):
        encode_target(case, _plan())


def test_ct_normalisation_clips_to_the_percentiles_then_uses_the_fingerprint_mean_and_std():
    intensity = [
        {"mean": 10.0, "std": 2.0, "p00_5": 0.0, "p99_5": 20.0, "min": -1000.0, "max": 3000.0},
        {"mean": -100.0, "std": 50.0, "p00_5": -200.0, "p99_5": 100.0, "min": -1000.0, "max": 3000.0},
    ]
    plan = _plan(normalization="ct", in_channels=2, intensity=intensity)
    raw = np.array([-1000.0, 0.0, 5.0, 10.0, 19.0, 20.0, 3000.0, np.nan, np.inf], np.float32)
    out = normalize(np.stack([raw, raw])[:, None], plan)  # (C=2, 1, 9)
    # Channel 0: clip to [0, 20], then (x - 10) / 2; not-finite values count as 0 before clipping.
    np.testing.assert_allclose(out[0, 0], [-5.0, -5.0, -2.5, 0.0, 4.5, 5.0, 5.0, -5.0, -5.0], atol=1e-6)
    # Channel 1: its own statistics, clip to [-200, 100], then (x + 100) / 50.
    np.testing.assert_allclose(out[1, 0], [-2.0, 2.0, 2.1, 2.2, 2.38, 2.4, 4.0, 2.0, 2.0], atol=1e-6)
    assert out.dtype == np.float32


def test_zscore_normalisation_uses_each_channels_own_mean_and_std():
    rng = np.random.default_rng(2)
    image = np.stack([rng.normal(100, 20, (5, 7)), rng.normal(-3, 0.5, (5, 7))]).astype(np.float32)
    out = normalize(image, _plan(normalization="zscore", in_channels=2))
    for ch in range(2):
        expected = (image[ch] - image[ch].mean()) / image[ch].std()
        np.testing.assert_allclose(out[ch], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheme", ["ct", "zscore", "rgb"])
def test_normalize(scheme):
    x = np.random.default_rng(1).uniform(0, 255, size=(1, 6, 6)).astype(np.float32)
    out = normalize(x, _plan(normalization=scheme))
    if scheme == "zscore":
        assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    elif scheme == "ct":
        assert out.max() <= (20 - 10) / 2 + 1e-6 and out.min() >= (0 - 10) / 2 - 1e-6
    else:
        np.testing.assert_allclose(out, x / 255, rtol=1e-6)


def test_preprocess_checks_channels_and_dims():
    with pytest.raises(MedsslError, match="channel"):
        preprocess_image(np.zeros((3, 4, 4, 4), np.float32), _meta((4, 4, 4), (2.0,) * 3), _plan())
    with pytest.raises(MedsslError, match="2D"):
        preprocess_image(np.zeros((1, 4, 4), np.float32), _meta((4, 4), (2.0,) * 2), _plan())


def test_probabilities_back_to_input_grid_and_values():
    plan = _plan()
    meta = _meta((8, 8, 8), (1.0, 1.0, 1.0))
    probs = torch.zeros(3, 4, 4, 4)
    probs[0] = 1
    probs[2, :2] = 2  # class index 2 -> raw value 7 in the first half of axis 0
    labels = probabilities_to_labels(probs, plan, meta)
    assert labels.shape == (8, 8, 8)
    assert (labels[:4] == 7).all() and (labels[4:] == 0).all()
