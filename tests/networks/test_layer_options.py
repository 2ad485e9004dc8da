"""The factory options S3-Net's blocks are built with: dilated and depthwise convolutions, adaptive pooling.

They must build exactly the layer a hand-written ``nn.Conv2d`` / ``nn.AdaptiveAvgPool2d`` would (same class, same
padding, same initialisation for the same seed), so that moving S3-Net onto the factory changed no number.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.errors import MedsslError
from medssl.networks import layers


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (5, 2), (7, 3)])
def test_dilated_depthwise_conv_equals_the_hand_written_one(kernel: int, dilation: int) -> None:
    torch.manual_seed(0)
    built = layers.conv(2, 4, 4, kernel, dilation=dilation, groups=4)
    torch.manual_seed(0)
    by_hand = nn.Conv2d(4, 4, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=4)
    assert type(built) is nn.Conv2d
    assert isinstance(built, nn.Conv2d)
    assert (built.padding, built.dilation, built.groups) == (by_hand.padding, by_hand.dilation, by_hand.groups)
    assert torch.equal(built.weight, by_hand.weight)
    x = torch.randn(2, 4, 13, 11)
    # "Same" padding: the dilated tap reach is compensated exactly, and the values match the hand-written conv.
    assert torch.equal(built(x), by_hand(x))
    assert built(x).shape == x.shape


def test_depthwise_conv_mixes_no_channels() -> None:
    conv = layers.conv(3, 3, 3, 3, groups=3)
    x = torch.zeros(1, 3, 5, 5, 5)
    x[0, 1] = torch.randn(5, 5, 5)
    with torch.no_grad():
        out = conv(x) - conv(torch.zeros_like(x))  # remove the biases
    assert out[0, 0].abs().max() == 0 and out[0, 2].abs().max() == 0
    assert out[0, 1].abs().max() > 0


@pytest.mark.parametrize(("dims", "cls"), [(2, nn.AdaptiveAvgPool2d), (3, nn.AdaptiveAvgPool3d)])
def test_adaptive_avg_pool_averages_to_a_fixed_grid(dims: int, cls: type[nn.Module]) -> None:
    module = layers.adaptive_avg_pool(dims, 3)
    assert type(module) is cls
    x = torch.arange(6.0**dims).reshape(1, 1, *[6] * dims)
    out = module(x)
    assert out.shape == (1, 1, *[3] * dims)
    # Each output cell is the mean of its 2^dims input block; the first block's corner is 0.
    block = x[(0, 0, *[slice(0, 2)] * dims)]
    assert out[(0, 0, *[0] * dims)] == block.mean()
    with pytest.raises(MedsslError, match="spatial_dims"):
        layers.adaptive_avg_pool(1, 3)
