import torch
from torch import nn

from medssl.data.plan import Plan
from medssl.segment.inference import activate, predict_logits


def _plan(**kw):
    base = dict(
        spatial_dims=2,
        data_dims=2,
        in_channels=1,
        task="labelmap",
        class_values=[0, 1],
        class_names=["background", "a"],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=[8, 8],
        channels=[4],
        batch_size=2,
    )
    base.update(kw)
    return Plan(**base)


class Pointwise(nn.Module):
    """A 1x1 'network': tiling must not change its output."""

    def __init__(self, dims):
        super().__init__()
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, 2, 1)

    def forward(self, x):
        return self.conv(x)


def test_sliding_window_equals_whole_image_for_pointwise_net():
    net = Pointwise(2)
    img = torch.randn(1, 21, 13)
    out = predict_logits(net, img, _plan(), overlap=0.5)
    torch.testing.assert_close(out, net(img[None])[0], atol=1e-5, rtol=1e-5)


def test_2d_network_on_volume_goes_slice_by_slice():
    net = Pointwise(2)
    vol = torch.randn(1, 10, 9, 5)
    plan = _plan(data_dims=3, slice_axis=2)
    out = predict_logits(net, vol, plan, sw_batch_size=2)
    assert out.shape == (2, 10, 9, 5)
    torch.testing.assert_close(out[..., 3], net(vol[None, ..., 3])[0], atol=1e-5, rtol=1e-5)


def test_activate():
    logits = torch.randn(3, 4, 4)
    torch.testing.assert_close(activate(logits, _plan()).sum(0), torch.ones(4, 4))
    assert ((activate(logits, _plan(task="multilabel")) > 0) & (activate(logits, _plan(task="multilabel")) < 1)).all()
