"""The super-resolution systems: L1 loss, validation PSNR on the stated [0, 1] range, one normalisation, the
registered names, and the patch stream the run workflow checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl import registry
from medssl.networks.seran import ChannelAttention, SERANBlock
from medssl.superres import SliceSampler
from medssl.superres.system import DATA_RANGE, build, denormalise, intensity_window, normalise
from medssl.superres.workflow import SlicePatches
from tests.superres.conftest import head

SMALL = {"width": 4, "groups": 1, "blocks": 1, "descriptors": 2}


def test_normalisation_maps_the_stated_window_to_0_1_and_back() -> None:
    volume = head((20, 20, 5), np.random.default_rng(0)) + 100.0
    low, high = intensity_window(volume)
    assert low == pytest.approx(np.percentile(volume, 0.5))
    brain = volume[volume > volume.min() + 0.05 * (volume.max() - volume.min())]
    assert high == pytest.approx(np.percentile(brain, 99.5))
    scaled = normalise(volume)
    assert scaled.min() == 0.0 and scaled.max() == 1.0 and scaled.dtype == np.float32
    inside = (volume > low) & (volume < high)
    np.testing.assert_allclose(denormalise(scaled, (low, high))[inside], volume[inside], rtol=1e-5)


def test_loss_is_l1_and_validation_psnr_is_on_the_clipped_0_1_range() -> None:
    system = build("seran", 2, SMALL)
    torch.manual_seed(1)
    lr = torch.rand(2, 1, 6, 6)
    hr = torch.rand(2, 1, 12, 12)
    out = system.network(lr)
    loss = system.training_step({"image": lr, "high_res": hr}, 0)["loss"]  # type: ignore[typeddict-unknown-key]
    torch.testing.assert_close(loss, (out - hr).abs().mean())
    with torch.no_grad():
        system.network.tail.bias.fill_(5.0)  # an output far above the range: clipped to 1 before the metric
        for b in range(2):
            sr = system.network(lr[b : b + 1]).clamp(0, 1)
            mse = float(((sr - hr[b : b + 1]) ** 2).mean())
            batch = {"image": lr[b : b + 1], "high_res": hr[b : b + 1]}
            psnr = system.validation_step(batch)["psnr"]  # type: ignore[arg-type]
            assert float(psnr) == pytest.approx(10 * np.log10(DATA_RANGE**2 / mse), rel=1e-5)
    assert DATA_RANGE == 1.0


@pytest.mark.parametrize(("name", "attention"), [("seran", SERANBlock), ("rcan", ChannelAttention), ("edsr", None)])
def test_each_registered_name_builds_its_attention(name: str, attention: type | None) -> None:
    assert name in registry.names("super-resolution")
    network = build(name, 3, SMALL).network
    kinds = {type(m) for m in network.modules()}
    for other in (SERANBlock, ChannelAttention):
        assert (other in kinds) == (other is attention)


def test_the_patch_stream_depends_on_its_generator_only() -> None:
    rng = np.random.default_rng(0)
    sampler = SliceSampler([head((16, 16, 4), rng), head((16, 16, 4), rng)], 2, patch_size=8, axis=2)
    patches = SlicePatches(sampler, samples=4, seed=3)
    first = [patches[0]["high_res"] for _ in range(3)]
    state = patches.rng.bit_generator.state
    later = [patches[0]["high_res"] for _ in range(3)]
    patches.reseed(99)
    patches.rng.bit_generator.state = state  # what a resumed run restores
    again = [patches[0]["high_res"] for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(later, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, later, strict=True))
    item = patches[1]
    assert item["image"].shape == (1, 4, 4) and item["high_res"].shape == (1, 8, 8)
