"""ResNetEncoder: presets, per-axis output stride, the Encoder contract, the U-Net and weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medssl.errors import MedsslError
from medssl.networks import ResNetEncoder, UNet, UNetEncoder, load_encoder, resnet_encoder, save_encoder

TINY = {"widths": (4, 4, 8, 8), "stem_width": 4}


def _assert_all_grads(module: nn.Module) -> None:
    for name, param in module.named_parameters():
        assert param.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_resnet50_matches_the_reference_architecture() -> None:
    """torchvision's 2D ResNet-50 without its classifier has 23,508,032 parameters (25,557,032 - 2048 * 1000 - 1000);
    the same count here means the same blocks, widths, projections and stride placement."""
    enc = resnet_encoder("resnet50", 2, 3)
    assert enc.depths == (3, 4, 6, 3) and enc.block == "bottleneck"
    assert enc.channels == (64, 256, 512, 1024, 2048) and enc.strides == (2, 4, 8, 16, 32)
    assert sum(p.numel() for p in enc.parameters()) == 23_508_032
    assert [len(stage) for stage in enc.stages] == [3, 4, 6, 3]


def test_resnet18_preset() -> None:
    enc = resnet_encoder("resnet18", 2, 1)
    assert enc.block == "basic" and enc.depths == (2, 2, 2, 2)
    assert enc.channels == (64, 64, 128, 256, 512)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_feature_shapes_and_grads(dims: int, block: str) -> None:
    enc = ResNetEncoder(dims, 2, depths=(1, 2, 1, 1), block=block, output_stride=8, **TINY)  # type: ignore[arg-type]
    x = torch.randn(2, 2, *[32] * dims)
    feats = enc(x)
    assert enc.strides == (2, 4, 8, 8, 8)
    for s, f in enumerate(feats):
        assert f.shape == (2, enc.channels[s], *[32 // enc.strides[s]] * dims)
    (sum(f.mean() for f in feats) + enc.pool(feats).square().mean()).backward()
    _assert_all_grads(enc)


def test_paper_output_stride_is_per_axis_and_dilates() -> None:
    """PGL's 3D encoder: x and y strided by 16, the slice axis z by 8; the dropped strides become dilations."""
    enc = resnet_encoder("resnet50", 3, 1, output_stride=(16, 16, 8), **TINY)
    assert enc.axis_strides == ((2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 8), (16, 16, 8))
    assert enc.strides == (2, 4, 8, 16, 16) and enc.required_divisor == 16
    feats = enc(torch.randn(2, 1, 32, 48, 16))
    assert [tuple(f.shape[2:]) for f in feats][-2:] == [(2, 3, 2), (2, 3, 2)]
    middle = enc.stages[3][1].branch[3]  # stage 4, second block, 3x3 conv
    assert isinstance(middle, nn.Conv3d)
    assert middle.dilation == (2, 2, 4) and middle.padding == (2, 2, 4) and middle.stride == (1, 1, 1)


def test_isotropic_resnet_plugs_into_the_unet() -> None:
    enc = ResNetEncoder(2, 1, depths=(1, 1, 1, 1), block="basic", output_stride=16, **TINY)  # type: ignore[arg-type]
    net = UNet(enc, out_channels=3)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_weights_round_trip(tmp_path: Path) -> None:
    kwargs = {"depths": (1, 1, 1, 1), "output_stride": (16, 16, 8), **TINY}
    enc = ResNetEncoder(3, 1, **kwargs)  # type: ignore[arg-type]
    path = save_encoder(enc, tmp_path / "resnet.pt")
    fresh = ResNetEncoder(3, 1, **kwargs)  # type: ignore[arg-type]
    assert load_encoder(fresh, path) == len(enc.state_dict())
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in enc.state_dict().items())
    with pytest.raises(MedsslError, match="holds a ResNetEncoder"):
        load_encoder(UNetEncoder(3, 1, (4, 8)), path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": "wide"}, "unknown block"),
        ({"depths": (1, 1), "widths": (4,)}, "one per stage"),
        ({"output_stride": 12}, "power of two"),
        ({"output_stride": 64}, "power of two"),
        ({"output_stride": (8, 16)}, "one per axis"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(MedsslError, match=match):
        ResNetEncoder(3, 1, **kwargs)  # type: ignore[arg-type]


def test_input_must_be_divisible_by_the_largest_stride() -> None:
    enc = ResNetEncoder(2, 1, depths=(1, 1, 1, 1), output_stride=8, **TINY)  # type: ignore[arg-type]
    with pytest.raises(MedsslError, match="divisible by 8"):
        enc(torch.randn(2, 1, 20, 16))
