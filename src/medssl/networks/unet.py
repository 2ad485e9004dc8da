"""U-Net built on any encoder that keeps the encoder contract.

CONTRACT (implemented by the networks helper):

``class UNet(nn.Module)``: ``UNet(encoder: Encoder, out_channels: int, deep_supervision=False)``; decoder:
per scale a transposed conv (or upsample + conv) to the next finer scale, concatenation with the skip, two
(conv 3 - norm - act) units; a 1x1 conv head to ``out_channels`` logits at input resolution.
``forward(x: (B, C_in, *spatial)) -> (B, out_channels, *spatial)`` logits.
Attributes: ``encoder``, ``spatial_dims``, ``required_divisor`` (= encoder.required_divisor).

``build_unet(spatial_dims, in_channels, out_channels, channels=(32, 64, 128, 256, 320)) -> UNet`` with a
``UNetEncoder``.

Implementation notes: the decoder (``UNet.decoder``, a ``UNetDecoder``) and the head (``UNet.head``) are separate
submodules, so an encoder can be swapped or frozen on its own. The decoder uses only the encoder contract
(``channels``, ``strides``, ``forward`` finest first); for an encoder whose finest stride is above 1 the head
upsamples its logits (linearly) back to input resolution. With ``deep_supervision=True`` a *training* forward
returns a list of logits, finest first: ``[(B, K, *S), (B, K, *S / strides[1]), ...]`` (one per decoder
scale); in eval mode it returns the full-resolution tensor only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import layers
from medssl.networks.encoders import Encoder, UNetEncoder

__all__ = ["UNet", "UNetDecoder", "UNetHead", "build_unet"]


class UNetDecoder(nn.Module):
    """Decoder that mirrors an encoder pyramid: upsample, concatenate the skip, two ``conv 3 - norm - act`` units.

    Args:
        spatial_dims: 2 or 3.
        channels: encoder widths, finest first (``Encoder.channels``).
        strides: encoder total strides, finest first (``Encoder.strides``); each must divide the next.
        norm: norm name (see ``layers.NORMS``).
        act: activation name (see ``layers.ACTS``).

    Attributes:
        ups: ``ups[s]`` upsamples scale ``s + 1`` to scale ``s`` (transposed conv, ``channels[s+1] -> channels[s]``).
        blocks: ``blocks[s]`` fuses ``cat(up, skip)`` ``(B, 2 * channels[s], ...) -> (B, channels[s], ...)``.
        channels: the encoder widths it was built for. out_channels: ``channels[0]``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: Sequence[int],
        strides: Sequence[int],
        norm: str = "instance",
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for s in range(len(self.channels) - 1):
            fine, coarse = self.channels[s], self.channels[s + 1]
            self.ups.append(layers.conv_transpose(spatial_dims, coarse, fine, strides[s + 1] // strides[s]))
            self.blocks.append(
                nn.Sequential(
                    layers.ConvNormAct(spatial_dims, 2 * fine, fine, 3, 1, norm, act),
                    layers.ConvNormAct(spatial_dims, fine, fine, 3, 1, norm, act),
                )
            )
        self.apply(layers.init_weights)

    @property
    def out_channels(self) -> int:
        """Width of the finest decoder output (``channels[0]``)."""
        return self.channels[0]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Decode encoder features (finest first) into decoder maps, finest first.

        Args:
            features: ``features[s]`` of shape ``(B, channels[s], *S / strides[s])``.

        Returns:
            ``out[s]`` of shape ``(B, channels[s], *S / strides[s])`` for ``s = 0 .. n - 2``; with a single-scale
            encoder, ``[features[0]]``.
        """
        x = features[-1]
        outs: list[Tensor] = []
        for s in range(len(self.ups) - 1, -1, -1):
            x = self.blocks[s](torch.cat((self.ups[s](x), features[s]), dim=1))
            outs.append(x)
        outs.reverse()
        return outs or [x]


class UNetHead(nn.Sequential):
    """1x1 conv to logits, then upsampling by ``scale`` when the finest map is below input resolution.

    ``(B, in_channels, *S / scale) -> (B, out_channels, *S)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 1) -> None:
        super().__init__()
        self.conv = layers.conv(spatial_dims, in_channels, out_channels, kernel_size=1)
        if scale > 1:
            self.up = layers.upsample(spatial_dims, scale)


class UNet(nn.Module):
    """U-Net around any ``Encoder``: ``(B, C_in, *S) -> (B, out_channels, *S)`` logits.

    Args:
        encoder: any ``Encoder`` implementation (only its contract is used).
        out_channels: number of output classes (logit channels).
        deep_supervision: in training mode, also return logits at every coarser decoder scale (see module doc).
        norm: decoder norm; defaults to the encoder's ``norm_name`` if it has one, else ``"instance"``.
        act: decoder activation; defaults to the encoder's ``act_name`` if it has one, else ``"leakyrelu"``.

    Attributes:
        encoder: the encoder. decoder: the ``UNetDecoder``. head: the ``UNetHead`` (1x1 conv to logits).
        aux_heads: 1x1 convs for the coarser decoder scales (empty unless ``deep_supervision``).
        spatial_dims, in_channels, out_channels, deep_supervision: as given / taken from the encoder.
    """

    def __init__(
        self,
        encoder: Encoder,
        out_channels: int,
        deep_supervision: bool = False,
        *,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise MedsslError(f"UNet needs a medssl Encoder, got {type(encoder).__name__}")
        if out_channels < 1:
            raise MedsslError(f"out_channels must be >= 1, got {out_channels}")
        norm = norm if norm is not None else str(getattr(encoder, "norm_name", "instance"))
        act = act if act is not None else str(getattr(encoder, "act_name", "leakyrelu"))
        dims = encoder.spatial_dims
        self.encoder = encoder
        self.spatial_dims: int = dims
        self.in_channels: int = encoder.in_channels
        self.out_channels: int = int(out_channels)
        self.deep_supervision = deep_supervision
        self.decoder = UNetDecoder(dims, encoder.channels, encoder.strides, norm, act)
        self.head = UNetHead(dims, self.decoder.out_channels, out_channels, encoder.strides[0])
        n_aux = len(encoder.channels) - 2 if deep_supervision else 0
        self.aux_heads = nn.ModuleList(
            layers.conv(dims, encoder.channels[s], out_channels, kernel_size=1) for s in range(1, 1 + max(n_aux, 0))
        )

    @property
    def required_divisor(self) -> int:
        """Every spatial input size must be divisible by this (the encoder's deepest stride)."""
        return self.encoder.required_divisor

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """Segment ``x`` ``(B, C_in, *S)``.

        Returns:
            Logits ``(B, out_channels, *S)``; with deep supervision in training mode, a list of logits finest
            first, ``[(B, K, *S)] + [(B, K, *S / strides[s]) for s in 1 .. n - 2]``.
        """
        self.encoder.check_input(x)
        decoded = self.decoder(self.encoder(x))
        logits: Tensor = self.head(decoded[0])
        if not (self.deep_supervision and self.training):
            return logits
        return [logits] + [head(d) for head, d in zip(self.aux_heads, decoded[1:], strict=True)]


def build_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (32, 64, 128, 256, 320),
    *,
    norm: str = "instance",
    act: str = "leakyrelu",
    dropout: float = 0.0,
    deep_supervision: bool = False,
) -> UNet:
    """nnU-Net-style plain U-Net: a ``UNetEncoder`` with strides ``(1, 2, 4, ...)`` plus a mirrored decoder.

    ``(B, in_channels, *S) -> (B, out_channels, *S)``; ``S`` must be divisible by ``2 ** (len(channels) - 1)``.
    """
    encoder = UNetEncoder(spatial_dims, in_channels, channels, norm=norm, act=act, dropout=dropout)
    return UNet(encoder, out_channels, deep_supervision)
