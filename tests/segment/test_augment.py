import pytest
import torch

from medssl.segment.augment import apply_affine, random_affine_matrices


@pytest.mark.parametrize("dims", [2, 3])
def test_probability_zero_is_identity(dims):
    x = torch.randn(2, 1, *([8] * dims))
    y = torch.randint(0, 3, (2, 1, *([8] * dims)), dtype=torch.uint8)
    mats = random_affine_matrices(2, dims, max_degrees=30, scale_range=(0.8, 1.2), probability=0.0)
    x2, y2 = apply_affine(x, y, mats)
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=0)
    assert torch.equal(y2, y)


@pytest.mark.parametrize("dims", [2, 3])
def test_labels_stay_labels_and_image_moves_with_them(dims):
    x = torch.zeros(1, 1, *([16] * dims))
    region = (slice(None), slice(None), *([slice(4, 9)] * dims))
    x[region] = 1.0
    y = (x > 0).to(torch.uint8) * 2
    mats = random_affine_matrices(
        1, dims, max_degrees=30, scale_range=(0.9, 1.1), probability=1.0, generator=torch.Generator().manual_seed(0)
    )
    x2, y2 = apply_affine(x, y, mats)
    assert set(torch.unique(y2).tolist()) <= {0, 2}
    agreement = ((x2 > 0.5) == (y2 > 0)).float().mean()
    assert agreement > 0.97
