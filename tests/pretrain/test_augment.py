"""Default view generator: shapes, determinism, and what each transform guarantees."""

from __future__ import annotations

import pytest
import torch

from medssl.pretrain.augment import (
    RandomViews,
    random_contrast,
    random_flip,
    random_gamma,
    random_noise,
    random_resized_crop,
)
from tests.pretrain.conftest import images


@pytest.mark.parametrize("dims", [2, 3])
def test_views_keep_shape_and_differ(dims: int) -> None:
    x = images(dims, channels=2)
    view_a, view_b = RandomViews()(x, torch.Generator().manual_seed(0))
    assert view_a.shape == view_b.shape == x.shape
    assert torch.isfinite(view_a).all() and not torch.equal(view_a, view_b)


def test_views_are_reproducible_with_a_generator() -> None:
    x = images(2)
    first = RandomViews()(x, torch.Generator().manual_seed(3))
    second = RandomViews()(x, torch.Generator().manual_seed(3))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dims", [2, 3])
def test_crop_full_scale_is_identity_and_small_scale_zooms(dims: int) -> None:
    x = images(dims)
    torch.testing.assert_close(random_resized_crop(x, (1.0, 1.0)), x)
    zoomed = random_resized_crop(x, (0.5, 0.5), torch.Generator().manual_seed(0))
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x)


def test_flip_always_and_never() -> None:
    x = images(3)
    torch.testing.assert_close(random_flip(x, 0.0), x)
    torch.testing.assert_close(random_flip(x, 1.0), x.flip(2).flip(3).flip(4))


def test_intensity_transforms_off_are_identity() -> None:
    x = images(2)
    torch.testing.assert_close(random_noise(x, 0.0, (0.1, 0.2)), x)
    torch.testing.assert_close(random_contrast(x, 0.0, (0.5, 2.0)), x)
    torch.testing.assert_close(random_gamma(x, 0.0, (0.5, 2.0)), x, atol=1e-6, rtol=1e-6)


def test_contrast_and_gamma_stay_in_the_image_range() -> None:
    x = images(2, batch=4) * 100 - 30
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)
    for out in (random_contrast(x, 1.0, (1.5, 2.0)), random_gamma(x, 1.0, (0.5, 2.0))):
        assert (out.flatten(1).amin(1) >= lo - 1e-4).all() and (out.flatten(1).amax(1) <= hi + 1e-4).all()
        assert not torch.allclose(out, x)


def test_noise_scales_with_the_image() -> None:
    x = images(2, batch=1)
    g = torch.Generator
    small = random_noise(x, 1.0, (0.2, 0.2), g().manual_seed(0)) - x
    large = random_noise(100 * x, 1.0, (0.2, 0.2), g().manual_seed(0)) - 100 * x
    torch.testing.assert_close(large, 100 * small, rtol=1e-3, atol=1e-3)


def test_channels_share_parameters() -> None:
    x = images(2).repeat(1, 3, 1, 1)
    view, _ = RandomViews(noise_prob=0.0)(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(view[:, 0], view[:, 2])


@pytest.mark.parametrize(
    "kwargs",
    [{"crop_scale": (0.0, 1.0)}, {"crop_scale": (0.8, 0.5)}, {"flip_prob": 1.5}, {"gamma_range": (0.0, 1.0)}],
)
def test_rejects_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RandomViews(**kwargs)  # type: ignore[arg-type]
