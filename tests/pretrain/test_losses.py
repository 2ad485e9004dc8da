"""NT-Xent, BYOL and KL losses against naive references."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from medssl.pretrain.losses import NTXentLoss, byol_loss, kl_divergence


def _naive_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out pair by pair, as in the SimCLR paper's algorithm 1."""
    z = [v / v.norm() for v in torch.cat((z_a, z_b))]
    n = len(z_a)

    def sim(i: int, j: int) -> float:
        return float(z[i] @ z[j]) / temperature

    def ell(i: int, j: int) -> float:
        denominator = sum(math.exp(sim(i, k)) for k in range(2 * n) if k != i)
        return -math.log(math.exp(sim(i, j)) / denominator)

    return sum(ell(k, k + n) + ell(k + n, k) for k in range(n)) / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("batch", [2, 5])
def test_ntxent_matches_naive(temperature: float, batch: int) -> None:
    z_a, z_b = torch.randn(batch, 7, dtype=torch.float64), torch.randn(batch, 7, dtype=torch.float64)
    got = NTXentLoss(temperature)(z_a, z_b)
    assert got.shape == ()
    assert got.item() == pytest.approx(_naive_ntxent(z_a, z_b, temperature), rel=1e-9)


def test_ntxent_is_scale_invariant_and_rewards_agreement() -> None:
    z = torch.randn(4, 8)
    loss = NTXentLoss(0.1)
    assert loss(z, 3 * z).item() == pytest.approx(loss(z, z).item(), abs=1e-5)
    assert loss(z, z) < loss(z, torch.randn(4, 8))


def test_ntxent_single_pair_is_zero() -> None:
    assert NTXentLoss()(torch.randn(1, 4), torch.randn(1, 4)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_ntxent_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(temperature)


def test_ntxent_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="z_a and z_b"):
        NTXentLoss()(torch.randn(2, 4), torch.randn(3, 4))


def test_byol_loss_matches_explicit_normalisation() -> None:
    p, z = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    expected = sum(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum() for i in range(3)) / 3
    assert byol_loss(p, z).item() == pytest.approx(float(expected), rel=1e-9)
    assert byol_loss(p, 2 * p).item() == pytest.approx(0.0, abs=1e-9)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, rel=1e-9)


def test_byol_loss_dense_averages_over_positions() -> None:
    p, z = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    per_position = [byol_loss(p[..., i, j], z[..., i, j]) for i in range(3) for j in range(4)]
    assert byol_loss(p, z).item() == pytest.approx(float(torch.stack(per_position).mean()), rel=1e-5)


def test_kl_matches_torch_distributions() -> None:
    mu, logvar = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64)
    posterior = Normal(mu, (0.5 * logvar).exp())
    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch_kl(posterior, prior).flatten(1).sum(1).mean()
    assert kl_divergence(mu, logvar).item() == pytest.approx(expected.item(), rel=1e-9)
    assert kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).item() == 0.0


def test_shape_mismatches_raise() -> None:
    with pytest.raises(ValueError, match="p and z"):
        byol_loss(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="mu and logvar"):
        kl_divergence(torch.randn(2, 4), torch.randn(2, 5))


@pytest.mark.parametrize("loss", ["ntxent", "byol"])
def test_losses_keep_float32_resolution_under_bf16_autocast(loss: str) -> None:
    # Embeddings whose cosines differ only in the 4th decimal: a bf16 similarity matrix rounds them all to 1.
    z_a = torch.ones(4, 64) + 1e-2 * torch.randn(4, 64)
    z_b = z_a + 1e-3 * torch.randn(4, 64)
    fn = NTXentLoss(0.1) if loss == "ntxent" else byol_loss
    reference = fn(z_a, z_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = fn(z_a, z_b)
        from_bf16 = fn(z_a.bfloat16(), z_b.bfloat16())
    assert under_autocast.dtype == from_bf16.dtype == torch.float32
    assert torch.isclose(under_autocast, reference, rtol=1e-5)
    assert torch.isfinite(from_bf16)
