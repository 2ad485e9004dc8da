"""The explicit method registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from medssl.errors import MedsslError
from medssl.pretrain import BYOL, MIM, PGL, VAE, DenoisingAutoencoder, PretrainMethod, SimCLR, registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test register dummies without leaking them into the other tests."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    yield


class _Dummy(PretrainMethod):
    def training_step(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return {"loss": self.encoder.pool(self.encoder(batch)).mean()}


def test_builtin_methods_are_registered() -> None:
    assert registry.names() == ["autoencoder", "byol", "mim", "pcrl", "pgl", "simclr", "vae"]
    expected = {"autoencoder": DenoisingAutoencoder, "byol": BYOL, "pgl": PGL, "simclr": SimCLR, "vae": VAE}
    expected["mim"] = MIM
    for name, cls in expected.items():
        assert registry.get(name) is cls and cls.name == name


def test_create_passes_keyword_arguments() -> None:
    method = registry.create("simclr", spatial_dims=2, in_channels=3, channels=(4, 8), temperature=0.5)
    assert isinstance(method, SimCLR) and method.name == "simclr"
    assert method.encoder.in_channels == 3 and method.encoder.channels == (4, 8)
    assert method.criterion.temperature == 0.5


def test_unknown_name_lists_the_known_ones() -> None:
    known = "autoencoder, byol, mim, pcrl, pgl, simclr, vae"
    with pytest.raises(MedsslError, match=f"unknown pretraining method 'mae'.*{known}"):
        registry.create("mae", spatial_dims=2, in_channels=1)


@pytest.mark.usefixtures("scratch_registry")
def test_register_sets_name_and_refuses_duplicates() -> None:
    registry.register("dummy")(_Dummy)
    assert _Dummy.name == "dummy" and "dummy" in registry.names()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("dummy")(_Dummy)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("simclr")(_Dummy)


@pytest.mark.usefixtures("scratch_registry")
def test_register_refuses_other_objects_and_empty_names() -> None:
    with pytest.raises(TypeError, match="PretrainMethod"):
        registry.register("module")(torch.nn.Linear)  # type: ignore[type-var]
    with pytest.raises(ValueError, match="non-empty"):
        registry.register("")
