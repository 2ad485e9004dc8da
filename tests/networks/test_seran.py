"""SERAN block and trunk: shapes, per-sample attention, identity start, global reach, baselines of equal depth."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medssl.errors import MedsslError
from medssl.networks.seran import (
    ATTENTIONS,
    PAPER,
    SCALES,
    ChannelAttention,
    SERANBlock,
    SERANet,
    pixel_shuffle,
)


def _open_gates(model: nn.Module) -> None:
    """Set every SERAN block's residual scale to 1 so that its attention shows in the output."""
    for module in model.modules():
        if isinstance(module, SERANBlock):
            module.gamma.data.fill_(1.0)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("scale", SCALES)
def test_output_shape_is_scaled(attention: str, scale: int) -> None:
    torch.manual_seed(0)
    model = SERANet(scale, width=8, groups=1, blocks=2, descriptors=4, attention=attention)
    assert model(torch.randn(2, 1, 7, 9)).shape == (2, 1, 7 * scale, 9 * scale)


def test_3d_output_shape() -> None:
    model = SERANet(2, width=8, groups=1, blocks=1, descriptors=4, spatial_dims=3, input_skip=True)
    assert model(torch.randn(1, 1, 3, 4, 5)).shape == (1, 1, 6, 8, 10)


@pytest.mark.parametrize("attention", ["seran", "rcan"])
def test_each_image_of_a_batch_is_processed_alone(attention: str) -> None:
    torch.manual_seed(0)
    model = SERANet(2, width=8, groups=1, blocks=2, descriptors=4, attention=attention).train()
    _open_gates(model)
    x = torch.randn(3, 1, 10, 10)
    changed = x.clone()
    changed[1] = torch.randn(1, 10, 10) * 5
    torch.testing.assert_close(model(x)[0], model(changed)[0], rtol=0, atol=1e-6)
    block = SERANBlock(8, descriptors=4).train()
    block.gamma.data.fill_(1.0)
    features = torch.randn(2, 8, 6, 6)
    other = features.clone()
    other[1] += 3.0
    torch.testing.assert_close(block(features)[0], block(other)[0], rtol=0, atol=1e-6)
    assert not torch.allclose(block(features)[1], block(other)[1])


def test_block_starts_as_identity_and_learns_its_scale() -> None:
    torch.manual_seed(0)
    block = SERANBlock(6, descriptors=3)
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(block(x), x)
    block(x).square().sum().backward()
    assert block.gamma.grad is not None and block.gamma.grad.abs().item() > 0


def test_block_reaches_the_whole_image() -> None:
    torch.manual_seed(0)
    block = SERANBlock(4, descriptors=4)
    block.gamma.data.fill_(1.0)
    x = torch.randn(1, 4, 12, 12)
    far = x.clone()
    far[0, :, -1, -1] += 10.0  # one pixel at the opposite corner
    # only 1x1 convolutions besides the descriptors: a change at (0, 0) comes through the global descriptors
    assert (block(x)[0, :, 0, 0] - block(far)[0, :, 0, 0]).abs().max() > 1e-4


def test_squeeze_and_excitation_weights_are_distributions() -> None:
    torch.manual_seed(0)
    block = SERANBlock(4, descriptors=3)
    block.gamma.data.fill_(1.0)
    nn.init.zeros_(block.node_conv.weight)
    nn.init.zeros_(block.node_conv.bias)  # no relations: every descriptor keeps its pooled value
    flat = torch.full((2, 4, 5, 5), 0.7)
    feats = block.features(flat)[:, :, :1, 0]  # (B, C, 1): the same at every position
    # maps summing to 1 over positions pool a constant into itself: all K descriptors are equal
    descriptor = torch.relu(block.channel_conv(feats))
    torch.testing.assert_close(block.descriptors(flat), descriptor.expand(-1, -1, 3))
    # weights summing to 1 over K mix equal descriptors into that descriptor at every position
    expected = flat + block.out(descriptor[..., None].expand(-1, -1, 5, 5))
    torch.testing.assert_close(block(flat), expected)


def test_baselines_have_the_same_depth_and_width() -> None:
    models = {a: SERANet(2, attention=a) for a in ATTENTIONS}
    convs = {
        a: [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        for a, model in models.items()
    }
    assert convs["seran"] == convs["none"] == convs["rcan"]
    assert len(convs["none"]) == 1 + 2 * (2 * 4 + 1) + 1 + 1 + 1  # head, groups, body end, upsampler, tail
    assert sum(isinstance(m, SERANBlock) for m in models["seran"].modules()) == 8
    assert sum(isinstance(m, ChannelAttention) for m in models["rcan"].modules()) == 8
    assert not any(isinstance(m, SERANBlock | ChannelAttention) for m in models["none"].modules())
    n_params = {a: sum(p.numel() for p in m.parameters()) for a, m in models.items()}
    assert n_params["none"] < n_params["rcan"] < n_params["seran"]


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = SERANet(3, width=8, groups=1, blocks=1, descriptors=4)
    _open_gates(model)
    model(torch.randn(2, 1, 6, 6)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_pixel_shuffle_matches_torch_in_2d_and_places_3d_offsets() -> None:
    x = torch.randn(2, 12, 3, 4)
    torch.testing.assert_close(pixel_shuffle(x, 2), F.pixel_shuffle(x, 2))
    torch.testing.assert_close(pixel_shuffle(torch.randn(1, 18, 2, 2)[:, :18], 3).shape, torch.Size([1, 2, 6, 6]))
    cube = pixel_shuffle(torch.arange(8.0).reshape(1, 8, 1, 1, 1), 2)[0, 0]
    expected = torch.tensor([[[4 * i + 2 * j + k for k in range(2)] for j in range(2)] for i in range(2)])
    torch.testing.assert_close(cube, expected.float())


def test_input_skip_adds_the_upsampled_input() -> None:
    model = SERANet(2, width=4, groups=1, blocks=1, descriptors=2, input_skip=True)
    for p in model.tail.parameters():
        nn.init.zeros_(p)  # the learned residual is then zero
    x = torch.rand(1, 1, 6, 6)
    torch.testing.assert_close(model(x), F.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False))


def test_paper_preset_builds_and_bad_options_raise() -> None:
    model = SERANet(4, **PAPER)
    assert sum(isinstance(m, SERANBlock) for m in model.modules()) == PAPER["groups"] * PAPER["blocks"]
    for kwargs in [{"scale": 5}, {"scale": 2, "attention": "nonlocal"}, {"scale": 2, "width": 0}]:
        with pytest.raises(MedsslError):
            SERANet(**kwargs)
    with pytest.raises(MedsslError):
        SERANet(2, spatial_dims=1)
