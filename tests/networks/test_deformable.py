from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.networks.deformable import DeformableConv2d, deform_conv2d


@pytest.mark.parametrize("dilation", [1, 2])
def test_zero_offsets_and_unit_modulation_equal_a_plain_convolution(dilation: int) -> None:
    x, weight, bias = torch.randn(2, 3, 7, 9), torch.randn(4, 3, 3, 3), torch.randn(4)
    out = deform_conv2d(x, torch.zeros(2, 18, 7, 9), torch.ones(2, 9, 7, 9), weight, bias, dilation)
    expected = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation)
    assert torch.allclose(out, expected, atol=1e-5)


def test_a_whole_pixel_offset_reads_the_neighbouring_pixel() -> None:
    x, weight = torch.randn(1, 2, 6, 8), torch.randn(3, 2, 3, 3)
    offset = torch.zeros(1, 18, 6, 8)
    offset[:, 1::2] = 1.0  # every tap one pixel to the right
    out = deform_conv2d(x, offset, torch.ones(1, 9, 6, 8), weight)
    # Same as a plain convolution of the zero-padded image, read one column to the right.
    expected = F.conv2d(F.pad(x, (2, 2, 1, 1)), weight)[..., 2:10]
    assert torch.allclose(out, expected, atol=1e-5)


def test_modulation_scales_each_tap() -> None:
    x, weight = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    half = deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.full((1, 9, 5, 5), 0.5), weight)
    assert torch.allclose(half, 0.5 * F.conv2d(x, weight, padding=1), atol=1e-5)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 8, 8), (3, 5, 11), (2, 16, 12)])
def test_module_works_for_any_batch_and_size_and_starts_as_a_plain_conv(batch: int, height: int, width: int) -> None:
    layer = DeformableConv2d(4, 6)
    x = torch.randn(batch, 4, height, width)
    out = layer(x)
    assert out.shape == (batch, 6, height, width)
    assert torch.allclose(out, F.conv2d(x, layer.weight, layer.bias, padding=1), atol=1e-5)


def test_offsets_and_modulation_are_learned_from_the_input() -> None:
    layer = DeformableConv2d(3, 2)
    x = torch.randn(2, 3, 10, 10)
    layer(x).square().mean().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert layer.offset.weight.grad is not None and layer.offset.weight.grad.abs().sum() > 0
    assert layer.modulation.weight.grad is not None and layer.modulation.weight.grad.abs().sum() > 0


def test_bad_arguments_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        DeformableConv2d(2, 2, kernel_size=2)
    with pytest.raises(ValueError, match="offset"):
        deform_conv2d(
            torch.randn(1, 2, 4, 4), torch.zeros(1, 18, 3, 4), torch.ones(1, 9, 4, 4), torch.randn(1, 2, 3, 3)
        )
