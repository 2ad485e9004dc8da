"""UNet / build_unet in 2D and 3D, including a UNet around a contract-only custom encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.errors import MedsslError
from medssl.networks import Encoder, UNet, UNetEncoder, build_unet
from medssl.networks.unet import UNetDecoder, UNetHead

SMALL = (4, 8, 16)


def _assert_all_grads(module: nn.Module) -> None:
    for name, param in module.named_parameters():
        assert param.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def _step(model: nn.Module, x: torch.Tensor, classes: int) -> torch.Tensor:
    target = torch.randint(0, classes, (x.shape[0], *x.shape[2:]))
    logits = model(x)
    nn.functional.cross_entropy(logits, target).backward()
    return logits


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_build_unet_shapes_and_grads(dims: int, batch: int) -> None:
    model = build_unet(dims, 2, 3, channels=SMALL)
    x = torch.randn(batch, 2, *[16] * dims)
    logits = _step(model, x, 3)
    assert logits.shape == (batch, 3, *[16] * dims)
    assert torch.isfinite(logits).all()
    _assert_all_grads(model)


def test_attributes_and_submodules() -> None:
    model = build_unet(3, 1, 2)
    assert isinstance(model.encoder, UNetEncoder)
    assert isinstance(model.decoder, UNetDecoder) and isinstance(model.head, UNetHead)
    assert model.encoder.channels == (32, 64, 128, 256, 320)
    assert model.spatial_dims == 3 and model.in_channels == 1 and model.out_channels == 2
    assert model.required_divisor == model.encoder.required_divisor == 16
    # Every parameter lives in exactly one of encoder / decoder / head.
    parts = sum(sum(p.numel() for p in m.parameters()) for m in (model.encoder, model.decoder, model.head))
    assert parts == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dims", [2, 3])
def test_default_widths_at_batch_one(dims: int) -> None:
    model = build_unet(dims, 1, 2)  # training mode: instance norm must cope with one sample and a 2^d deepest map
    assert model.training and model.encoder.channels == (32, 64, 128, 256, 320)  # nnU-Net's default widths
    seen: list[tuple[int, ...]] = []
    model.encoder.register_forward_hook(lambda _m, _i, feats: seen.extend(tuple(f.shape) for f in feats))
    with torch.no_grad():  # forward only: a backward pass at these widths would dominate the test time
        out = model(torch.randn(1, 1, *[32] * dims))
    assert out.shape == (1, 2, *[32] * dims) and torch.isfinite(out).all()
    assert seen[-1] == (1, 320, *[2] * dims)  # the deepest map: one sample, 2^d voxels


@pytest.mark.parametrize("channels", [(8,), (4, 8), (2, 4, 4, 8, 8, 8)])
def test_any_number_of_scales(channels: tuple[int, ...]) -> None:
    model = build_unet(2, 1, 2, channels=channels, norm="group", dropout=0.1)
    scales = len(channels)
    assert model.encoder.channels == channels and model.required_divisor == 2 ** (scales - 1)
    assert len(model.decoder.ups) == len(model.decoder.blocks) == scales - 1  # one decoder stage per skip
    features = model.encoder(torch.randn(2, 1, 32, 32))
    assert [tuple(f.shape[1:]) for f in features] == [(c, 32 >> s, 32 >> s) for s, c in enumerate(channels)]
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


@pytest.mark.parametrize("dims", [2, 3])
def test_deep_supervision(dims: int) -> None:
    model = build_unet(dims, 1, 2, channels=(4, 8, 8, 16), deep_supervision=True)
    outs = model(torch.randn(2, 1, *[16] * dims))
    assert isinstance(outs, list)
    assert [o.shape[2] for o in outs] == [16, 8, 4]
    assert all(o.shape[:2] == (2, 2) for o in outs)
    sum(o.mean() for o in outs).backward()
    _assert_all_grads(model)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *[16] * dims)).shape == (1, 2, *[16] * dims)


def test_eval_mode_is_deterministic_and_no_grad() -> None:
    model = build_unet(2, 1, 2, channels=SMALL, dropout=0.5)
    x = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(model(x), model(x))  # training: dropout draws a new mask each time
    model.eval()
    with torch.no_grad():
        first, second = model(x), model(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # evaluation: no dropout, same output
    assert not first.requires_grad and first.grad_fn is None  # no graph is built under no_grad


class _PatchEncoder(Encoder):
    """Contract-only encoder with strides (2, 4, 8): finest map is below input resolution."""

    def __init__(self, spatial_dims: int, in_channels: int) -> None:
        super().__init__(spatial_dims, in_channels, (6, 10, 12), (2, 4, 8))
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]  # test-local; the package maps dims only in layers.py
        self.convs = nn.ModuleList(
            [conv(in_channels, 6, 2, stride=2), conv(6, 10, 2, stride=2), conv(10, 12, 2, stride=2)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for c in self.convs:
            x = torch.relu(c(x))
            feats.append(x)
        return feats


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_around_custom_encoder(dims: int) -> None:
    model = UNet(_PatchEncoder(dims, 2), out_channels=4)
    assert model.required_divisor == 8
    logits = _step(model, torch.randn(2, 2, *[16] * dims), 4)
    assert logits.shape == (2, 4, *[16] * dims)
    _assert_all_grads(model)
    assert model.decoder.out_channels == 6


def test_swapping_the_encoder_keeps_decoder_and_head_types() -> None:
    a, b = build_unet(2, 1, 2, channels=SMALL).eval(), build_unet(2, 1, 2, channels=SMALL).eval()
    decoder, head = a.decoder, a.head
    kept = {k: v.clone() for k, v in a.state_dict().items() if not k.startswith("encoder.")}
    a.encoder.load_state_dict(b.encoder.state_dict())
    assert a.decoder is decoder and a.head is head
    assert isinstance(a.decoder, UNetDecoder) and isinstance(a.head, UNetHead)
    after = a.state_dict()
    assert kept and all(torch.equal(after[k], v) for k, v in kept.items())  # decoder and head weights untouched
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        for mine, theirs in zip(a.encoder(x), b.encoder(x), strict=True):
            torch.testing.assert_close(mine, theirs)
        # a now runs b's encoder under its own decoder and head.
        torch.testing.assert_close(a(x), a.head(a.decoder(b.encoder(x))[0]))
        assert not torch.allclose(a(x), b(x))


def test_bad_arguments_raise() -> None:
    with pytest.raises(MedsslError):
        UNet(nn.Conv2d(1, 1, 1), 2)  # type: ignore[arg-type]
    with pytest.raises(MedsslError):
        build_unet(2, 1, 0)
    with pytest.raises(MedsslError, match="divisible"):
        build_unet(2, 1, 2, channels=SMALL)(torch.randn(1, 1, 18, 16))
