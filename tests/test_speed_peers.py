"""The pure parts of ``benchmarks/speed_peers.py``: MONAI's ``DynUNet`` matched in size to medssl's U-Net, the FLOP
count of one step against the hand formula, and the speed targets."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def speed_peers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports ``_common`` as a top-level module
    return importlib.import_module("speed_peers")


@pytest.mark.parametrize(
    ("dims", "channels", "classes"),
    [(2, [16, 32, 64, 128, 256, 320], 5), (3, [16, 32, 64, 128], 3)],  # the JSRT and hippocampus plans
)
def test_dynunet_matches_the_unet_within_tolerance(
    speed_peers: ModuleType, dims: int, channels: list[int], classes: int
) -> None:
    match = speed_peers.parameter_match(dims, 1, classes, channels)
    assert match["relative_difference"] <= 0.05
    assert match["relative_difference"] < 1e-3  # the layout is the same; only the bias of a few convs differ
    speed_peers.check_parameters(match)


@pytest.mark.parametrize("dims", [2, 3])
def test_matched_dynunet_maps_shapes_like_the_unet(speed_peers: ModuleType, dims: int) -> None:
    from medssl.networks.unet import build_unet

    x = torch.randn(2, 1, *([16] * dims))
    ours = build_unet(dims, 1, 3, channels=(4, 8, 16))
    theirs = speed_peers.peer.matched_dynunet(dims, 1, 3, [4, 8, 16])
    assert theirs(x).shape == ours(x).shape == (2, 3, *([16] * dims))


def test_check_parameters_refuses_a_mismatch(speed_peers: ModuleType) -> None:
    match = {"medssl": 1000, "monai_dynunet": 1051, "relative_difference": 0.051}
    with pytest.raises(AssertionError, match="differ"):
        speed_peers.check_parameters(match)
    speed_peers.check_parameters({**match, "monai_dynunet": 1049, "relative_difference": 0.049})


@pytest.mark.parametrize("dims", [2, 3])
def test_step_flops_of_a_conv_match_the_hand_formula(speed_peers: ModuleType, dims: int) -> None:
    b, c_in, c_out, k, s = 2, 3, 4, 3, 6
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(c_in, c_out, k, padding=1, bias=False)
    x = torch.randn(b, c_in, *([s] * dims))  # no gradient of the input: backward computes the weight's only
    forward = 2 * b * c_out * s**dims * c_in * k**dims  # 2 FLOPs per multiply-add, one per output and tap
    assert speed_peers.step_flops(conv, x) == 2 * forward
    assert speed_peers.step_flops(conv, x.requires_grad_()) == 3 * forward  # and the input's gradient


def test_targets_compare_medssl_with_the_peer(speed_peers: ModuleType) -> None:
    got = speed_peers.targets({"medssl": 0.8, "monai": 1.0}, {"medssl": 3.0, "monai": 2.0})
    assert got["target_ratio"] == 0.9
    assert got["train_step_ratio"] == pytest.approx(0.8)
    assert got["train_step_target_met"] is True
    assert got["predict_ratio"] == pytest.approx(1.5)
    assert got["predict_target_met"] is False
    edge = speed_peers.targets({"medssl": 0.9, "monai": 1.0}, {"medssl": 0.91, "monai": 1.0})
    assert edge["train_step_target_met"] is True  # at most 0.9x the peer's time
    assert edge["predict_target_met"] is False
