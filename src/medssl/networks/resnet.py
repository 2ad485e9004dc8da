"""ResNet encoders in 2D and 3D, with a per-axis output stride (He et al., https://arxiv.org/abs/1512.03385).

PGL (Xie et al., https://arxiv.org/abs/2109.13243) pretrains a 3D ResNet-50 whose deepest map has an output stride
of 8 along depth and 16 along height and width. Strides beyond the wanted output stride are replaced by dilation,
as in DeepLab (https://arxiv.org/abs/1706.05587): the stage keeps its resolution and its 3x3 convolutions see as
far as they would have.

The ``Encoder`` contract has one stride per scale; with a per-axis output stride ``strides[s]`` is the largest
stride of scale ``s`` over the axes (so ``required_divisor`` makes every axis divisible) and ``axis_strides[s]``
gives each axis's: ``features[s]`` has shape ``(B, channels[s], *S / axis_strides[s])``. Only isotropic ResNets
plug into ``medssl.networks.UNet``, whose decoder upsamples every axis alike; ``save_encoder`` / ``load_encoder``
round-trip any ResNet into an encoder built with the same arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import layers
from medssl.networks.encoders import Encoder

__all__ = ["RESNET_PRESETS", "ResNetEncoder", "resnet_encoder"]

BLOCKS = ("basic", "bottleneck")
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet18": {"block": "basic", "depths": (2, 2, 2, 2)},
    "resnet50": {"block": "bottleneck", "depths": (3, 4, 6, 3)},
}
_STRIDES = (1, 2, 4, 8, 16, 32)


def _conv(
    spatial_dims: int, cin: int, cout: int, kernel: int, stride: Sequence[int], dilation: Sequence[int]
) -> nn.Module:
    """A bias-free ``kernel`` convolution from the layer factory with per-axis stride and dilation, "same" padding."""
    conv = layers.conv(spatial_dims, cin, cout, kernel, bias=False)
    # The factory takes one stride for every axis; torch convolutions read stride, padding and dilation when called,
    # so per-axis values set here take effect (the paper's encoder strides depth less than height and width).
    assert isinstance(conv, nn.modules.conv._ConvNd)
    conv.stride = tuple(stride)
    conv.dilation = tuple(dilation)
    conv.padding = tuple(d * (kernel // 2) for d in dilation)
    return conv


class _Block(nn.Module):
    """A residual block ``act(branch(x) + shortcut(x))``; ``basic``: two 3x3 convs, ``bottleneck``: 1x1 - 3x3 - 1x1
    with 4x expansion. ``(B, cin, *S) -> (B, width * expansion, *S / stride)``."""

    def __init__(
        self,
        spatial_dims: int,
        cin: int,
        width: int,
        block: str,
        stride: Sequence[int],
        dilation: Sequence[int],
        norm: str,
        act: str,
    ) -> None:
        super().__init__()
        d, ones = spatial_dims, [1] * spatial_dims
        cout = width * (4 if block == "bottleneck" else 1)
        units: list[nn.Module] = []
        if block == "bottleneck":
            units += [_conv(d, cin, width, 1, ones, ones), layers.norm(norm, d, width), layers.act(act)]
            units += [_conv(d, width, width, 3, stride, dilation), layers.norm(norm, d, width), layers.act(act)]
            units += [_conv(d, width, cout, 1, ones, ones), layers.norm(norm, d, cout)]
        else:
            units += [_conv(d, cin, width, 3, stride, dilation), layers.norm(norm, d, width), layers.act(act)]
            units += [_conv(d, width, cout, 3, ones, dilation), layers.norm(norm, d, cout)]
        self.branch = nn.Sequential(*units)
        needs_projection = cin != cout or any(s != 1 for s in stride)
        self.shortcut = (
            nn.Sequential(_conv(d, cin, cout, 1, stride, ones), layers.norm(norm, d, cout))
            if needs_projection
            else nn.Identity()
        )
        self.act = layers.act(act)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.branch(x) + self.shortcut(x))
        return out


class ResNetEncoder(Encoder):
    """ResNet: a ``conv 7 - norm - act`` stem, a 3x3 max-pool, then residual stages; 2D or 3D.

    Scales (finest first): the stem output, then each stage's output. Without an output-stride limit the stem conv,
    the max-pool and every stage after the first halve each axis (strides 2, 4, 8, 16, 32 for four stages). Once an
    axis reaches ``output_stride`` later steps keep its size and dilate the following 3x3 convolutions instead.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depths: residual blocks per stage (ResNet-50: (3, 4, 6, 3); ResNet-18: (2, 2, 2, 2)).
        widths: base width per stage (bottleneck outputs are 4x wider); ResNet: (64, 128, 256, 512).
        block: ``"bottleneck"`` or ``"basic"``.
        output_stride: total stride of the deepest map, one power of two for every axis or one per axis, each at
            most ``2 ** (len(depths) + 1)``; PGL's 3D setting is (16, 16, 8) (the slice axis, z, strided least).
        stem_width: stem channels (default ``widths[0]``).
        norm: see ``medssl.networks.layers.NORMS`` (ResNet: ``"batch"``).
        act: see ``medssl.networks.layers.ACTS`` (ResNet: ``"relu"``).

    Attributes:
        axis_strides: per scale, the total stride of each axis. block, depths, widths, output_stride: as built.
        norm_name, act_name: the norm and activation (a U-Net decoder reuses them).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        depths: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        block: str = "bottleneck",
        output_stride: int | Sequence[int] = 32,
        stem_width: int | None = None,
        norm: str = "batch",
        act: str = "relu",
    ) -> None:
        dims = layers.check_spatial_dims(spatial_dims)
        depths, widths = tuple(int(n) for n in depths), tuple(int(w) for w in widths)
        if not depths or len(depths) != len(widths) or min(depths) < 1 or min(widths) < 1:
            raise MedsslError(f"need positive depths and widths, one per stage; got {depths} and {widths}")
        if block not in BLOCKS:
            raise MedsslError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        wanted = (output_stride,) * dims if isinstance(output_stride, int) else tuple(output_stride)
        limit = 2 ** (len(depths) + 1)
        if len(wanted) != dims or any(s not in _STRIDES or s > limit for s in wanted):
            raise MedsslError(
                f"output_stride must be a power of two up to {limit}, one for every axis or one per axis; "
                f"got {output_stride}"
            )
        stem = widths[0] if stem_width is None else int(stem_width)
        expansion = 4 if block == "bottleneck" else 1
        # Per-axis stride of each downsampling step: stem conv, max-pool, then stages 2.. (stage 1 never strides);
        # a step halves an axis until that axis reaches its output stride.
        steps: list[list[int]] = []
        scale_strides: list[tuple[int, ...]] = []
        total = [1] * dims
        for _ in range(len(depths) + 1):
            steps.append([2 if t * 2 <= w else 1 for t, w in zip(total, wanted, strict=True)])
            total = [t * s for t, s in zip(total, steps[-1], strict=True)]
            scale_strides.append(tuple(total))  # scale 0: the stem; scale 1: max-pool + stage 1; then one per stage
        channels = (stem, *(w * expansion for w in widths))
        super().__init__(dims, in_channels, channels, tuple(max(s) for s in scale_strides))
        self.axis_strides: tuple[tuple[int, ...], ...] = tuple(scale_strides)
        self.block, self.depths, self.widths, self.output_stride = block, depths, widths, wanted
        self.norm_name, self.act_name = norm, act

        ones, dilation = [1] * dims, [1] * dims
        self.stem = nn.Sequential(
            _conv(dims, self.in_channels, stem, 7, steps[0], ones), layers.norm(norm, dims, stem), layers.act(act)
        )
        pool = layers.pool(dims, "max", 3)
        assert isinstance(pool, nn.modules.pooling._MaxPoolNd)
        pool.stride, pool.padding = tuple(steps[1]), 1  # per-axis stride, "same" padding for the 3x3 window
        self.stem_pool = pool
        self.stages = nn.ModuleList()
        cin = stem
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            stride = ones if index == 0 else steps[index + 1]
            previous = list(dilation)
            if index > 0:  # a stride dropped for the output stride becomes dilation of this and later stages
                dilation = [d * (2 if s == 1 else 1) for d, s in zip(dilation, stride, strict=True)]
            blocks = []
            for j in range(depth):
                first = j == 0  # torchvision's order: the first block keeps the dilation it had before the stage
                unit = _Block(
                    dims, cin, width, block, stride if first else ones, previous if first else dilation, norm, act
                )
                blocks.append(unit)
                cin = unit.out_channels
            self.stages.append(nn.Sequential(*blocks))
        self.apply(layers.init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode ``x`` ``(B, in_channels, *S)`` into ``[(B, channels[s], *S / axis_strides[s]) for s]``."""
        self.check_input(x)
        x = self.stem(x)
        features = [x]
        x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def resnet_encoder(name: str, spatial_dims: int, in_channels: int, **kwargs: Any) -> ResNetEncoder:
    """A ``ResNetEncoder`` preset by name (``RESNET_PRESETS``: ``resnet18``, ``resnet50``); ``kwargs`` override it.

    Example: PGL's encoder is ``resnet_encoder("resnet50", 3, 1, output_stride=(16, 16, 8))``.
    """
    if name not in RESNET_PRESETS:
        raise MedsslError(f"unknown ResNet preset {name!r}; choose one of {', '.join(RESNET_PRESETS)}")
    return ResNetEncoder(spatial_dims, in_channels, **{**RESNET_PRESETS[name], **kwargs})
