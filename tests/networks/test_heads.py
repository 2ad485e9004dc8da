"""Projection and prediction heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.networks.heads import PredictionHead, ProjectionHead


@pytest.mark.parametrize("cls", [ProjectionHead, PredictionHead])
@pytest.mark.parametrize("batch", [1, 2])
def test_shapes_and_grads_at_tiny_batches(cls: type[nn.Module], batch: int) -> None:
    head = cls(8, 16, 4)
    head.train()
    out = head(torch.randn(batch, 8))
    assert out.shape == (batch, 4)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


def test_no_batch_statistics() -> None:
    head = ProjectionHead(8, 16, 4)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules())
    x = torch.randn(3, 8)
    # Per-sample: a sample's output does not depend on the rest of the batch, in train and eval mode alike.
    torch.testing.assert_close(head(x)[:1], head(x[:1]))
    torch.testing.assert_close(head.eval()(x), head.train()(x))


@pytest.mark.parametrize("dims", [(0, 4, 4), (4, 0, 4), (4, 4, 0)])
def test_rejects_bad_sizes(dims: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        ProjectionHead(*dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_forward_map_projects_each_position_then_averages(dims: int) -> None:
    head = ProjectionHead(6, 8, 4)
    feature_map = torch.randn(2, 6, *[3] * dims)
    positions = feature_map.flatten(2)  # (B, 6, P)
    expected = torch.stack([head(positions[:, :, i]) for i in range(positions.shape[2])]).mean(0)
    out = head.forward_map(feature_map)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out, expected)
