"""Default two-view generator for pretraining: crop-resize, flips and grey-value intensity changes, in torch.

Every function takes ``(B, C, *spatial)`` and works for 2D and 3D; random parameters are drawn per image from
``generator`` (on the generator's device, so a CPU generator also drives GPU batches reproducibly). Intensity
changes use one parameter per image shared by all channels: there is no colour jitter, which means nothing for
CT/MR grey values. ``medssl.data.views`` provides the full recorded view generator; any callable
``views(x, generator) -> (view_a, view_b)`` can replace ``RandomViews``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["RandomViews", "random_contrast", "random_flip", "random_gamma", "random_noise", "random_resized_crop"]

# F.interpolate has no dimension-generic linear mode.
_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` draws from U(low, high) made on the generator's device, returned on ``device``."""
    where = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=where) * (high - low) + low).to(device)


def _per_image(values: Tensor, x: Tensor) -> Tensor:
    """Reshape ``(B,)`` values to broadcast over ``x (B, C, *S)``."""
    return values.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def _image_min_max(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image minimum and maximum over channels and space, shaped ``(B, 1, ..., 1)``."""
    flat = x.flatten(1)
    return _per_image(flat.amin(1), x), _per_image(flat.amax(1), x)


def random_resized_crop(x: Tensor, scale: tuple[float, float], generator: torch.Generator | None = None) -> Tensor:
    """Crop a random box of each image and resize it (linearly) back to the input size.

    Args:
        x: images ``(B, C, *S)``.
        scale: range of the box side as a fraction of each image side (one fraction per image, all axes, so the
            aspect ratio is kept).
        generator: random source.

    Returns:
        ``(B, C, *S)``.
    """
    spatial = tuple(x.shape[2:])
    mode = _LINEAR_MODE[len(spatial)]
    where = generator.device if generator is not None else torch.device("cpu")
    fractions = _uniform(x.shape[0], scale[0], scale[1], generator, where).tolist()
    out = []
    for image, fraction in zip(x, fractions, strict=True):
        box = []
        for size in spatial:
            extent = min(size, max(1, round(fraction * size)))
            start = int(torch.randint(0, size - extent + 1, (1,), generator=generator, device=where))
            box.append(slice(start, start + extent))
        crop = image[(slice(None), *box)].unsqueeze(0)
        out.append(F.interpolate(crop, size=spatial, mode=mode, align_corners=False))
    return torch.cat(out)


def random_flip(x: Tensor, prob: float, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image along each spatial axis independently with probability ``prob``: ``(B, C, *S) -> same``."""
    for axis in range(2, x.ndim):
        flip = _per_image(_uniform(x.shape[0], 0, 1, generator, x.device) < prob, x).bool()
        x = torch.where(flip, x.flip(axis), x)
    return x


def random_noise(x: Tensor, prob: float, std: tuple[float, float], generator: torch.Generator | None = None) -> Tensor:
    """Add Gaussian noise to each image with probability ``prob``; its standard deviation is ``U(*std)`` times the
    image's own standard deviation, so the effect does not depend on the intensity scale. ``(B, C, *S) -> same``."""
    n = x.shape[0]
    sigma = _uniform(n, std[0], std[1], generator, x.device) * (_uniform(n, 0, 1, generator, x.device) < prob)
    where = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
    image_std = _per_image(x.flatten(1).std(1, correction=0), x)
    return x + _per_image(sigma, x) * image_std * noise


def random_contrast(
    x: Tensor, prob: float, factor: tuple[float, float], generator: torch.Generator | None = None
) -> Tensor:
    """With probability ``prob``, scale each image's deviation from its mean by ``U(*factor)`` and clip the result to
    the image's original range. ``(B, C, *S) -> same``."""
    n = x.shape[0]
    scale = _uniform(n, factor[0], factor[1], generator, x.device)
    scale = torch.where(_uniform(n, 0, 1, generator, x.device) < prob, scale, torch.ones_like(scale))
    lo, hi = _image_min_max(x)
    mean = _per_image(x.flatten(1).mean(1), x)
    return torch.minimum(torch.maximum((x - mean) * _per_image(scale, x) + mean, lo), hi)


def random_gamma(
    x: Tensor, prob: float, gamma: tuple[float, float], generator: torch.Generator | None = None
) -> Tensor:
    """With probability ``prob``, rescale each image to [0, 1], raise it to ``U(*gamma)`` and map it back to its
    original range. ``(B, C, *S) -> same``."""
    n = x.shape[0]
    power = _uniform(n, gamma[0], gamma[1], generator, x.device)
    power = torch.where(_uniform(n, 0, 1, generator, x.device) < prob, power, torch.ones_like(power))
    lo, hi = _image_min_max(x)
    span = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)
    unit = ((x - lo) / span).clamp(0, 1)
    return unit.pow(_per_image(power, x)) * span + lo


def _check_range(name: str, value: tuple[float, float], positive: bool, high: float = math.inf) -> None:
    low_ok = len(value) == 2 and (value[0] > 0 if positive else value[0] >= 0)
    if not (low_ok and value[0] <= value[1] <= high):
        bound = ("0 < min" if positive else "0 <= min") + " <= max" + (f" <= {high}" if high < math.inf else "")
        raise ValueError(f"{name} must be (min, max) with {bound}, got {value}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass(frozen=True)
class RandomViews:
    """Two independently augmented views of every image: ``views(x, generator) -> (view_a, view_b)``.

    Pipeline per view (probabilities and ranges from PGL's augmentation, METHODS.md section 2): crop-resize, flip
    per axis, Gaussian noise, contrast, gamma. Views keep the input shape ``(B, C, *S)``.

    Args:
        crop_scale: range of the crop side as a fraction of the image side; ``(1, 1)`` disables cropping.
        flip_prob: probability of flipping along each spatial axis.
        noise_prob: probability of adding noise to an image.
        noise_std: range of the noise standard deviation, relative to the image's standard deviation.
        contrast_prob: probability of a contrast change.
        contrast_range: range of the contrast factor.
        gamma_prob: probability of a gamma change.
        gamma_range: range of the gamma exponent.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip_prob: float = 0.5
    noise_prob: float = 0.1
    noise_std: tuple[float, float] = (0.0, 0.3)
    contrast_prob: float = 0.5
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_prob: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        _check_range("crop_scale", self.crop_scale, positive=True, high=1.0)
        _check_range("noise_std", self.noise_std, positive=False)
        _check_range("contrast_range", self.contrast_range, positive=False)
        _check_range("gamma_range", self.gamma_range, positive=True)
        for name in ("flip_prob", "noise_prob", "contrast_prob", "gamma_prob"):
            _check_prob(name, getattr(self, name))

    def augment(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One random view of every image: ``(B, C, *S) -> (B, C, *S)``."""
        x = random_resized_crop(x, self.crop_scale, generator)
        x = random_flip(x, self.flip_prob, generator)
        x = random_noise(x, self.noise_prob, self.noise_std, generator)
        x = random_contrast(x, self.contrast_prob, self.contrast_range, generator)
        return random_gamma(x, self.gamma_prob, self.gamma_range, generator)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Two independent views of ``x (B, C, *S)``, each ``(B, C, *S)``."""
        return self.augment(x, generator), self.augment(x, generator)
