"""S3-Net's network: stem, I-LKA blocks, a deformable convolution, one response channel per cluster.

Karimijafarbigloo et al., "Self-supervised Semantic Segmentation: Consistency over Transformation", ICCV
Workshops 2023, https://arxiv.org/abs/2309.00143. LKA: Guo et al., "Visual Attention Network", 2022,
https://arxiv.org/abs/2202.09741.

The network maps an image to a response map whose per-pixel argmax is the cluster label; the number of
response channels bounds the number of clusters (the per-image optimisation merges them, see
``medssl.labelfree.s3``). Its encoder blocks use Inception Large Kernel Attention (I-LKA): an attention map from
a local depthwise convolution followed by several dilated depthwise convolutions in parallel (the "inception" of
large receptive fields at the cost of depthwise layers), mixed by a 1x1 convolution and multiplied with the
input. The improved variant of the source document adds a learnable affine transform (``LocalisationNet``): the
features are warped into a frame predicted from the image, encoded there, and warped back, so the output stays
aligned with the input. S3-Net is a 2D method, so these blocks are 2D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.networks.deformable import DeformableConv2d
from medssl.networks.layers import act, adaptive_avg_pool, conv, norm, pool

__all__ = ["DEFAULT_BRANCHES", "ILKABlock", "InceptionLKA", "LocalisationNet", "S3Net", "invert_affine", "warp"]

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
        self.local = conv(2, channels, channels, local_kernel, groups=channels)
        self.branches = nn.ModuleList(conv(2, channels, channels, k, dilation=d, groups=channels) for k, d in branches)
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


class LocalisationNet(nn.Module):
    """Predicts a 2x3 affine matrix from an image (a spatial transformer's localisation network).

    Two convolutions, each followed by 2x2 max pooling and ReLU, an adaptive average pool, then
    Linear-ReLU-Linear to the 6 parameters. The matrix is the identity plus ``max_change * tanh`` of them, and
    the last layer starts at zero, so the transform starts as the identity and stays a bounded change: an
    unbounded matrix, updated with S3-Net's large learning rate, can zoom the features out of the image in one
    step (every pixel then gets the same cluster).

    Shape: ``(B, C, H, W) -> (B, 2, 3)``; ``H, W >= 12``.

    Args:
        in_channels: image channels ``C``.
        hidden: channels of the two convolutions.
        max_change: largest change of each matrix entry from the identity.
    """

    def __init__(self, in_channels: int, hidden: int = 8, max_change: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv(2, in_channels, hidden, 7),
            pool(2, "max", 2),
            act("relu"),
            conv(2, hidden, hidden, 5),
            pool(2, "max", 2),
            act("relu"),
            adaptive_avg_pool(2, 3),
        )
        self.head = nn.Sequential(nn.Linear(hidden * 9, 32), act("relu"), nn.Linear(32, 6))
        last = self.head[2]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.max_change = max_change
        self.identity: Tensor
        self.register_buffer("identity", torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Affine matrices for ``F.affine_grid``, shape ``(B, 2, 3)``."""
        change = self.max_change * torch.tanh(self.head(self.features(x).flatten(1)).view(-1, 2, 3))
        return self.identity + change


def invert_affine(theta: Tensor) -> Tensor:
    """Inverse of ``(B, 2, 3)`` affine matrices (as maps of homogeneous 2D points)."""
    linear = torch.linalg.inv(theta[:, :, :2])
    return torch.cat([linear, -linear @ theta[:, :, 2:]], dim=2)


def warp(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x (B, C, H, W)`` at ``affine_grid(theta)`` (bilinear, zeros outside)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class S3Net(nn.Module):
    """Stem (3x3 conv + BN + ReLU), ``blocks`` I-LKA blocks, a deformable 3x3 convolution and a final BN.

    Shape: ``(B, in_channels, H, W) -> (B, channels, H, W)``: one response channel per potential cluster; with
    ``stride > 1``, ``H`` and ``W`` should be multiples of the stride.

    Args:
        in_channels: image (feature) channels.
        channels: feature width, which is also the maximum number of clusters.
        blocks: number of I-LKA blocks ``N``.
        learnable_affine: warp the features into a frame predicted by a ``LocalisationNet`` around the blocks
            (the source document's improved variant).
        stride: stride of the stem; the blocks run at ``1 / stride`` of the input size and the response is
            upsampled bilinearly to the input size (1: the paper's full resolution).
    """

    def __init__(
        self, in_channels: int, channels: int = 64, blocks: int = 2, learnable_affine: bool = False, stride: int = 1
    ) -> None:
        super().__init__()
        if in_channels < 1 or channels < 2:
            raise ValueError(f"need in_channels >= 1 and channels >= 2, got {in_channels} and {channels}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        self.stem = nn.Sequential(
            conv(2, in_channels, channels, 3, stride=stride), norm("batch", 2, channels), act("relu")
        )
        self.localisation = LocalisationNet(in_channels) if learnable_affine else None
        self.blocks = nn.Sequential(*(ILKABlock(channels) for _ in range(blocks)))
        self.deform = DeformableConv2d(channels, channels, 3)
        self.out_norm = norm("batch", 2, channels)

    def forward(self, x: Tensor) -> Tensor:
        """Response map ``(B, channels, H, W)``; ``argmax`` over channels gives the clusters."""
        features = self.stem(x)
        if self.localisation is not None:
            theta = self.localisation(x)
            features = warp(self.blocks(warp(features, theta)), invert_affine(theta))
        else:
            features = self.blocks(features)
        response = self.out_norm(self.deform(features))
        if response.shape[-2:] != x.shape[-2:]:
            response = F.interpolate(response, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return response
