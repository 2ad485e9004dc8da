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


def test_label_resampling_is_nearest_only():
    lab = np.random.default_rng(0).choice([0, 3, 7], size=(1, 9, 9, 9)).astype(np.uint8)
    out = resample(lab, (17, 5, 12), nearest=True)
    assert set(np.unique(out)) <= {0, 3, 7}


def test_encode_target_maps_values_and_resamples():
    shape = (8, 8, 8)
    label = np.zeros(shape, np.int64)
    label[2:6, 2:6, 2:6] = 7
    label[0, 0, 0] = 3
    case = LoadedCase("c", np.zeros((1, *shape), np.float32), _meta(shape, (1.0, 1.0, 1.0)), label=label)
    target = encode_target(case, _plan())
    assert target.shape == (1, 4, 4, 4) and set(np.unique(target)) <= {0, 1, 2}
    assert (target == 2).sum() == 8  # the 4^3 cube at half resolution


def test_encode_target_rejects_unplanned_values():
    case = LoadedCase(
        "c9", np.zeros((1, 4, 4, 4), np.float32), _meta((4, 4, 4), (2.0, 2.0, 2.0)), label=np.full((4, 4, 4), 5)
    )
    with pytest.raises(MedsslError, match="c9"):
        encode_target(case, _plan())


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
