"""Modulated deformable convolution (DCNv2) in plain PyTorch, sampled with ``grid_sample``.

Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019, https://arxiv.org/abs/1811.11168.

The offsets and the modulation are predicted from the layer's input by a convolution, so the layer works for
any batch size and image size. (S3-Net's public code stores them as free parameters of one fixed
``batch x H x W`` shape; this module does not.) No compiled extension (torchvision) is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.networks.layers import conv


def deform_conv2d(
    x: Tensor, offset: Tensor, modulation: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1
) -> Tensor:
    """Modulated deformable convolution, stride 1, "same" zero padding.

    Tap ``k = i * kw + j`` of output pixel ``(h, w)`` reads the input at
    ``(h + (i - kh // 2) * dilation + offset[:, 2k], w + (j - kw // 2) * dilation + offset[:, 2k + 1])`` with
    bilinear interpolation (zero outside the image) and multiplies it by ``modulation[:, k]``; zero offsets and
    unit modulation give ``F.conv2d(x, weight, bias, padding=dilation * (k // 2), dilation=dilation)``.

    Args:
        x: input, shape ``(B, C, H, W)``.
        offset: ``(dy, dx)`` per tap in pixels, shape ``(B, 2 * kh * kw, H, W)``.
        modulation: weight per tap, shape ``(B, kh * kw, H, W)``.
        weight: convolution kernel, shape ``(O, C, kh, kw)`` with odd ``kh``, ``kw``.
        bias: shape ``(O,)`` or None.
        dilation: spacing of the taps.

    Returns:
        Output of shape ``(B, O, H, W)``.
    """
    b, c, h, w = x.shape
    out_ch, in_ch, kh, kw = weight.shape
    taps = kh * kw
    if in_ch != c:
        raise ValueError(f"weight expects {in_ch} input channels, x has {c}")
    if offset.shape != (b, 2 * taps, h, w) or modulation.shape != (b, taps, h, w):
        raise ValueError(
            f"offset must be {(b, 2 * taps, h, w)} and modulation {(b, taps, h, w)}, got "
            f"{tuple(offset.shape)} and {tuple(modulation.shape)}"
        )
    dtype, device = x.dtype, x.device
    ky, kx = torch.meshgrid(
        (torch.arange(kh, device=device, dtype=dtype) - kh // 2) * dilation,
        (torch.arange(kw, device=device, dtype=dtype) - kw // 2) * dilation,
        indexing="ij",
    )
    rows = torch.arange(h, device=device, dtype=dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=device, dtype=dtype).view(1, 1, 1, w)
    off = offset.view(b, taps, 2, h, w)
    y = rows + ky.reshape(1, taps, 1, 1) + off[:, :, 0]  # (B, taps, H, W)
    xs = cols + kx.reshape(1, taps, 1, 1) + off[:, :, 1]
    # align_corners=True: -1 and +1 are the centres of the first and last pixels.
    grid = torch.stack((2 * xs / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1), dim=-1)
    sampled = F.grid_sample(
        x, grid.view(b, taps * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    ).view(b, c, taps, h, w)
    sampled = sampled * modulation.unsqueeze(1)
    out = torch.einsum("ok,bkp->bop", weight.reshape(out_ch, c * taps), sampled.reshape(b, c * taps, h * w))
    out = out.view(b, out_ch, h, w)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class DeformableConv2d(nn.Module):
    """Deformable convolution whose offsets and modulation come from a convolution of its input.

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` for any ``B``, ``H``, ``W``. The offset and
    modulation convolutions start at zero, so the layer starts as a plain convolution (modulation
    ``2 * sigmoid(0) = 1``) and learns to deform.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size.
        dilation: spacing of the taps.
        bias: whether the main convolution has a bias.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        taps = kernel_size * kernel_size
        self.dilation = dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.offset = conv(2, in_channels, 2 * taps, kernel_size, dilation=dilation)
        self.modulation = conv(2, in_channels, taps, kernel_size, dilation=dilation)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default initialisation
        for layer in (self.offset, self.modulation):
            assert isinstance(layer, nn.Conv2d)
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Deform, modulate and convolve ``x (B, C, H, W)``."""
        modulation = 2.0 * torch.sigmoid(self.modulation(x))
        return deform_conv2d(x, self.offset(x), modulation, self.weight, self.bias, self.dilation)
