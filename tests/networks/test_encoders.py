"""UNetEncoder and the Encoder contract, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import MedsslError
from medssl.networks import Encoder, UNetEncoder

SMALL = (4, 8, 16)


def _assert_all_grads(module: torch.nn.Module) -> None:
    for name, param in module.named_parameters():
        assert param.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_defaults() -> None:
    enc = UNetEncoder(2, 1)
    assert enc.channels == (32, 64, 128, 256, 320)
    assert enc.strides == (1, 2, 4, 8, 16)
    assert enc.out_channels == 320 and enc.required_divisor == 16
    assert enc.spatial_dims == 2 and enc.in_channels == 1
    assert enc.norm_name == "instance" and enc.act_name == "leakyrelu"


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_feature_shapes_and_grads(dims: int, batch: int) -> None:
    enc = UNetEncoder(dims, 2, SMALL)
    size = 16
    x = torch.randn(batch, 2, *[size] * dims)
    feats = enc(x)
    assert len(feats) == len(SMALL)
    for s, f in enumerate(feats):
        assert f.shape == (batch, SMALL[s], *[size // enc.strides[s]] * dims)
    pooled = enc.pool(feats)
    assert pooled.shape == (batch, SMALL[-1])
    (sum(f.mean() for f in feats) + pooled.square().mean()).backward()
    _assert_all_grads(enc)
    assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.parametrize("dims", [2, 3])
def test_default_widths_forward(dims: int) -> None:
    enc = UNetEncoder(dims, 1)
    feats = enc(torch.randn(1, 1, *[32] * dims))
    assert [f.shape[1] for f in feats] == [32, 64, 128, 256, 320]
    assert [f.shape[2] for f in feats] == [32, 16, 8, 4, 2]


@pytest.mark.parametrize("channels", [(8,), (4, 8), (2, 4, 8, 8, 8, 8)])
def test_any_number_of_scales(channels: tuple[int, ...]) -> None:
    enc = UNetEncoder(2, 1, channels, norm="group", dropout=0.2)
    assert enc.strides == tuple(2**s for s in range(len(channels)))
    feats = enc(torch.randn(2, 1, 32, 32))
    assert [f.shape[-1] for f in feats] == [32 // s for s in enc.strides]


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_other_norms(norm: str) -> None:
    feats = UNetEncoder(3, 1, (4, 8), norm=norm, act="relu")(torch.randn(2, 1, 8, 8, 8))
    assert feats[-1].shape == (2, 8, 4, 4, 4)


def test_bad_inputs_raise() -> None:
    enc = UNetEncoder(2, 1, SMALL)
    with pytest.raises(MedsslError, match="divisible by 4"):
        enc(torch.randn(1, 1, 18, 16))
    with pytest.raises(MedsslError, match="expects input"):
        enc(torch.randn(1, 3, 16, 16))
    with pytest.raises(MedsslError, match="expects input"):
        enc(torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(MedsslError):
        UNetEncoder(4, 1)
    with pytest.raises(MedsslError):
        UNetEncoder(2, 1, ())


class _Minimal(Encoder):
    """A contract-only encoder: strides (2, 4) and no parameters of its own beyond two convs."""

    def __init__(self) -> None:
        super().__init__(2, 1, (3, 5), (2, 4))
        self.a = torch.nn.Conv2d(1, 3, 2, stride=2)
        self.b = torch.nn.Conv2d(3, 5, 2, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f0 = self.a(x)
        return [f0, self.b(f0)]


def test_contract_validation() -> None:
    enc = _Minimal()
    assert enc.out_channels == 5 and enc.required_divisor == 4
    assert enc.pool(enc(torch.randn(2, 1, 8, 8))).shape == (2, 5)
    with pytest.raises(TypeError):
        Encoder(2, 1, (4,), (1,))  # type: ignore[abstract]
    with pytest.raises(MedsslError, match="divide"):
        _BadStrides()


class _BadStrides(Encoder):
    def __init__(self) -> None:
        super().__init__(2, 1, (4, 8), (2, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]
