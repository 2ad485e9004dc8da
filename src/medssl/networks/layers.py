"""Dimension-agnostic layer factories: the single place that maps ``spatial_dims`` (2 or 3) to a layer class.

Everything else in ``medssl.networks`` builds its layers through these functions, so no other module branches on
the number of spatial dimensions. Tensors are ``(B, C, *spatial)`` with ``len(spatial) == spatial_dims``.
The tables below hold plain ``torch.nn`` classes (the same ones MONAI's layer factories return) so that importing
the networks does not pay for importing MONAI (several seconds on a small CPU).

Names accepted for ``norm``: ``"instance"`` (affine, nnU-Net default), ``"batch"``, ``"group"``, ``"none"``.
Names accepted for ``act``: ``"leakyrelu"`` (slope 0.01, nnU-Net default), ``"relu"``, ``"gelu"``, ``"elu"``,
``"none"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError

__all__ = [
    "ACTS",
    "NORMS",
    "POOLS",
    "SPATIAL_DIMS",
    "ConvNormAct",
    "act",
    "adaptive_avg_pool",
    "check_spatial_dims",
    "conv",
    "conv_transpose",
    "dropout",
    "global_avg_pool",
    "init_weights",
    "norm",
    "pool",
    "upsample",
]

SPATIAL_DIMS = (2, 3)
NORMS = ("instance", "batch", "group", "none")
ACTS = ("leakyrelu", "relu", "gelu", "elu", "none")
POOLS = ("max", "avg")


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and state dict) that runs single-sample CPU float32 inference in oneDNN.

    PyTorch's CPU dispatch sends a batch of one with 3x3x3 kernels and small feature maps (a U-Net's deep
    levels on one sliding window) to its native kernel instead of oneDNN; on this project's CPUs that makes a
    one-window 3D forward about 1.5 times slower than oneDNN (``docs/benchmarks.md``, issue 24). Training
    (gradients), autocast, other dtypes and devices, tracing and export keep the standard path.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (
            input.shape[0] == 1
            and input.device.type == "cpu"
            and input.dtype == weight.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()
        ):
            return torch.mkldnn_convolution(
                input.contiguous(), weight.contiguous(), bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super()._conv_forward(input, weight, bias)


# The only dimension -> layer mapping in medssl.networks.
_CONV: dict[int, type[nn.Conv2d | nn.Conv3d]] = {2: nn.Conv2d, 3: Conv3d}
_CONV_T: dict[int, type[nn.ConvTranspose2d | nn.ConvTranspose3d]] = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM: dict[int, type[nn.InstanceNorm2d | nn.InstanceNorm3d]] = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM: dict[int, type[nn.BatchNorm2d | nn.BatchNorm3d]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT: dict[int, type[nn.Dropout2d | nn.Dropout3d]] = {2: nn.Dropout2d, 3: nn.Dropout3d}
_POOL: dict[str, dict[int, type[nn.Module]]] = {
    "max": {2: nn.MaxPool2d, 3: nn.MaxPool3d},
    "avg": {2: nn.AvgPool2d, 3: nn.AvgPool3d},
}
_ADAPTIVE_AVG_POOL: dict[int, type[nn.AdaptiveAvgPool2d | nn.AdaptiveAvgPool3d]] = {
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
# Linear interpolation mode per dimensionality (F.interpolate has no dimension-generic "linear" mode).
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}
# Upper bound on the number of groups for group norm; the actual count divides the channel count.
_MAX_GROUPS = 8


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise ``MedsslError``."""
    if spatial_dims not in SPATIAL_DIMS:
        raise MedsslError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = True,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Module:
    """Convolution with "same" padding for odd kernels: ``(B, in, *S) -> (B, out, *S / stride)``.

    ``dilation`` spaces the taps (the padding grows with it); ``groups == in_channels`` makes it depthwise.
    """
    cls = _CONV[check_spatial_dims(spatial_dims)]
    padding = dilation * (kernel_size // 2)
    return cls(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias,
    )


def conv_transpose(spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2) -> nn.Module:
    """Transposed convolution with kernel = stride = ``scale``: ``(B, in, *S) -> (B, out, *S * scale)``."""
    return _CONV_T[check_spatial_dims(spatial_dims)](in_channels, out_channels, scale, stride=scale, bias=True)


def norm(name: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer over ``channels``; shape-preserving ``(B, C, *S) -> (B, C, *S)``.

    Instance and group norm do not depend on the batch, so they work at batch size 1 during training.
    """
    check_spatial_dims(spatial_dims)
    if name == "instance":
        module: nn.Module = _INSTANCE_NORM[spatial_dims](channels, affine=True)
    elif name == "batch":
        module = _BATCH_NORM[spatial_dims](channels)
    elif name == "group":
        module = nn.GroupNorm(math.gcd(channels, _MAX_GROUPS), channels)
    elif name == "none":
        module = nn.Identity()
    else:
        raise MedsslError(f"unknown norm {name!r}; choose one of {', '.join(NORMS)}")
    return module


def act(name: str) -> nn.Module:
    """Element-wise activation.

    Not in place: the instance norm output it would overwrite is a reshaped view, and an in-place op on it makes
    autograd copy whole feature maps in the backward pass (measured ~20% slower per training step on CPU).
    """
    if name == "leakyrelu":
        module: nn.Module = nn.LeakyReLU(negative_slope=0.01)
    elif name == "relu":
        module = nn.ReLU()
    elif name == "gelu":
        module = nn.GELU()
    elif name == "elu":
        module = nn.ELU()
    elif name == "none":
        module = nn.Identity()
    else:
        raise MedsslError(f"unknown activation {name!r}; choose one of {', '.join(ACTS)}")
    return module


def dropout(spatial_dims: int, p: float) -> nn.Module:
    """Channel-wise (spatial) dropout with probability ``p``; ``nn.Identity`` when ``p == 0``."""
    if not 0.0 <= p < 1.0:
        raise MedsslError(f"dropout must be in [0, 1), got {p}")
    if p == 0.0:
        return nn.Identity()
    return _DROPOUT[check_spatial_dims(spatial_dims)](p)


def pool(spatial_dims: int, kind: str = "max", kernel_size: int = 2) -> nn.Module:
    """Max or average pooling with stride = kernel: ``(B, C, *S) -> (B, C, *S / kernel_size)``."""
    if kind not in _POOL:
        raise MedsslError(f"unknown pooling {kind!r}; choose one of {', '.join(POOLS)}")
    return _POOL[kind][check_spatial_dims(spatial_dims)](kernel_size)


def adaptive_avg_pool(spatial_dims: int, size: int) -> nn.Module:
    """Average pooling to a fixed grid: ``(B, C, *S) -> (B, C, *[size] * spatial_dims)`` for any ``S``."""
    return _ADAPTIVE_AVG_POOL[check_spatial_dims(spatial_dims)](size)


def global_avg_pool(x: Tensor) -> Tensor:
    """Average over all spatial axes: ``(B, C, *S) -> (B, C)``; identical for 2D and 3D."""
    return x.flatten(2).mean(dim=2)


def upsample(spatial_dims: int, scale: int) -> nn.Module:
    """(Bi/tri)linear upsampling by an integer factor: ``(B, C, *S) -> (B, C, *S * scale)``."""
    mode = _LINEAR_MODE[check_spatial_dims(spatial_dims)]
    return nn.Upsample(scale_factor=float(scale), mode=mode, align_corners=False)


class ConvNormAct(nn.Sequential):
    """One ``conv k - [dropout] - norm - act`` unit (nnU-Net's order): ``(B, in, *S) -> (B, out, *S / stride)``.

    The conv has no bias when a norm follows, since the norm's shift makes it redundant (and gradient-free).

    Attributes:
        conv: the convolution. dropout: dropout or identity. norm: the normalisation. act: the activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm_name: str = "instance",
        act_name: str = "leakyrelu",
        dropout_p: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv = conv(spatial_dims, in_channels, out_channels, kernel_size, stride, bias=norm_name == "none")
        self.dropout = dropout(spatial_dims, dropout_p)
        self.norm = norm(norm_name, spatial_dims, out_channels)
        self.act = act(act_name)


def init_weights(module: nn.Module, neg_slope: float = 0.01) -> None:
    """He (Kaiming) normal weights and zero bias if ``module`` is a (transposed) conv; nnU-Net's init.

    Use as ``network.apply(init_weights)`` to initialise every conv of a network.
    """
    if isinstance(module, (*_CONV.values(), *_CONV_T.values())):
        weight = module.weight
        assert isinstance(weight, Tensor)
        nn.init.kaiming_normal_(weight, a=neg_slope)
        bias = module.bias
        if isinstance(bias, Tensor):
            nn.init.zeros_(bias)
