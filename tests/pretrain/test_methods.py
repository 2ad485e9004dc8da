"""Contract test over every registered pretraining method, in 2D and 3D."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medssl.networks import Encoder, UNetEncoder, load_encoder, save_encoder
from medssl.pretrain import registry
from medssl.pretrain.base import PretrainMethod
from tests.pretrain.conftest import SMALL, images

# Extra settings so that every optional loss term is exercised.
_OPTIONS: dict[str, dict[str, float]] = {"vae": {"contrastive_weight": 0.5}}


def _create(name: str, dims: int) -> PretrainMethod:
    return registry.create(name, spatial_dims=dims, in_channels=1, channels=SMALL, **_OPTIONS.get(name, {}))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", registry.names())
def test_training_step_contract(name: str, dims: int, tmp_path: Path) -> None:
    method = _create(name, dims)
    assert isinstance(method, PretrainMethod) and method.name == name
    losses = method.losses(images(dims, batch=2), torch.Generator().manual_seed(0))
    assert "loss" in losses and losses["loss"].shape == ()
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses["loss"].backward()

    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in method.named_parameters() if not p.requires_grad}
    assert trainable
    for param_name, param in trainable.items():
        assert param.grad is not None, f"{param_name} has no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"
    assert all(p.grad is None for p in frozen.values())
    if name == "byol":
        assert frozen and all(n.startswith("target_") for n in frozen)

    method.after_step(0, 10)
    encoder = method.export_encoder()
    assert isinstance(encoder, Encoder) and isinstance(encoder, UNetEncoder)
    assert encoder is method.encoder  # the online encoder (BYOL's target is discarded)
    path = save_encoder(encoder, tmp_path / f"{name}.pt", extra={"method": name})
    fresh = UNetEncoder(dims, 1, SMALL)
    assert load_encoder(fresh, path) == len(encoder.state_dict())
    for key, value in encoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


@pytest.mark.parametrize("name", registry.names())
def test_encoder_loads_from_a_whole_method_checkpoint(name: str, tmp_path: Path) -> None:
    """A Lightning checkpoint of an engine holding the method as ``model`` keeps the online encoder under
    ``model.encoder.*``, which ``load_encoder`` finds (BYOL's ``model.target_encoder.*`` is not picked)."""
    method = _create(name, 2)
    with torch.no_grad():
        for param in method.encoder.parameters():
            param.add_(1.0)  # online and BYOL target now differ
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in method.state_dict().items()}}, path)
    fresh = UNetEncoder(2, 1, SMALL)
    load_encoder(fresh, path)
    for key, value in method.encoder.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
