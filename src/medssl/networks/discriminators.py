"""Discriminators for adversarial segmentation (``medssl.segment.adversarial``), 2D and 3D, and what they see.

- ``LucDiscriminator`` (Luc et al. 2016, arXiv 1611.08408): a small CNN that scores an (image, class maps) pair
  with one logit per image, real (ground truth) against predicted; its input is built by ``luc_input``: "basic"
  (the class maps), "product" (every image channel times every class map) or "scaling" (the class maps; the real
  ones are ``scaled_truth`` instead of one-hot).
- ``SegANCritic`` (Xue et al. 2018, arXiv 1706.01805): strided convolutions over image x class maps that return the
  input and the features of every layer; ``multiscale_l1`` is the mean absolute difference of all of them,
  concatenated, between (image x predicted) and (image x true).
- ``FCDiscriminator`` (Hung et al. 2018, arXiv 1802.07934): a fully convolutional network from class maps to one
  confidence logit per pixel, at the input's size.

Class maps are ``(B, K, *S)``: softmax probabilities (or one-hot truth) for a label map, per-structure sigmoid
probabilities (or binary truth) for overlapping structures (``multilabel``); every discriminator takes all K maps
as channels, so overlapping structures are K independent binary maps (no background map).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks.layers import conv, global_avg_pool, upsample

__all__ = [
    "LUC_INPUTS",
    "FCDiscriminator",
    "LucDiscriminator",
    "SegANCritic",
    "class_maps",
    "luc_input",
    "multiscale_l1",
    "product_input",
    "scaled_truth",
    "target_maps",
]

LUC_INPUTS = ("basic", "product", "scaling")
_SLOPE = 0.2  # LeakyReLU slope of all three papers' discriminators


def class_maps(logits: Tensor, *, multilabel: bool) -> Tensor:
    """Probabilities ``(B, K, *S)`` of segmentation logits: softmax over classes, or sigmoid per structure."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def target_maps(target: Tensor, num_classes: int, *, multilabel: bool) -> Tensor:
    """The true class maps ``(B, K, *S)`` (float): one-hot of a ``(B, 1, *S)`` label map, or the ``(B, K, *S)``
    binary structures as they are."""
    if multilabel:
        return target.float()
    return nn.functional.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1).float()


def product_input(image: Tensor, maps: Tensor) -> Tensor:
    """Every image channel times every class map: ``(B, C, *S)``, ``(B, K, *S)`` -> ``(B, C * K, *S)``, channel
    ``c * K + k`` = ``image[:, c] * maps[:, k]`` (Luc's "product", SegAN's masked image)."""
    return (image.unsqueeze(2) * maps.unsqueeze(1)).flatten(1, 2)


def scaled_truth(probs: Tensor, truth: Tensor, tau: float = 0.9, *, multilabel: bool) -> Tensor:
    """Luc et al.'s "scaling" real input: the one-hot truth replaced by the distribution closest (in KL) to the
    prediction that still puts at least ``tau`` on the true class.

    At each pixel with true class ``l`` and predicted probabilities ``s``: ``y_l = max(tau, s_l)`` and
    ``y_c = s_c * (1 - y_l) / (1 - s_l)`` for every other class ``c`` (so ``y`` sums to one, and equals ``s`` where
    ``s_l >= tau``). Overlapping structures are each a two-class (present, absent) distribution: ``max(tau, s)``
    where the structure is present, ``min(1 - tau, s)`` where it is absent. The paper uses ``tau = 0.9``.

    Args:
        probs: predicted class maps ``(B, K, *S)`` (``class_maps``).
        truth: true class maps ``(B, K, *S)`` (``target_maps``), 0/1.
        tau: the least mass on the true class, in ``(0, 1)``.
        multilabel: overlapping binary structures.
    """
    if not 0.0 < tau < 1.0:
        raise MedsslError(f"tau must be in (0, 1), got {tau}")
    present = truth > 0.5
    if multilabel:
        return torch.where(present, probs.clamp(min=tau), probs.clamp(max=1 - tau))
    s_true = (probs * truth).sum(1, keepdim=True)  # s_l at each pixel
    y_true = s_true.clamp(min=tau)
    # where s_l >= tau the ratio is 1 (y = s); elsewhere 1 - s_l > 1 - tau > 0, so no division by zero
    ratio = torch.where(s_true >= tau, torch.ones_like(s_true), (1 - y_true) / (1 - s_true))
    return torch.where(present, y_true.expand_as(probs), probs * ratio)


def luc_input(kind: str, image: Tensor, maps: Tensor) -> Tensor:
    """What ``LucDiscriminator`` sees of an image and its class maps: the maps ("basic", and "scaling", whose real
    maps are ``scaled_truth``), or ``product_input`` ("product")."""
    if kind not in LUC_INPUTS:
        raise MedsslError(f"unknown Luc input {kind!r}; choose one of {', '.join(LUC_INPUTS)}")
    return product_input(image, maps) if kind == "product" else maps


def _strided(spatial_dims: int, in_channels: int, widths: Sequence[int]) -> nn.ModuleList:
    """One ``conv 3x3 stride 2 - LeakyReLU(0.2)`` unit per width (no normalisation: real and predicted inputs go
    through separately, and batch statistics would tell them apart)."""
    units = nn.ModuleList()
    for width in widths:
        units.append(nn.Sequential(conv(spatial_dims, in_channels, width, 3, stride=2), nn.LeakyReLU(_SLOPE)))
        in_channels = width
    return units


def _check_widths(widths: Sequence[int]) -> list[int]:
    if not widths or any(int(w) < 1 for w in widths):
        raise MedsslError(f"discriminator widths must be one or more positive integers, got {list(widths)}")
    return [int(w) for w in widths]


class LucDiscriminator(nn.Module):
    """Luc et al.'s adversarial network: strided convolutions, global average pooling and a linear layer, one
    real-vs-predicted logit per image ``(B,)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of its input (``luc_input``): K for "basic"/"scaling", C * K for "product".
        widths: channels of the strided convolutions.
    """

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.units = _strided(spatial_dims, in_channels, widths)
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, x: Tensor) -> Tensor:
        for unit in self.units:
            x = unit(x)
        out: Tensor = self.head(global_avg_pool(x))[:, 0]
        return out


class SegANCritic(nn.Module):
    """SegAN's critic: strided convolutions over image x class maps (``product_input``) whose forward returns the
    input and every layer's output, for ``multiscale_l1``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: C * K (image channels times class maps).
        widths: channels of the strided convolutions (one feature scale each).
    """

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.units = _strided(spatial_dims, in_channels, _check_widths(widths))

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [x]
        for unit in self.units:
            features.append(unit(features[-1]))
        return features


def multiscale_l1(predicted: Sequence[Tensor], true: Sequence[Tensor]) -> Tensor:
    """SegAN's multi-scale L1 loss: the mean absolute difference between the features of every layer (the input
    included), flattened per image and concatenated, of (image x predicted) and (image x true)."""
    if len(predicted) != len(true):
        raise ValueError(f"feature lists differ in length: {len(predicted)} vs {len(true)}")
    a = torch.cat([f.flatten(1) for f in predicted], 1)
    b = torch.cat([f.flatten(1) for f in true], 1)
    return (a - b).abs().mean()


class FCDiscriminator(nn.Module):
    """Hung et al.'s fully convolutional discriminator: strided convolutions, a last convolution to one channel and
    linear upsampling to the input's size: class maps ``(B, K, *S)`` -> confidence logits ``(B, 1, *S)``.

    Args:
        spatial_dims: 2 or 3.
        num_classes: K, the class maps' channels.
        widths: channels of the strided convolutions.
    """

    def __init__(self, spatial_dims: int, num_classes: int, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        widths = _check_widths(widths)
        self.units = _strided(spatial_dims, num_classes, widths)
        self.classifier = conv(spatial_dims, widths[-1], 1, 3)
        self.mode = str(upsample(spatial_dims, 1).mode)  # (bi/tri)linear, from the one dims -> layer mapping

    def forward(self, maps: Tensor) -> Tensor:
        x = maps
        for unit in self.units:
            x = unit(x)
        logits: Tensor = self.classifier(x)
        return nn.functional.interpolate(logits, size=maps.shape[2:], mode=self.mode, align_corners=False)
