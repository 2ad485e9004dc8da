"""DoDNet's dynamic head and network: generated parameter count, per-sample heads, all tasks in one pass."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F

from medssl.errors import MedsslError
from medssl.networks.dynamic_head import DoDNet, DynamicHead
from medssl.networks.encoders import UNetEncoder


def _net(dims: int, tasks: int = 3, out: int = 2, **kwargs: int | bool) -> DoDNet:
    torch.manual_seed(0)
    return DoDNet(UNetEncoder(dims, 1, (4, 8)), tasks, out_per_task=out, **kwargs).eval()  # type: ignore[arg-type]


def test_default_head_generates_dodnets_162_numbers() -> None:
    head = DynamicHead(16, 32, 7)  # the public code: 7 tasks, 8 -> 8 -> 8 -> 2
    assert head.n_generated == 8 * 8 + 8 * 8 + 8 * 2 + 8 + 8 + 2 == 162
    assert head.controller.out_features == 162 and head.controller.in_features == 32 + 7


@pytest.mark.parametrize(("channels", "n_layers", "out", "want"), [(4, 2, 1, 4 * 4 + 4 + 4 * 1 + 1), (5, 1, 3, 18)])
def test_generated_count_follows_the_sizes(channels: int, n_layers: int, out: int, want: int) -> None:
    head = DynamicHead(16, 32, 2, head_channels=channels, head_layers=n_layers, out_per_task=out)
    assert head.n_generated == want == head.controller.out_features
    assert head(torch.randn(2, 16, 4, 4), torch.eye(2), torch.randn(2, 32)).shape == (2, out, 4, 4)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(MedsslError, match="head_layers must be >= 1"):
        DynamicHead(16, 32, 2, head_layers=0)


def _by_hand(features: Tensor, params: Tensor, channels: int = 8, out: int = 2) -> Tensor:
    """One sample's head from its own numbers, laid out as the public code: every weight matrix, then every bias."""
    sizes = [(channels, channels), (channels, channels), (channels, out)]
    chunks = params.split([i * o for i, o in sizes] + [o for _, o in sizes])
    x = features.flatten(1)  # (C, P)
    for layer, (i, o) in enumerate(sizes):
        x = chunks[layer].reshape(o, i) @ x + chunks[3 + layer][:, None]
        x = F.relu(x) if layer < 2 else x
    return x.reshape(out, *features.shape[1:])


def test_each_sample_gets_its_own_generated_head() -> None:
    head = DynamicHead(16, 32, 3)
    features, params = torch.randn(3, 8, 5, 6), torch.randn(3, head.n_generated)
    got = head.apply_heads(features, params)
    for n in range(3):
        torch.testing.assert_close(got[n], _by_hand(features[n], params[n]))


@pytest.mark.parametrize("dims", [2, 3])
def test_batched_heads_equal_one_sample_at_a_time(dims: int) -> None:
    net = _net(dims)
    x, task = torch.randn(3, 1, *[8] * dims), torch.tensor([2, 0, 1])
    with torch.no_grad():
        batched = net(x, task)
        alone = torch.cat([net(x[n : n + 1], task[n : n + 1]) for n in range(3)])
    assert batched.shape == (3, 2, *[8] * dims)
    torch.testing.assert_close(batched, alone)


@pytest.mark.parametrize("dims", [2, 3])
def test_all_tasks_in_one_pass_equal_one_pass_per_task(dims: int) -> None:
    net = _net(dims)
    x = torch.randn(2, 1, *[8] * dims)
    with torch.no_grad():
        every = net.forward_all(x)
        per_task = torch.cat([net(x, torch.full((2,), t)) for t in range(3)], dim=1)
    assert every.shape == (2, 6, *[8] * dims)
    torch.testing.assert_close(every, per_task)
    assert not torch.allclose(every[:, :2], every[:, 2:4])  # the tasks' heads differ


def test_forward_without_task_gives_every_task_and_an_optional_zero_background() -> None:
    net = _net(2, tasks=2, out=1, background_logit=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 3, 8, 8) and net.out_channels == 3
        assert not out[:, 0].any()
        torch.testing.assert_close(out[:, 1:], net.forward_all(x))


def test_task_indices_are_checked() -> None:
    with pytest.raises(MedsslError, match="one task index in"):
        _net(2)(torch.randn(2, 1, 8, 8), torch.tensor([0, 3]))
