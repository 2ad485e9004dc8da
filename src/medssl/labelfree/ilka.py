"""Inception Large Kernel Attention (I-LKA) and the S3-Net encoder block built on it.

Karimijafarbigloo et al., "Self-supervised Semantic Segmentation: Consistency over Transformation", ICCV
Workshops 2023, https://arxiv.org/abs/2309.00143. LKA: Guo et al., "Visual Attention Network", 2022,
https://arxiv.org/abs/2202.09741.

I-LKA builds an attention map from a local depthwise convolution followed by several dilated depthwise
convolutions in parallel (the "inception" of large receptive fields at the cost of depthwise layers), mixes them
with a 1x1 convolution and multiplies the input by it. S3-Net is a 2D method, so these blocks are 2D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medssl.networks.layers import act, conv, norm

# (kernel, dilation) of the parallel depthwise branches: 3, 5 and 7 at dilations 1, 2 and 3 (public code).
DEFAULT_BRANCHES: tuple[tuple[int, int], ...] = ((3, 1), (5, 2), (7, 3))


class InceptionLKA(nn.Module):
    """``Attention = Conv1x1(concat_r DW-D-Conv_r(DW-Conv(x)))``, ``output = Attention * x``.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: feature channels ``C``.
        local_kernel: kernel of the first (local) depthwise convolution.
        branches: ``(kernel, dilation)`` of each parallel dilated depthwise convolution.
    """

    def __init__(
        self, channels: int, local_kernel: int = 5, branches: Sequence[tuple[int, int]] = DEFAULT_BRANCHES
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        if not branches:
            raise ValueError("branches must name at least one (kernel, dilation) pair")
        self.local = nn.Conv2d(channels, channels, local_kernel, padding=local_kernel // 2, groups=channels)
        self.branches = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=d * (k // 2), dilation=d, groups=channels) for k, d in branches
        )
        self.mix = conv(2, channels * len(self.branches), channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Attention-weighted ``x`` of shape ``(B, C, H, W)``."""
        local = self.local(x)
        attention = self.mix(torch.cat([branch(local) for branch in self.branches], dim=1))
        return attention * x


class ILKABlock(nn.Module):
    """One encoder block: ``ReLU(BN(x + Conv1x1(I-LKA(x))))``; the skip keeps pixel-level detail.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        channels: feature channels ``C``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = InceptionLKA(channels)
        self.project = conv(2, channels, channels, kernel_size=1)
        self.norm = norm("batch", 2, channels)
        self.act = act("relu")

    def forward(self, x: Tensor) -> Tensor:
        """Encoded features of shape ``(B, C, H, W)``."""
        return self.act(self.norm(x + self.project(self.attention(x))))
