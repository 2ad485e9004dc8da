"""Reconstruction decoder for generative pretraining (VAE, denoising autoencoder).

It upsamples one deep map back to the input size WITHOUT skip connections: with skips the network could copy
the input through the shallow scales and the encoder's deep features would learn nothing. It is light (one
``conv 3 - norm - act`` unit per scale) because it is discarded after pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medssl.networks import layers
from medssl.networks.encoders import Encoder
from medssl.networks.unet import UNetHead

__all__ = ["ReconstructionDecoder"]


class ReconstructionDecoder(nn.Module):
    """Decode a map at the encoder's deepest scale into an image: ``(B, in_channels, *S / strides[-1]) ->
    (B, out_channels, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the map to decode (the encoder's ``out_channels``, or a VAE's latent channels).
        channels: the encoder's widths, finest first; the decoder walks them back from the deepest.
        strides: the encoder's total strides, finest first.
        out_channels: channels of the reconstruction (the image channels).
        norm: norm name (see ``medssl.networks.layers.NORMS``).
        act: activation name (see ``medssl.networks.layers.ACTS``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
        out_channels: int,
        norm: str = "instance",
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        channels, strides = tuple(channels), tuple(strides)
        units: list[nn.Module] = [layers.ConvNormAct(spatial_dims, in_channels, channels[-1], 3, 1, norm, act)]
        for s in range(len(channels) - 1, 0, -1):
            fine, scale = channels[s - 1], strides[s] // strides[s - 1]
            units.append(layers.conv_transpose(spatial_dims, channels[s], fine, scale))
            units.append(layers.ConvNormAct(spatial_dims, fine, fine, 3, 1, norm, act))
        self.body = nn.Sequential(*units)
        # 1x1 conv to intensities (no activation: images are not bounded), upsampled if the finest stride is > 1.
        self.head = UNetHead(spatial_dims, channels[0], out_channels, strides[0])
        self.apply(layers.init_weights)

    @classmethod
    def for_encoder(cls, encoder: Encoder, in_channels: int | None = None) -> ReconstructionDecoder:
        """The decoder that mirrors ``encoder`` (widths, strides, and its norm and activation if it names them),
        reconstructing ``encoder.in_channels`` channels from ``in_channels`` (default ``encoder.out_channels``)."""
        return cls(
            encoder.spatial_dims,
            encoder.out_channels if in_channels is None else in_channels,
            encoder.channels,
            encoder.strides,
            encoder.in_channels,
            str(getattr(encoder, "norm_name", "instance")),
            str(getattr(encoder, "act_name", "leakyrelu")),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, *S / strides[-1]) -> (B, out_channels, *S)``."""
        out: Tensor = self.head(self.body(x))
        return out
