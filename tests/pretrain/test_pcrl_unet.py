"""PCRL's U-Net decoder: every skip map mixed for the hybrid with the bottleneck's alpha, the gate on the bottleneck."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from medssl.networks.decoders import ReconstructionDecoder
from medssl.pretrain import PCRL, registry
from medssl.pretrain.pcrl import SkipDecoder, transform_indicator
from tests.pretrain.conftest import SMALL, images
from tests.pretrain.test_pcrl import _known_pairs, _method, _other


class _Spy(nn.Module):
    """Records what the decoder is given, then decodes it."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.seen: list[Sequence[Tensor] | Tensor] = []

    def forward(self, features: Sequence[Tensor] | Tensor) -> Tensor:
        self.seen.append([f.detach() for f in features] if isinstance(features, list) else features.detach())
        out: Tensor = self.decoder(features)
        return out


@pytest.mark.parametrize("dims", [2, 3])
def test_hybrid_mixes_every_skip_with_the_bottlenecks_alpha_and_the_gate_acts_on_the_bottleneck_only(
    dims: int,
) -> None:
    method = _method(dims)  # alpha 0.7, a momentum encoder unlike the online one, known views, no corruption
    spy = _Spy(method.decoder)
    method.decoder = spy
    x = images(dims, batch=2)
    method.losses(x)
    features = spy.seen[0]
    assert isinstance(features, list) and len(features) == len(SMALL)
    x1, x2 = x, torch.stack([_other(t) for t in x])  # what the encoders saw, in the crop frame
    with torch.no_grad():
        online = method.encoder(torch.cat((x1, x2)))
        momentum = method.momentum_encoder(torch.cat((x1, x2)))
    for level in range(len(SMALL) - 1):  # the skips: (o1, o2, 0.7 * o1 + 0.3 * m2), not gated
        o1, o2 = online[level].chunk(2)
        m2 = momentum[level][2:]
        torch.testing.assert_close(features[level], torch.cat((o1, o2, 0.7 * o1 + 0.3 * m2)))
    rec1, rec2 = _known_pairs(dims)
    ind1, ind2 = transform_indicator(rec1), transform_indicator(rec2)
    o1, o2 = online[-1].chunk(2)
    bottleneck = torch.cat((o1, o2, 0.7 * o1 + 0.3 * momentum[-1][2:]))
    with torch.no_grad():
        gated = method.gate(bottleneck, torch.cat((ind1, ind2, 0.7 * ind1 + 0.3 * ind2)))
    torch.testing.assert_close(features[-1], gated)


@pytest.mark.parametrize("dims", [2, 3])
def test_plain_decoder_gets_the_gated_bottleneck_alone(dims: int) -> None:
    method = _method(dims, decoder="plain")
    assert isinstance(method.decoder, ReconstructionDecoder)
    spy = _Spy(method.decoder)
    method.decoder = spy
    x = images(dims, batch=2)
    method.losses(x)
    x12 = torch.cat((x, torch.stack([_other(t) for t in x])))
    with torch.no_grad():
        o1, o2 = method.encoder(x12)[-1].chunk(2)
        m2 = method.momentum_encoder(x12)[-1][2:]
    rec1, rec2 = _known_pairs(dims)
    ind1, ind2 = transform_indicator(rec1), transform_indicator(rec2)
    with torch.no_grad():
        want = method.gate(torch.cat((o1, o2, 0.7 * o1 + 0.3 * m2)), torch.cat((ind1, ind2, 0.7 * ind1 + 0.3 * ind2)))
    assert isinstance(spy.seen[0], Tensor)
    torch.testing.assert_close(spy.seen[0], want)


@pytest.mark.parametrize("dims", [2, 3])
def test_skip_decoder_reads_every_level_and_returns_the_input_size(dims: int) -> None:
    torch.manual_seed(0)
    method = PCRL(dims, 1, SMALL)
    assert isinstance(method.decoder, SkipDecoder)
    features = [f.detach() for f in method.encoder(images(dims, batch=2))]
    out = method.decoder(features)
    assert out.shape == (2, 1, *[16] * dims)
    for level in range(len(features)):  # a change at any level reaches the reconstruction
        changed = [f + 1.0 if s == level else f for s, f in enumerate(features)]
        assert not torch.allclose(method.decoder(changed), out)


def test_decoder_option_and_presets() -> None:
    assert isinstance(registry.create("pcrl", spatial_dims=2, in_channels=1, preset="paper").decoder, SkipDecoder)
    assert isinstance(PCRL(2, 1, SMALL, preset="small").decoder, SkipDecoder)
    assert PCRL(3, 1, SMALL, decoder="plain").decoder_kind == "plain"
    with pytest.raises(ValueError, match="decoder must be"):
        PCRL(2, 1, SMALL, decoder="unet3")  # type: ignore[arg-type]
