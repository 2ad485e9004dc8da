"""The PretrainMethod interface: encoder construction, view checks and the default hooks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from medssl.errors import MedsslError
from medssl.networks import UNetEncoder
from medssl.pretrain import RandomViews, SimCLR
from medssl.pretrain.base import DEFAULT_CHANNELS
from tests.pretrain.conftest import SMALL, identity_views, images


def test_builds_a_default_unet_encoder() -> None:
    method = SimCLR(2, 1)
    assert isinstance(method.encoder, UNetEncoder) and method.encoder.channels == DEFAULT_CHANNELS
    assert isinstance(method.views, RandomViews)
    assert method.export_encoder() is method.encoder


def test_accepts_an_encoder_instance() -> None:
    encoder = UNetEncoder(3, 2, SMALL, norm="group")
    method = SimCLR(encoder=encoder)
    assert method.encoder is encoder and method.spatial_dims == 3 and method.in_channels == 2
    assert SimCLR(3, 2, encoder=encoder).encoder is encoder


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "spatial_dims and in_channels are required"),
        ({"spatial_dims": 2}, "spatial_dims and in_channels are required"),
        ({"encoder": UNetEncoder(2, 1, SMALL), "channels": SMALL}, "not both"),
        ({"encoder": UNetEncoder(2, 1, SMALL), "spatial_dims": 3}, "spatial_dims=3 disagrees"),
        ({"encoder": UNetEncoder(2, 1, SMALL), "in_channels": 2}, "in_channels=2 disagrees"),
        ({"encoder": torch.nn.Linear(2, 2)}, "must be a medssl Encoder"),
    ],
)
def test_rejects_bad_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimCLR(**kwargs)  # type: ignore[arg-type]


def test_views_callable_is_used_with_the_generator() -> None:
    seen: list[torch.Generator | None] = []

    def views(x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        seen.append(generator)
        return identity_views(x, generator)

    method = SimCLR(2, 1, SMALL, views=views)
    generator = torch.Generator().manual_seed(0)
    losses = method.losses(images(2), generator)
    assert seen == [generator] and torch.isfinite(losses["loss"])


def test_bad_batches_and_bad_views_raise() -> None:
    method = SimCLR(2, 1, SMALL)
    with pytest.raises(MedsslError, match="not divisible"):
        method.losses(torch.randn(2, 1, 18, 18))
    with pytest.raises(MedsslError, match="expects input"):
        method.losses(torch.randn(2, 1, 16, 16, 16))
    method.views = lambda x, g: (x, x[:1])
    with pytest.raises(MedsslError, match="two tensors of one shape"):
        method.losses(images(2))


def test_integer_images_are_converted() -> None:
    method = SimCLR(2, 1, SMALL, views=identity_views)
    assert torch.isfinite(method.losses((images(2) * 255).to(torch.uint8))["loss"])


def test_default_after_step_changes_nothing() -> None:
    method = SimCLR(2, 1, SMALL)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.after_step(0, 10)
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, before[key])
