"""The state_dict key names of every pretraining method are pinned.

Checkpoints of earlier runs (``checkpoints/last.ckpt`` holds the method as ``model.*``) and the encoder files
written from them are read by these names; moving a network between modules keeps them, renaming an attribute or
re-nesting a head would not, and old runs would then no longer load.
"""

from __future__ import annotations

import pytest

from medssl.networks import UNetEncoder
from medssl.pretrain import registry

_CHANNELS = (4, 8)
_MLP = ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CONV_HEAD = ("0.weight", *(f"1.{k}" for k in _BN), "3.weight", "3.bias")
# ReconstructionDecoder for channels (4, 8): ConvNormAct (8 -> 8), transposed conv (8 -> 4), ConvNormAct (4 -> 4),
# then the 1x1 head conv; the autoencoder's norms are the encoder's (instance, no running statistics).
_DECODER_INSTANCE = (
    "body.0.conv.weight",
    "body.0.norm.weight",
    "body.0.norm.bias",
    "body.1.weight",
    "body.1.bias",
    "body.2.conv.weight",
    "body.2.norm.weight",
    "body.2.norm.bias",
    "head.conv.weight",
    "head.conv.bias",
)
# PCRL's U-Net decoder (SkipDecoder) for channels (4, 8): the UNetDecoder as ``body`` (transposed conv 8 -> 4, two
# ConvNormAct units on the concatenated skip), then the 1x1 head conv.
_SKIP_DECODER_INSTANCE = (
    "body.ups.0.weight",
    "body.ups.0.bias",
    *(f"body.blocks.0.{u}.{k}" for u in (0, 1) for k in ("conv.weight", "norm.weight", "norm.bias")),
    "head.conv.weight",
    "head.conv.bias",
)

EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "simclr": {"projector": _MLP},
    "byol": {"projector": _MLP, "predictor": _MLP, "target_projector": _MLP},
    "pgl": {"projector": _CONV_HEAD, "predictor": _CONV_HEAD, "target_projector": _CONV_HEAD},
    "autoencoder": {"decoder": _DECODER_INSTANCE},
    "vae": {"to_posterior": ("weight", "bias"), "decoder": _DECODER_INSTANCE},
    "pcrl": {
        "projector": _MLP,
        "momentum_projector": _MLP,
        "gate": ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"),
        "decoder": _SKIP_DECODER_INSTANCE,
    },
    "mim": {"decoder": _DECODER_INSTANCE},
}
_TARGET_ENCODER = {"byol", "pgl"}
# PCRL: its EMA encoder's name, and its key queue, queue pointer and NCE normaliser (buffers, saved for --resume)
_MOMENTUM_ENCODER = {"pcrl"}
_BUFFERS = {"pcrl": {"queue", "queue_ptr", "nce_norm"}}
# MIM: the learned tokens of masked input blocks and of masked cells of the deepest map (parameters, not modules)
_PARAMETERS = {"mim": {"mask_token", "feature_token"}}


def _expected_keys(name: str, encoder_keys: list[str]) -> set[str]:
    keys = {f"encoder.{k}" for k in encoder_keys}
    if name in _TARGET_ENCODER:
        keys |= {f"target_encoder.{k}" for k in encoder_keys}
    if name in _MOMENTUM_ENCODER:
        keys |= {f"momentum_encoder.{k}" for k in encoder_keys}
    keys |= _BUFFERS.get(name, set()) | _PARAMETERS.get(name, set())
    for module, suffixes in EXPECTED[name].items():
        keys |= {f"{module}.{suffix}" for suffix in suffixes}
    return keys


def test_every_registered_method_is_pinned() -> None:
    assert set(registry.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_method_state_dict_keys_are_unchanged(name: str) -> None:
    method = registry.create(name, spatial_dims=2, in_channels=1, channels=_CHANNELS)
    encoder_keys = list(UNetEncoder(2, 1, _CHANNELS).state_dict())
    keys = set(method.state_dict())
    expected = _expected_keys(name, encoder_keys)
    assert keys == expected, f"missing {sorted(expected - keys)}, unexpected {sorted(keys - expected)}"
