"""Reconstruction decoder in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from medssl.networks import UNetEncoder
from medssl.networks.decoders import ReconstructionDecoder
from tests.pretrain.conftest import SIZE, SMALL


@pytest.mark.parametrize("dims", [2, 3])
def test_decodes_the_deepest_map_to_the_input_size(dims: int) -> None:
    encoder = UNetEncoder(dims, 3, SMALL, norm="group")
    decoder = ReconstructionDecoder.for_encoder(encoder, in_channels=6)
    deep = torch.randn(2, 6, *[SIZE // 4] * dims)
    out = decoder(deep)
    assert out.shape == (2, 3, *[SIZE] * dims)
    out.square().mean().backward()
    assert all(p.grad is not None for p in decoder.parameters())
    assert decoder.body[0].norm.__class__ is torch.nn.GroupNorm  # follows the encoder's norm
