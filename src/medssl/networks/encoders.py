"""The encoder contract that every network and pretraining method shares.

CONTRACT (implemented by the networks helper; other modules rely on exactly this):

``class Encoder(nn.Module)`` (abstract): attributes ``spatial_dims: int``, ``in_channels: int``,
``channels: tuple[int, ...]`` (width of each scale, finest first), ``strides: tuple[int, ...]`` (total
downsampling of each scale relative to the input, e.g. (1, 2, 4, 8, 16)).
``forward(x: (B, in_channels, *spatial)) -> list[Tensor]``: one feature map per scale, finest first,
``features[s]`` of shape ``(B, channels[s], *spatial / strides[s])``.
``pool(features) -> Tensor (B, channels[-1])``: global average of the deepest map (the pooled feature).
``out_channels`` property: ``channels[-1]``.
Spatial input sizes must be divisible by ``strides[-1]`` (``required_divisor`` property returns it).

``class UNetEncoder(Encoder)``: ``UNetEncoder(spatial_dims, in_channels, channels=(32, 64, 128, 256, 320),
norm="instance", act="leakyrelu", dropout=0.0)``: per scale two (conv 3 - norm - act) units; scales after the
first start with a stride-2 conv (nnU-Net's plain encoder). Works at batch size 1 and 2.

Implementation notes: subclasses call ``Encoder.__init__(spatial_dims, in_channels, channels, strides)``, which
validates and stores the attributes; each stride must divide the next so a decoder can invert the pyramid.
``check_input(x)`` raises ``MedsslError`` for a wrong rank, channel count or indivisible spatial size. With
instance norm, a training forward needs at least 2 voxels in the deepest map, i.e. spatial sizes of at least
``2 * strides[-1]`` (or deepest maps of 1 voxel only when the norm is ``"none"`` or ``"group"``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import layers

__all__ = ["Encoder", "UNetEncoder"]


class Encoder(nn.Module, abc.ABC):
    """Abstract multi-scale encoder: ``(B, in_channels, *S) -> [(B, channels[s], *S / strides[s]) for s]``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        channels: width of each scale, finest first.
        strides: total downsampling of each scale relative to the input; positive, each dividing the next.

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        channels: width of each scale, finest first.
        strides: total downsampling factor of each scale, finest first.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        self.spatial_dims: int = layers.check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise MedsslError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels: int = int(in_channels)
        self.channels: tuple[int, ...] = tuple(int(c) for c in channels)
        self.strides: tuple[int, ...] = tuple(int(s) for s in strides)
        if not self.channels or len(self.channels) != len(self.strides):
            raise MedsslError(f"need one stride per scale; got channels={self.channels}, strides={self.strides}")
        if min(self.channels) < 1 or min(self.strides) < 1:
            raise MedsslError(f"channels and strides must be positive; got {self.channels}, {self.strides}")
        if any(b % a for a, b in zip(self.strides, self.strides[1:], strict=False)):
            raise MedsslError(f"each stride must divide the next, got strides={self.strides}")

    @property
    def out_channels(self) -> int:
        """Width of the deepest scale (``channels[-1]``), i.e. the size of the pooled feature."""
        return self.channels[-1]

    @property
    def required_divisor(self) -> int:
        """Every spatial input size must be divisible by this (``strides[-1]``)."""
        return self.strides[-1]

    @abc.abstractmethod
    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode ``x`` of shape ``(B, in_channels, *S)`` into one map per scale, finest first.

        Returns:
            ``features[s]`` of shape ``(B, channels[s], *S / strides[s])``.
        """

    def pool(self, features: Sequence[Tensor]) -> Tensor:
        """Global average of the deepest map: ``features[-1] (B, channels[-1], *S') -> (B, channels[-1])``."""
        return layers.global_avg_pool(features[-1])

    def check_input(self, x: Tensor) -> None:
        """Raise ``MedsslError`` unless ``x`` is ``(B, in_channels, *S)`` with every size divisible by the stride."""
        spatial = tuple(x.shape[2:])
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise MedsslError(
                f"{type(self).__name__} expects input (B, {self.in_channels}, <{self.spatial_dims} spatial sizes>), "
                f"got {tuple(x.shape)}"
            )
        if any(size % self.required_divisor for size in spatial):
            raise MedsslError(
                f"spatial size {spatial} is not divisible by {self.required_divisor} (the encoder's total stride); "
                "pad or crop the input / patch size to a multiple of it"
            )


class UNetEncoder(Encoder):
    """nnU-Net's plain convolutional encoder: per scale two ``conv 3 - norm - act`` units.

    Scale 0 keeps the input resolution; every later scale starts with a stride-2 conv, so
    ``strides = (1, 2, 4, ..., 2 ** (len(channels) - 1))``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        channels: width of each scale, finest first; any number of scales >= 1.
        norm: ``"instance"`` (affine), ``"batch"``, ``"group"`` or ``"none"``.
        act: ``"leakyrelu"`` (0.01), ``"relu"``, ``"gelu"``, ``"elu"`` or ``"none"``.
        dropout: channel dropout probability inside each unit (0 disables it).

    Attributes:
        stages: ``nn.ModuleList`` with one ``nn.Sequential`` of two ``ConvNormAct`` per scale.
        norm_name: the norm used (a decoder built on this encoder reuses it).
        act_name: the activation used.
        dropout_p: the dropout probability.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        norm: str = "instance",
        act: str = "leakyrelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, tuple(2**s for s in range(len(channels))))
        self.norm_name = norm
        self.act_name = act
        self.dropout_p = dropout
        self.stages = nn.ModuleList()
        prev = self.in_channels
        for scale, width in enumerate(self.channels):
            self.stages.append(
                nn.Sequential(
                    layers.ConvNormAct(spatial_dims, prev, width, 3, 1 if scale == 0 else 2, norm, act, dropout),
                    layers.ConvNormAct(spatial_dims, width, width, 3, 1, norm, act, dropout),
                )
            )
            prev = width
        self.apply(layers.init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode ``x`` ``(B, in_channels, *S)`` into ``[(B, channels[s], *S / 2**s) for s]``, finest first."""
        self.check_input(x)
        features: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
