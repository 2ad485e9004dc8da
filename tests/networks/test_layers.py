"""Layer factories: one mapping from spatial_dims to layers, shapes preserved or scaled as documented."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.errors import MedsslError
from medssl.networks import layers


def _x(dims: int, channels: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randn(2, channels, *([size] * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_and_transpose_shapes(dims: int) -> None:
    x = _x(dims)
    assert layers.conv(dims, 4, 6)(x).shape == (2, 6, *[8] * dims)
    assert layers.conv(dims, 4, 6, stride=2)(x).shape == (2, 6, *[4] * dims)
    assert layers.conv(dims, 4, 6, kernel_size=1)(x).shape == (2, 6, *[8] * dims)
    assert layers.conv_transpose(dims, 4, 3, scale=2)(x).shape == (2, 3, *[16] * dims)
    assert layers.upsample(dims, 4)(x).shape == (2, 4, *[32] * dims)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", ["instance", "batch", "group", "none"])
def test_norms_keep_shape(dims: int, name: str) -> None:
    x = _x(dims, channels=12)
    assert layers.norm(name, dims, 12)(x).shape == x.shape


def test_instance_norm_is_affine() -> None:
    module = layers.norm("instance", 3, 5)
    assert isinstance(module, nn.InstanceNorm3d) and module.affine


@pytest.mark.parametrize("dims", [2, 3])
def test_pools_dropout_and_global_pool(dims: int) -> None:
    x = _x(dims)
    assert layers.pool(dims, "max")(x).shape == (2, 4, *[4] * dims)
    assert layers.pool(dims, "avg", 4)(x).shape == (2, 4, *[2] * dims)
    assert isinstance(layers.dropout(dims, 0.0), nn.Identity)
    assert layers.dropout(dims, 0.5)(x).shape == x.shape
    torch.testing.assert_close(layers.global_avg_pool(x), x.mean(dim=tuple(range(2, 2 + dims))))


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_norm_act_unit(dims: int) -> None:
    unit = layers.ConvNormAct(dims, 4, 8, stride=2, dropout_p=0.1)
    assert unit.conv.bias is None  # the norm's shift makes a conv bias redundant
    assert layers.ConvNormAct(dims, 4, 8, norm_name="none").conv.bias is not None
    assert unit(_x(dims)).shape == (2, 8, *[4] * dims)


@pytest.mark.parametrize("act", layers.ACTS)
def test_activations(act: str) -> None:
    x = torch.randn(3, 4)
    assert layers.act(act)(x.clone()).shape == x.shape


@pytest.mark.parametrize(
    "call",
    [
        lambda: layers.conv(1, 1, 1),
        lambda: layers.conv_transpose(4, 1, 1),
        lambda: layers.norm("weird", 2, 4),
        lambda: layers.norm("instance", 5, 4),
        lambda: layers.act("swishy"),
        lambda: layers.dropout(2, 1.5),
        lambda: layers.pool(2, "median"),
        lambda: layers.upsample(1, 2),
    ],
)
def test_bad_options_raise_medssl_error(call: object) -> None:
    with pytest.raises(MedsslError):
        call()  # type: ignore[operator]
