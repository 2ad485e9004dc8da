"""Denoising autoencoder: corruption and reconstruction from the deepest map only."""

from __future__ import annotations

import pytest
import torch

from medssl.pretrain.autoencoder import DenoisingAutoencoder, random_block_mask
from tests.pretrain.conftest import SMALL, identity_views, images


def test_block_mask_tiles_the_image() -> None:
    mask = random_block_mask((3, 2, 12, 16), 4, 0.5, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 12, 16) and mask.dtype == torch.bool
    blocks = mask.view(3, 1, 3, 4, 4, 4)  # (B, 1, rows, 4, cols, 4): each 4x4 block is all True or all False
    assert torch.equal(blocks.amin((3, 5)), blocks.amax((3, 5)))
    assert 0 < mask.float().mean() < 1
    edge = random_block_mask((1, 1, 5, 5, 5), 2, 1.0)
    assert edge.shape == (1, 1, 5, 5, 5) and edge.all()


def test_corrupt_masks_blocks_with_the_mean_and_adds_noise() -> None:
    method = DenoisingAutoencoder(2, 1, SMALL, noise_std=0.0, mask_ratio=0.5, mask_block=4)
    x = images(2)
    corrupted = method.corrupt(x, torch.Generator().manual_seed(0))
    changed = corrupted != x
    assert changed.any() and not changed.all()
    means = x.flatten(1).mean(1).view(2, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(corrupted[changed], means[changed])
    noisy = DenoisingAutoencoder(2, 1, SMALL, noise_std=0.1, mask_ratio=0.0).corrupt(x)
    assert (noisy != x).all()


def test_reconstruction_ignores_the_shallow_scales() -> None:
    method = DenoisingAutoencoder(2, 1, SMALL, views=identity_views)
    x = images(2)
    features = method.encoder(x)
    assert method.reconstruct(x).shape == x.shape
    torch.testing.assert_close(method.reconstruct(x), method.decoder(features[-1]))
    assert method.mask_block == method.encoder.required_divisor


def test_loss_regresses_the_clean_view() -> None:
    method = DenoisingAutoencoder(2, 1, SMALL, noise_std=0.0, mask_ratio=0.0, views=identity_views)
    x = images(2)
    expected = torch.nn.functional.mse_loss(method.reconstruct(x), x)
    torch.testing.assert_close(method.losses(x)["loss"], expected)


@pytest.mark.parametrize("kwargs", [{"noise_std": -1.0}, {"mask_ratio": 1.0}, {"mask_block": 0}])
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DenoisingAutoencoder(2, 1, SMALL, **kwargs)  # type: ignore[arg-type]
