"""Layer factories: one mapping from spatial_dims to layers, shapes preserved or scaled as documented, and
the values each layer computes (normalisation statistics, activation slopes, padding, pooling, dropout)."""

from __future__ import annotations

import math

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


def _spread(dims: int, batch: int = 2, channels: int = 12) -> torch.Tensor:
    """``(batch, channels, 6, ...)`` values whose mean and scale differ per sample and per channel."""
    shape = (batch, channels, *([1] * dims))
    scale = torch.linspace(0.5, 4.0, batch * channels).reshape(shape)
    shift = torch.linspace(-20.0, 30.0, batch * channels).reshape(shape)
    return torch.randn(batch, channels, *([6] * dims)) * scale + shift


def _assert_standardised(values: torch.Tensor, dim: int) -> None:
    """Mean 0 and (biased) variance 1 along ``dim``; the norms' eps=1e-5 shifts the variance by < 1e-4 here."""
    mean, var = values.mean(dim), values.var(dim, unbiased=False)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(var, torch.ones_like(var), atol=1e-3, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_instance_norm_standardises_each_sample_and_channel(dims: int) -> None:
    module = layers.norm("instance", dims, 12)
    assert isinstance(module, {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims])
    x = _spread(dims)
    y = module(x)
    _assert_standardised(y.flatten(2), dim=2)
    torch.testing.assert_close(module(x[1:]), y[1:])  # independent of the rest of the batch
    with torch.no_grad():  # the affine weight and bias are applied after standardising
        module.weight.fill_(2.0)
        module.bias.fill_(-1.0)
    torch.testing.assert_close(module(x), 2.0 * y - 1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_batch_norm_standardises_each_channel_over_the_batch(dims: int) -> None:
    module = layers.norm("batch", dims, 12)
    assert isinstance(module, {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims])
    y = module(_spread(dims))
    _assert_standardised(y.transpose(0, 1).flatten(1), dim=1)
    assert y.flatten(2).mean(2).abs().max() > 0.5  # per sample, the means stay apart: not an instance norm


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("channels", "groups"), [(12, 4), (16, 8), (6, 2), (5, 1)])
def test_group_norm_groups_and_values(dims: int, channels: int, groups: int) -> None:
    module = layers.norm("group", dims, channels)
    assert isinstance(module, nn.GroupNorm) and module.num_groups == groups  # gcd(channels, 8)
    y = module(_spread(dims, channels=channels))
    _assert_standardised(y.reshape(2, groups, -1), dim=2)
    if groups < channels:  # channels of one group share the statistics, so each channel alone is not centred
        assert y.flatten(2).mean(2).abs().max() > 0.5


def test_norm_none_is_the_identity() -> None:
    x = _spread(2)
    torch.testing.assert_close(layers.norm("none", 2, 12)(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_pools_dropout_and_global_pool(dims: int) -> None:
    x = _x(dims)
    assert layers.pool(dims, "max")(x).shape == (2, 4, *[4] * dims)
    assert layers.pool(dims, "avg", 4)(x).shape == (2, 4, *[2] * dims)
    assert isinstance(layers.dropout(dims, 0.0), nn.Identity)
    assert layers.dropout(dims, 0.5)(x).shape == x.shape
    torch.testing.assert_close(layers.global_avg_pool(x), x.mean(dim=tuple(range(2, 2 + dims))))


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, *S)`` as ``(B, C, *S / size, size ** dims)``: the values of each ``size^dims`` block last."""
    dims = x.ndim - 2
    split = x.reshape(*x.shape[:2], *[n for s in x.shape[2:] for n in (s // size, size)])
    inner = [3 + 2 * a for a in range(dims)]
    return split.permute(0, 1, *[2 + 2 * a for a in range(dims)], *inner).flatten(2 + dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_convolution_types_padding_and_stride(dims: int) -> None:
    same = layers.conv(dims, 1, 1, kernel_size=3)
    assert isinstance(same, {2: nn.Conv2d, 3: nn.Conv3d}[dims])
    with torch.no_grad():
        same.weight.fill_(1.0)
        same.bias.zero_()
    y = same(torch.ones(1, 1, *[5] * dims))
    # Zero padding of one voxel: a 3^d box sum is 3^d inside, 2^d in a corner, 3 * 2^(d-1) at an edge's middle.
    assert y[(0, 0, *[2] * dims)] == 3**dims and y[(0, 0, *[0] * dims)] == 2**dims
    assert y[(0, 0, *[0] * (dims - 1), 2)] == 3 * 2 ** (dims - 1)
    strided = layers.conv(dims, 1, 1, kernel_size=1, stride=2, bias=False)
    assert strided.bias is None
    with torch.no_grad():
        strided.weight.fill_(1.0)
    x = torch.randn(1, 1, *[6] * dims)
    torch.testing.assert_close(strided(x), x[(..., *[slice(0, None, 2)] * dims)])  # keeps voxels 0, 2, 4


@pytest.mark.parametrize("dims", [2, 3])
def test_transposed_convolution_and_upsampling_values(dims: int) -> None:
    up = layers.conv_transpose(dims, 1, 1, scale=2)
    assert isinstance(up, {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims])
    with torch.no_grad():
        up.weight.fill_(1.0)
        up.bias.fill_(0.5)
    x = torch.randn(1, 1, *[3] * dims)
    copied = x
    for axis in range(2, 2 + dims):
        copied = copied.repeat_interleave(2, dim=axis)
    torch.testing.assert_close(up(x), copied + 0.5)  # kernel = stride: every voxel fills its own 2^d block
    # Linear interpolation (align_corners=False) of a ramp along the last axis: clamp((j + 0.5) / 2 - 0.5, 0, 3).
    ramp = torch.arange(4.0).expand(1, 1, *[4] * dims)
    expected = ((torch.arange(8.0) + 0.5) / 2 - 0.5).clamp(0, 3).expand(1, 1, *[8] * dims)
    torch.testing.assert_close(layers.upsample(dims, 2)(ramp), expected)


@pytest.mark.parametrize("dims", [2, 3])
def test_pool_values(dims: int) -> None:
    x = torch.randn(2, 3, *[4] * dims)
    torch.testing.assert_close(layers.pool(dims, "max")(x), _blocks(x, 2).amax(-1))
    torch.testing.assert_close(layers.pool(dims, "avg", 4)(x), _blocks(x, 4).mean(-1))


@pytest.mark.parametrize("dims", [2, 3])
def test_dropout_drops_whole_channels(dims: int) -> None:
    module = layers.dropout(dims, 0.5).train()
    x = torch.ones(8, 16, *[4] * dims)
    y = module(x).flatten(2)
    # Each (sample, channel) map is either dropped entirely or kept and scaled by 1 / (1 - p).
    assert torch.equal(y.amin(2), y.amax(2)) and set(y[:, :, 0].unique().tolist()) == {0.0, 2.0}
    assert torch.equal(module.eval()(x), x)  # inactive in evaluation


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_norm_act_unit(dims: int) -> None:
    unit = layers.ConvNormAct(dims, 4, 8, stride=2, dropout_p=0.1)
    assert unit.conv.bias is None  # the norm's shift makes a conv bias redundant
    assert layers.ConvNormAct(dims, 4, 8, norm_name="none").conv.bias is not None
    assert unit(_x(dims)).shape == (2, 8, *[4] * dims)


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_norm_act_order_and_values(dims: int) -> None:
    unit = layers.ConvNormAct(dims, 4, 8, dropout_p=0.2)
    assert list(unit._modules) == ["conv", "dropout", "norm", "act"]  # nnU-Net's order
    assert isinstance(unit.norm, {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims])
    assert isinstance(unit.act, nn.LeakyReLU) and unit.act.negative_slope == 0.01
    unit.eval()  # no dropout; instance norm uses the sample's own statistics in evaluation too
    x = _x(dims)
    normed = nn.functional.instance_norm(unit.conv(x), weight=unit.norm.weight, bias=unit.norm.bias)
    torch.testing.assert_close(unit(x), nn.functional.leaky_relu(normed, 0.01))


def test_init_weights_is_kaiming_normal_with_zero_bias() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(
        layers.conv(3, 16, 32), layers.conv_transpose(2, 64, 16), layers.norm("instance", 3, 32), nn.Linear(4, 4)
    )
    untouched = {k: v.clone() for k, v in network.state_dict().items() if k.startswith(("2.", "3."))}
    network.apply(layers.init_weights)
    for module in (network[0], network[1]):
        weight = module.weight.detach()
        fan_in = weight.shape[1] * math.prod(weight.shape[2:])  # torch's convention, also for transposed convs
        std = math.sqrt(2.0 / (1 + 0.01**2)) / math.sqrt(fan_in)
        assert abs(float(weight.std()) / std - 1) < 0.05
        assert float((weight.abs() > math.sqrt(3) * std).float().mean()) > 0.05  # normal tails, not uniform
        assert torch.equal(module.bias, torch.zeros_like(module.bias))
    for key, value in untouched.items():  # norms and linear layers keep their own initialisation
        assert torch.equal(network.state_dict()[key], value)


_POINTS = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
_EXPECTED_ACTS = {
    "leakyrelu": torch.where(_POINTS > 0, _POINTS, 0.01 * _POINTS),  # nnU-Net's slope 0.01
    "relu": _POINTS.clamp(min=0),
    "gelu": 0.5 * _POINTS * (1 + torch.erf(_POINTS / math.sqrt(2))),  # exact GELU, not the tanh approximation
    "elu": torch.where(_POINTS > 0, _POINTS, torch.exp(_POINTS) - 1),
    "none": _POINTS,
}


@pytest.mark.parametrize("act", layers.ACTS)
def test_activation_values_and_not_in_place(act: str) -> None:
    x = _POINTS.clone()
    torch.testing.assert_close(layers.act(act)(x), _EXPECTED_ACTS[act])
    torch.testing.assert_close(x, _POINTS, rtol=0, atol=0)  # the input is left as it was


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
