import pytest
import torch

from medssl.pretrain.augment import RandomViews


@pytest.mark.parametrize("dims", [2, 3])
def test_two_views_of_the_input_size_that_differ(dims: int) -> None:
    x = torch.rand(2, 1, *([16] * dims))
    view_a, view_b = RandomViews()(x, torch.Generator().manual_seed(0))
    assert view_a.shape == x.shape and view_b.shape == x.shape
    assert not torch.equal(view_a, view_b)


def test_seeded_views_repeat() -> None:
    x = torch.rand(2, 1, 16, 16)
    first = RandomViews()(x, torch.Generator().manual_seed(3))
    second = RandomViews()(x, torch.Generator().manual_seed(3))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b)


def test_bad_settings_name_the_argument() -> None:
    with pytest.raises(ValueError, match="scale"):
        RandomViews(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="flip_p"):
        RandomViews(flip_prob=2.0)
