"""VAE: posterior shapes, the loss it reports, the contrastive option."""

from __future__ import annotations

import pytest
import torch

from medssl.pretrain.losses import NTXentLoss, kl_divergence
from medssl.pretrain.vae import VAE
from tests.pretrain.conftest import SIZE, SMALL, identity_views, images


@pytest.mark.parametrize("dims", [2, 3])
def test_posterior_and_reconstruction_shapes(dims: int) -> None:
    method = VAE(dims, 2, SMALL, latent_channels=5)
    x = images(dims, channels=2)
    mu, logvar = method.encode(x)
    assert mu.shape == logvar.shape == (2, 5, *[SIZE // 4] * dims)
    assert method.decoder(method.reparameterise(mu, logvar)).shape == x.shape


def test_reparameterise_uses_mean_and_variance() -> None:
    method = VAE(2, 1, SMALL)
    mu, logvar = torch.full((4000, 1), 2.0), torch.full((4000, 1), 2 * torch.tensor(3.0).log().item())
    sample = method.reparameterise(mu, logvar, torch.Generator().manual_seed(0))
    assert sample.mean().item() == pytest.approx(2.0, abs=0.2)
    assert sample.std().item() == pytest.approx(3.0, rel=0.1)


def test_loss_combines_recon_and_normalised_kl() -> None:
    method = VAE(2, 1, SMALL, beta=0.7, views=identity_views)
    x = images(2)
    out = method.losses(x, torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "recon", "kl"}
    torch.testing.assert_close(out["loss"], out["recon"] + 0.7 * out["kl"] / x[0].numel())
    mu, logvar = method.encode(x)
    torch.testing.assert_close(out["kl"], kl_divergence(mu, logvar))
    assert not out["recon"].requires_grad and out["loss"].requires_grad
    assert method.projector is None  # no unused parameters without the contrastive term


def test_contrastive_term_on_latent_means() -> None:
    x = images(2)
    view_b = x.flip(-1)
    method = VAE(2, 1, SMALL, beta=0.0, contrastive_weight=2.0, views=lambda batch, g: (batch, view_b))
    out = method.losses(x)
    assert set(out) == {"loss", "recon", "kl", "contrastive"}
    mu, _ = method.encode(torch.cat((x, view_b)))
    assert method.projector is not None
    mean_a, mean_b = method.projector.forward_map(mu).chunk(2)
    torch.testing.assert_close(out["contrastive"], NTXentLoss(0.1)(mean_a, mean_b))
    torch.testing.assert_close(out["loss"], out["recon"] + 2.0 * out["contrastive"])


@pytest.mark.parametrize("kwargs", [{"latent_channels": 0}, {"beta": -1.0}, {"contrastive_weight": -0.1}])
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VAE(2, 1, SMALL, **kwargs)  # type: ignore[arg-type]
