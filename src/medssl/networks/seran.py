"""SERAN: squeeze and excitation reasoning attention network for MR super-resolution (Zhang et al., CVPR 2021).

No public code exists; this follows the paper's description, and where it is silent the choices are stated here.

``SERANBlock`` (tensors ``(B, C, *S)``, positions ``N = prod(S)``; every product is per sample, so no image of a
batch sees another's descriptors, and there is no batch norm anywhere):

1. squeeze, second-order (bilinear) pooling as in A^2-Net: ``K`` spatial attention maps, a softmax over the ``N``
   positions of a 1x1 convolution, weight the features (another 1x1 convolution) into ``K`` global descriptors,
   ``G = F A^T`` of shape ``(B, C, K)``;
2. primitive relation reasoning, a graph convolution over the ``K`` descriptors as in GloRe: a 1D convolution
   across the nodes (``K -> K``, one per channel) added to ``G`` (residual), then a 1D convolution across the
   channels (``C -> C``, one per node) and a ReLU;
3. excitation: each position gets a softmax over the ``K`` descriptors (a 1x1 convolution) and takes their
   mixture; a 1x1 convolution maps it back and it is added to the input with a learned scale ``gamma``
   initialised at 0, so that a new block starts as the identity (the paper's "residual scaling").

Chosen where the paper is silent: the inner width of the block equals the trunk's width; the block sits after
the second convolution of each residual block (where RCAN puts its channel attention).

``SERANet`` is the residual SR trunk (EDSR/RCAN style): a head convolution, ``groups`` residual groups of
``blocks`` residual blocks (conv, ReLU, conv, attention, short skip; a convolution closes each group, with its own
skip), a convolution and the long skip, then sub-pixel upsampling (a convolution to ``s^d`` times the channels and
a pixel shuffle; x4 as two x2 steps) and a tail convolution. ``attention`` picks the block's attention:
``"seran"``, ``"none"`` (the plain EDSR-like residual CNN of the same depth and width) or ``"rcan"`` (RCAN's
channel attention, reduction 16), so that the attention's contribution is measured. 2D is the paper's setting;
``spatial_dims=3`` works too (the same layers in 3D and a 3D pixel shuffle) at a much higher cost per voxel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks.layers import check_spatial_dims, conv

__all__ = ["ATTENTIONS", "PAPER", "SCALES", "ChannelAttention", "SERANBlock", "SERANet", "pixel_shuffle"]

ATTENTIONS: tuple[str, ...] = ("seran", "none", "rcan")
SCALES: tuple[int, ...] = (2, 3, 4)

# The paper's trunk is RCAN's size (10 residual groups of 20 blocks, 64 channels); the number of descriptors K is
# not stated in what is available to us: 32 is an assumption. Use as ``SERANet(scale, **PAPER)``.
PAPER: dict[str, Any] = {"width": 64, "groups": 10, "blocks": 20, "descriptors": 32}


def pixel_shuffle(x: Tensor, factor: int) -> Tensor:
    """Sub-pixel rearrangement ``(B, C * r^d, *S) -> (B, C, *(S * r))`` for ``d`` = 2 or 3 spatial axes.

    For ``d = 2`` it equals ``torch.nn.functional.pixel_shuffle`` (which has no 3D version).

    Args:
        x: ``(B, C * factor^d, *S)``.
        factor: the upsampling factor ``r``.

    Returns:
        ``(B, C, *(S * factor))``.
    """
    b, c, *size = x.shape
    d = len(size)
    out = c // factor**d
    x = x.reshape(b, out, *([factor] * d), *size)
    # (B, C, r_1..r_d, S_1..S_d) -> (B, C, S_1, r_1, ..., S_d, r_d): each offset goes next to its axis
    x = x.permute(0, 1, *[p for i in range(d) for p in (2 + d + i, 2 + i)])
    return x.reshape(b, out, *[n * factor for n in size])


class SERANBlock(nn.Module):
    """Squeeze (bilinear pooling into ``K`` descriptors), reasoning (graph conv), excitation (see the module doc).

    ``(B, C, *S) -> (B, C, *S)``; ``x + gamma * excitation(x)`` with ``gamma`` learned, starting at 0.
    """

    def __init__(self, channels: int, descriptors: int = 8, spatial_dims: int = 2) -> None:
        """Build the 1x1 convolutions and the graph convolution.

        Args:
            channels: ``C``, in and out.
            descriptors: ``K``, the number of global descriptors (graph nodes).
            spatial_dims: 2 or 3.

        Raises:
            MedsslError: ``descriptors`` or ``channels`` below 1, or ``spatial_dims`` not 2 or 3.
        """
        super().__init__()
        if channels < 1 or descriptors < 1:
            raise MedsslError(f"channels and descriptors must be >= 1, got {channels}, {descriptors}")
        d = check_spatial_dims(spatial_dims)
        self.features = conv(d, channels, channels, kernel_size=1)
        self.maps = conv(d, channels, descriptors, kernel_size=1)  # K spatial attention maps (squeeze)
        self.select = conv(d, channels, descriptors, kernel_size=1)  # per-position weights over K (excitation)
        self.node_conv = nn.Conv1d(descriptors, descriptors, kernel_size=1)  # relations between descriptors
        self.channel_conv = nn.Conv1d(channels, channels, kernel_size=1)  # state update of each descriptor
        self.out = conv(d, channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def descriptors(self, x: Tensor) -> Tensor:
        """Squeeze and reasoning: ``(B, C, *S) -> (B, C, K)``, the refined global descriptors."""
        feats = self.features(x).flatten(2)  # (B, C, N)
        maps = torch.softmax(self.maps(x).flatten(2), dim=-1)  # (B, K, N), each map sums to 1 over positions
        g = torch.bmm(feats, maps.transpose(1, 2))  # (B, C, K): second-order pooling, per sample
        h = self.node_conv(g.transpose(1, 2)).transpose(1, 2) + g  # graph conv across nodes, residual
        return torch.relu(self.channel_conv(h))

    def forward(self, x: Tensor) -> Tensor:
        """``x + gamma * out(descriptors mixed per position)``, shape of ``x``."""
        g = self.descriptors(x)
        weights = torch.softmax(self.select(x).flatten(2), dim=1)  # (B, K, N), sums to 1 over K
        mixed = torch.bmm(g, weights).reshape(x.shape)  # (B, C, *S)
        return x + self.gamma * self.out(mixed)


class ChannelAttention(nn.Module):
    """RCAN's channel attention: global average, a bottleneck of two 1x1 convolutions, a sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int = 16, spatial_dims: int = 2) -> None:
        """Args: channels: ``C``; reduction: bottleneck ratio (at least one channel); spatial_dims: 2 or 3."""
        super().__init__()
        d = check_spatial_dims(spatial_dims)
        inner = max(1, channels // reduction)
        self.gate = nn.Sequential(
            conv(d, channels, inner, kernel_size=1), nn.ReLU(), conv(d, inner, channels, kernel_size=1), nn.Sigmoid()
        )
        self.spatial_dims = d

    def forward(self, x: Tensor) -> Tensor:
        """``x * gate(mean over positions)``, shape of ``x``."""
        pooled = x.mean(dim=tuple(range(2, 2 + self.spatial_dims)), keepdim=True)
        return x * self.gate(pooled)


def _attention(kind: str, channels: int, descriptors: int, reduction: int, spatial_dims: int) -> nn.Module:
    """The attention module named ``kind`` (one of ``ATTENTIONS``)."""
    if kind == "seran":
        return SERANBlock(channels, descriptors, spatial_dims)
    if kind == "rcan":
        return ChannelAttention(channels, reduction, spatial_dims)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """conv, ReLU, conv, attention; ``x + res_scale * body(x)``."""

    def __init__(self, channels: int, attention: nn.Module, spatial_dims: int, res_scale: float) -> None:
        """Args: channels: width; attention: the module after the second conv; spatial_dims; res_scale."""
        super().__init__()
        d = spatial_dims
        self.body = nn.Sequential(conv(d, channels, channels), nn.ReLU(), conv(d, channels, channels), attention)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        """Shape of ``x``."""
        return x + self.res_scale * self.body(x)


class SERANet(nn.Module):
    """The residual SR trunk with SERAN (or no, or RCAN) attention: ``(B, C, *S) -> (B, C, *(S * scale))``.

    Defaults are small, for the CPU (width 32, 2 groups of 4 blocks, K = 8); ``PAPER`` holds the paper's sizes.
    """

    def __init__(
        self,
        scale: int,
        *,
        in_channels: int = 1,
        width: int = 32,
        groups: int = 2,
        blocks: int = 4,
        descriptors: int = 8,
        attention: str = "seran",
        reduction: int = 16,
        res_scale: float = 1.0,
        spatial_dims: int = 2,
        input_skip: bool = False,
    ) -> None:
        """Build the network.

        Args:
            scale: 2, 3 or 4.
            in_channels: image channels, in and out (1 for MR magnitude).
            width: feature channels of the trunk.
            groups: residual groups.
            blocks: residual blocks per group.
            descriptors: ``K`` of each SERAN block.
            attention: ``"seran"``, ``"none"`` or ``"rcan"``.
            reduction: RCAN channel attention's bottleneck ratio.
            res_scale: scale of each residual block's branch (EDSR uses 0.1 for very wide trunks).
            spatial_dims: 2 (the paper) or 3.
            input_skip: add the upsampled input to the output (not in EDSR/RCAN/SERAN: off by
                default; the network then learns only the residual to bicubic (2D) or trilinear (3D) upsampling).

        Raises:
            MedsslError: an unsupported scale, attention, size or ``spatial_dims``.
        """
        super().__init__()
        d = check_spatial_dims(spatial_dims)
        if scale not in SCALES:
            raise MedsslError(f"scale must be one of {SCALES}, got {scale!r}")
        if attention not in ATTENTIONS:
            raise MedsslError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        if min(in_channels, width, groups, blocks) < 1:
            raise MedsslError("in_channels, width, groups and blocks must all be >= 1")
        self.scale, self.spatial_dims, self.input_skip = scale, d, input_skip
        self.head = conv(d, in_channels, width)
        self.body = nn.ModuleList(
            nn.Sequential(
                *[
                    ResidualBlock(width, _attention(attention, width, descriptors, reduction, d), d, res_scale)
                    for _ in range(blocks)
                ],
                conv(d, width, width),
            )
            for _ in range(groups)
        )
        self.body_end = conv(d, width, width)
        steps = [2, 2] if scale == 4 else [scale]
        self.upsample = nn.ModuleList(conv(d, width, width * s**d) for s in steps)
        self.steps = steps
        self.tail = conv(d, width, in_channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *(S * scale))``."""
        head = self.head(x)
        h = head
        for group in self.body:
            h = h + group(h)  # short skip
        h = head + self.body_end(h)  # long skip
        for up, s in zip(self.upsample, self.steps, strict=True):
            h = pixel_shuffle(up(h), s)
        out = self.tail(h)
        if self.input_skip:
            mode = "bicubic" if self.spatial_dims == 2 else "trilinear"
            out = out + F.interpolate(x, scale_factor=float(self.scale), mode=mode, align_corners=False)
        return out
