"""The baselines of DoDNet: static task heads, one sigmoid U-Net, one U-Net per task."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from medssl.errors import MedsslError
from medssl.networks.encoders import UNetEncoder
from medssl.networks.task_outputs import MultiHeadUNet, SeparateUNets, SigmoidUNet, TaskHeads


def _encoder(dims: int = 2) -> UNetEncoder:
    return UNetEncoder(dims, 1, (4, 8))


def test_task_heads_run_each_task_with_its_own_weights() -> None:
    torch.manual_seed(0)
    heads = TaskHeads(6, 3, head_channels=4, head_layers=2, out_per_task=2)
    features = torch.randn(2, 6, 5, 7)
    out = heads(features)
    assert out.shape == (2, 6, 5, 7)
    reduced = heads.reduce(features.flatten(2))
    for t in range(3):  # task t by hand: its slice of every grouped layer's weights
        x = reduced
        for i, conv in enumerate(heads.convs):
            o = conv.out_channels // 3
            x = F.conv1d(x, conv.weight[t * o : (t + 1) * o], conv.bias[t * o : (t + 1) * o])  # type: ignore[index]
            x = F.relu(x) if i < len(heads.convs) - 1 else x
        torch.testing.assert_close(out[:, 2 * t : 2 * t + 2], x.reshape(2, 2, 5, 7))


def test_a_task_head_changes_only_its_own_outputs() -> None:
    torch.manual_seed(0)
    heads = TaskHeads(6, 3, head_channels=4, head_layers=3)
    features = torch.randn(2, 6, 3, 4, 5)  # 3D through the same code
    before = heads(features)
    with torch.no_grad():
        heads.convs[-1].bias[1] += 1.0  # type: ignore[index]
        heads.convs[0].weight[4:8] *= 2.0  # task 1's first layer
    after = heads(features)
    assert torch.equal(before[:, [0, 2]], after[:, [0, 2]])
    assert not torch.allclose(before[:, 1], after[:, 1])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("background", [False, True])
def test_shared_networks_give_every_task(dims: int, background: bool) -> None:
    x = torch.randn(2, 1, *[8] * dims)
    for network in (
        MultiHeadUNet(_encoder(dims), 3, head_channels=4, background_logit=background),
        SigmoidUNet(_encoder(dims), 3, background_logit=background),
    ):
        out = network(x)
        assert network.out_channels == 3 + background
        assert out.shape == (2, 3 + background, *[8] * dims)
        assert torch.equal(out[:, int(background) :], network.forward_all(x))
        if background:
            assert not out[:, 0].any()


def test_separate_networks_are_independent_and_in_task_order() -> None:
    torch.manual_seed(0)
    network = SeparateUNets([_encoder(), _encoder(), _encoder()], out_per_task=2)
    x = torch.randn(2, 1, 8, 8)
    out = network.forward_all(x)
    assert out.shape == (2, 6, 8, 8)
    for t, net in enumerate(network.networks):
        torch.testing.assert_close(out[:, 2 * t : 2 * t + 2], net.forward_all(x))  # type: ignore[operator]
    # a loss on task 1's outputs only trains network 1
    out[:, 2:4].sum().backward()
    grads = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in n.parameters()) for n in network.networks]
    assert grads == [False, True, False]


def test_separate_networks_refuse_mismatched_encoders() -> None:
    with pytest.raises(MedsslError, match="share spatial_dims"):
        SeparateUNets([_encoder(2), _encoder(3)])
    with pytest.raises(MedsslError, match="one medssl Encoder per task"):
        SeparateUNets([])
