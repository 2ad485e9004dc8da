from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.networks.s3_blocks import ILKABlock, InceptionLKA, LocalisationNet, S3Net, invert_affine, warp


def _batch_normalised(x: torch.Tensor) -> torch.Tensor:
    """``x (B, C, H, W)`` standardised per channel over the batch and pixels (batch norm in training, eps 1e-5)."""
    mean = x.mean((0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)


def test_inception_lka_is_attention_times_input() -> None:
    layer = InceptionLKA(4)
    x = torch.randn(2, 4, 12, 12)
    attention = layer.mix(torch.cat([branch(layer.local(x)) for branch in layer.branches], dim=1))
    assert torch.allclose(layer(x), attention * x)
    assert layer(torch.zeros(1, 4, 9, 7)).abs().max() == 0


def test_ilka_block_keeps_shape() -> None:
    assert ILKABlock(6)(torch.randn(2, 6, 10, 14)).shape == (2, 6, 10, 14)


def test_ilka_block_is_relu_of_the_normalised_sum_of_input_and_projected_attention() -> None:
    block = ILKABlock(6)
    x = torch.randn(2, 6, 10, 14) * 3 + 1
    with torch.no_grad():  # an identity projection: the block is ReLU(BN(x + I-LKA(x)))
        block.project.weight.copy_(torch.eye(6)[:, :, None, None])
        block.project.bias.zero_()
    torch.testing.assert_close(block(x), torch.relu(_batch_normalised(x + block.attention(x))))
    with torch.no_grad():  # no projection: only the skip connection is left
        block.project.weight.zero_()
    torch.testing.assert_close(block(x), torch.relu(_batch_normalised(x)))


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


def test_s3net_response_is_batch_normalised_per_cluster_channel() -> None:
    out = S3Net(3, channels=5, blocks=1)(torch.randn(2, 3, 16, 16) * 4 + 2)
    flat = out.transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_s3net_with_a_stride_runs_at_lower_resolution_and_upsamples_bilinearly() -> None:
    net = S3Net(3, channels=4, blocks=1, stride=2)
    seen: dict[str, torch.Tensor] = {}
    net.blocks.register_forward_hook(lambda _m, _i, out: seen.__setitem__("blocks", out))
    net.out_norm.register_forward_hook(lambda _m, _i, out: seen.__setitem__("coarse", out))
    out = net(torch.randn(2, 3, 16, 16))
    assert seen["blocks"].shape[-2:] == (8, 8)
    expected = F.interpolate(seen["coarse"], size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


def test_the_learnable_affine_starts_as_the_identity() -> None:
    plain = S3Net(3, channels=4, blocks=1)
    warped = S3Net(3, channels=4, blocks=1, learnable_affine=True)
    keys = warped.load_state_dict(plain.state_dict(), strict=False)
    assert not keys.unexpected_keys and all(k.startswith("localisation.") for k in keys.missing_keys)
    x = torch.randn(2, 3, 16, 16)
    # The fresh localisation network predicts the identity, and warping by it and back changes nothing.
    torch.testing.assert_close(warped(x), plain(x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        warped.localisation.head[2].bias.fill_(1.0)  # a transform other than the identity is applied
    assert (warped(x) - plain(x)).abs().max() > 0.1


def test_features_are_warped_back_into_the_input_frame() -> None:
    net = S3Net(3, channels=4, blocks=0, learnable_affine=True)  # no blocks: warp there and back only
    assert net.localisation is not None
    with torch.no_grad():  # the predicted transform: a shift of one pixel (0.125 of [-1, 1] over 16 pixels)
        net.localisation.head[2].bias.copy_(torch.atanh(torch.tensor([0, 0, 0.125 / 0.2, 0, 0, 0])))
    seen: dict[str, torch.Tensor] = {}
    net.stem.register_forward_hook(lambda _m, _i, out: seen.__setitem__("stem", out))
    net.deform.register_forward_pre_hook(lambda _m, args: seen.__setitem__("back", args[0]))
    net(torch.randn(2, 3, 16, 16))
    # The features come back where they were; only the column shifted out of the frame and back is lost.
    torch.testing.assert_close(seen["back"][..., 1:], seen["stem"][..., 1:], atol=1e-4, rtol=1e-4)
    assert seen["back"][..., 0].abs().max() < 1e-4 < seen["stem"][..., 0].abs().max()


def test_warp_shifts_and_rotates_and_invert_affine_undoes_it() -> None:
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    # affine_grid's matrix maps output to input coordinates, [-1, 1] across the image: +0.5 is two pixels of 8.
    shifted = warp(x, torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]]))
    torch.testing.assert_close(shifted[..., :6], x[..., 2:])
    assert (shifted[..., 6:] == 0).all()  # zeros come in from outside
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    turned = warp(x, quarter)
    torch.testing.assert_close(turned, torch.rot90(x, k=1, dims=(2, 3)))
    torch.testing.assert_close(warp(turned, invert_affine(quarter)), x)


def test_localisation_changes_stay_bounded() -> None:
    net = LocalisationNet(3, max_change=0.2)
    with torch.no_grad():
        net.head[2].weight.normal_(0.0, 10.0)
        net.head[2].bias.normal_(0.0, 10.0)
    change = net(torch.randn(4, 3, 16, 16)) - torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert 0.15 < change.abs().max() <= 0.2 + 1e-6  # saturated, yet within the bound


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
