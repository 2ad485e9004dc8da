from __future__ import annotations

import pytest
import torch

from medssl.labelfree.ilka import ILKABlock, InceptionLKA
from medssl.labelfree.s3net import LocalisationNet, S3Net, invert_affine


def test_inception_lka_is_attention_times_input() -> None:
    layer = InceptionLKA(4)
    x = torch.randn(2, 4, 12, 12)
    attention = layer.mix(torch.cat([branch(layer.local(x)) for branch in layer.branches], dim=1))
    assert torch.allclose(layer(x), attention * x)
    assert layer(torch.zeros(1, 4, 9, 7)).abs().max() == 0


def test_ilka_block_keeps_shape() -> None:
    assert ILKABlock(6)(torch.randn(2, 6, 10, 14)).shape == (2, 6, 10, 14)


@pytest.mark.parametrize(("learnable_affine", "stride"), [(False, 1), (True, 1), (False, 2)])
def test_s3net_shape_gradients_and_no_nan(learnable_affine: bool, stride: int) -> None:
    net = S3Net(3, channels=6, blocks=2, learnable_affine=learnable_affine, stride=stride)
    x = torch.randn(2, 3, 16, 16)
    out = net(x)
    assert out.shape == (2, 6, 16, 16)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_localisation_net_starts_at_the_identity_and_inverts() -> None:
    theta = LocalisationNet(3)(torch.randn(2, 3, 16, 16))
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))
    rotate = torch.tensor([[[0.0, -2.0, 0.3], [2.0, 0.0, -0.1]]])
    back = invert_affine(rotate)
    point = torch.tensor([0.2, -0.5, 1.0])
    moved = rotate[0] @ point
    assert torch.allclose(back[0] @ torch.cat([moved, torch.ones(1)]), point[:2], atol=1e-6)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="channels"):
        S3Net(3, channels=1)
    with pytest.raises(ValueError, match="blocks"):
        S3Net(3, blocks=-1)
