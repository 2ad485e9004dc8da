"""MRNet's networks: the expertise-conditioned U-Net, the learnable blur, the perception module, the chain."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import MedsslError
from medssl.networks.encoders import UNetEncoder
from medssl.networks.mrnet import ConvLSTMCell, ExpertiseUNet, GaussianBlur, MRNet, PerceptionModule


def _unet(dims: int = 2, extra: int = 0, out: int = 1, raters: int = 2) -> ExpertiseUNet:
    return ExpertiseUNet(UNetEncoder(dims, 1 + extra, (4, 8)), out, raters)


def test_conv_lstm_step_is_the_lstm_equations() -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, 4)
    x, h, c = torch.randn(1, 3, 5, 5), torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    i, f, o, g = cell.gates(torch.cat((x, h), 1)).chunk(4, 1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_out, c_out = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_new)
    torch.testing.assert_close(h_out, torch.sigmoid(o) * torch.tanh(c_new))


@pytest.mark.parametrize("dims", [2, 3])
def test_the_expertise_vector_conditions_the_output(dims: int) -> None:
    torch.manual_seed(0)
    net = _unet(dims)
    x = torch.randn(2, 1, *[8] * dims)
    a, features = net(x, torch.tensor([1.0, 0.0]))
    b, _ = net(x, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert a.shape == (2, 1, *[8] * dims) and features.shape == (2, 4, *[8] * dims)
    assert not torch.allclose(a, b)
    with pytest.raises(MedsslError, match="sum to 1"):
        net(x, torch.tensor([0.7, 0.7]))
    with pytest.raises(MedsslError, match="needs 2 weights"):
        net(x, torch.tensor([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("dims", [2, 3])
def test_the_blur_starts_as_a_normalised_gaussian_and_learns(dims: int) -> None:
    blur = GaussianBlur(dims, size=7, sigma=1.5)
    delta = torch.zeros(1, 1, *[9] * dims)
    delta[(0, 0, *[4] * dims)] = 1.0
    out = blur(delta)
    centre = out[(0, 0, *[slice(1, 8)] * dims)]
    torch.testing.assert_close(centre, blur.kernel[0, 0].detach())
    assert blur.kernel.sum().item() == pytest.approx(1.0) and blur.kernel.requires_grad
    r = torch.arange(7.0) - 3
    line = torch.exp(-(r**2) / (2 * 1.5**2))
    profile = blur.kernel[(0, 0, *[3] * (dims - 1))].detach()  # a line through the centre, along the last axis
    torch.testing.assert_close(profile / profile.max(), line / line.max())


def test_perception_attends_to_the_prediction_and_the_raters_disagreement() -> None:
    torch.manual_seed(0)
    module = PerceptionModule(2, 4, 2, width=3, blur_size=5)
    recon, coarse = torch.randn(1, 3, 2, 6, 6), torch.randn(1, 2, 6, 6)
    maps = module.attention_maps(recon, coarse)
    spread = torch.sigmoid(recon).std(dim=1)
    assert len(maps) == 4
    torch.testing.assert_close(maps[0], torch.sigmoid(coarse[:, :1]))
    torch.testing.assert_close(maps[1], spread[:, :1])
    torch.testing.assert_close(maps[3], spread[:, 1:2])
    agree = module.attention_maps(recon[:, :1].expand(-1, 3, -1, -1, -1), coarse)
    assert agree[1].abs().max() == 0  # raters that agree: no disagreement
    assert module(recon, torch.randn(1, 4, 6, 6), coarse).shape == (1, 2, 6, 6)
    features = torch.rand(1, 3, 6, 6)
    attention = torch.zeros(1, 1, 6, 6)
    attention[0, 0, 2, 2] = 1.0
    attended = module.attend(attention, features)
    soft = module.blur(attention)
    soft = (soft - soft.min()) / (soft.max() - soft.min() + 1e-8)
    torch.testing.assert_close(attended, features * torch.maximum(soft, attention) + features)


@pytest.mark.parametrize("refine", [True, False])
def test_mrnet_predicts_with_the_stored_expertise(refine: bool) -> None:
    torch.manual_seed(0)
    recon = _unet(extra=1, out=2) if refine else None
    perception = PerceptionModule(2, 4, 1, width=3, blur_size=5) if refine else None
    net = MRNet(_unet(), recon, perception, num_raters=2, structures=1, background_logit=True)
    x = torch.randn(1, 1, 8, 8)
    out = net(x)
    assert out.shape == (1, 2, 8, 8) and not out[:, 0].any()
    torch.testing.assert_close(out, net(x, torch.tensor([0.5, 0.5])))
    net.set_expertise([1.0, 0.0])
    torch.testing.assert_close(net(x), net(x, torch.tensor([1.0, 0.0])))
    assert not torch.allclose(net(x), out)
    assert net.state_dict()["expertise"].tolist() == [1.0, 0.0]
    with pytest.raises(MedsslError, match="sum to 1"):
        net.set_expertise([0.2, 0.2])
