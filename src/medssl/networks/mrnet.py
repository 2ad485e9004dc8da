"""MRNet's networks (Ji et al. CVPR 2021, public code jiwei0921/MRNet), in 2D and 3D through the layer factory.

- ``ExpertiseUNet``: the expertise-aware inference module: a U-Net whose bottleneck goes through one step of a
  ConvLSTM whose hidden and cell state are the rater-expertise vector ``c`` (R weights summing to 1), tiled to the
  bottleneck grid and mapped to its width by a 3x3 convolution. The public code has a ResNet-34 encoder; here any
  ``Encoder`` (the project's U-Net encoder by default).
- The multi-rater reconstruction module is an ``ExpertiseUNet`` too, on ``(image, coarse probabilities)``, with
  one output per rater and structure: a smaller stand-in for the code's VGG16-BN + ASPP + DeepLabv3+ decoder, with
  the same inputs, conditioning and heads.
- ``PerceptionModule``: attention maps from the raters' disagreement (per-pixel standard deviation of the
  reconstructions) and from the coarse prediction, each blurred by a learnable Gaussian, min-max normalised,
  the maximum of that and the raw map multiplying the decoder features with a residual; a 3x3 convolution over
  the enhanced features gives the refined logits.
- ``MRNet``: the three chained, the network ``predict`` runs: ``forward(x)`` with the stored expertise vector
  (uniform unless set), a zero background logit in front for label maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medssl.errors import MedsslError
from medssl.networks import layers
from medssl.networks.encoders import Encoder
from medssl.networks.unet import UNetDecoder, UNetHead

__all__ = ["ConvLSTMCell", "ExpertiseUNet", "GaussianBlur", "MRNet", "PerceptionModule"]


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``(x, (h, c)) -> (h', c')``, gates from a 3x3 convolution of ``cat(x, h)``."""

    def __init__(self, spatial_dims: int, in_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.gates = layers.conv(spatial_dims, in_channels + hidden_channels, 4 * hidden_channels, kernel_size=3)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        hidden, cell = state
        i, f, o, g = self.gates(torch.cat((x, hidden), dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


def check_expertise(expertise: Tensor, batch: int, raters: int) -> Tensor:
    """``expertise`` as ``(batch, raters)``: one vector for the batch or one per sample, each summing to 1.

    Raises:
        MedsslError: wrong length, negative weights, or weights that do not sum to 1.
    """
    c = expertise.reshape(1, -1).expand(batch, -1) if expertise.ndim == 1 else expertise
    if c.shape != (batch, raters):
        raise MedsslError(f"the rater-expertise vector needs {raters} weights per image, got {tuple(c.shape)}")
    if (c < 0).any() or not torch.allclose(c.sum(1), torch.ones_like(c[:, 0]), atol=1e-4):
        raise MedsslError(f"rater-expertise weights must be >= 0 and sum to 1, got {c.tolist()}")
    return c


class ExpertiseUNet(nn.Module):
    """A U-Net conditioned on the rater-expertise vector at its bottleneck (see the module).

    ``forward(x (B, C_in, *S), expertise (B, R))`` -> ``(logits (B, out_channels, *S), decoder features
    (B, channels[0], *S))``.

    Args:
        encoder: any ``Encoder``.
        out_channels: logit channels.
        num_raters: ``R``, the length of the expertise vector.
        norm, act: decoder norm and activation (default: the encoder's).
    """

    def __init__(
        self, encoder: Encoder, out_channels: int, num_raters: int, *, norm: str | None = None, act: str | None = None
    ) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise MedsslError(f"ExpertiseUNet needs a medssl Encoder, got {type(encoder).__name__}")
        if num_raters < 1 or out_channels < 1:
            raise MedsslError(f"num_raters and out_channels must be >= 1, got {num_raters} and {out_channels}")
        dims, width = encoder.spatial_dims, encoder.channels[-1]
        self.encoder, self.num_raters = encoder, num_raters
        self.condition = layers.conv(dims, num_raters, width, kernel_size=3)
        self.lstm = ConvLSTMCell(dims, width, width)
        norm = norm if norm is not None else str(getattr(encoder, "norm_name", "instance"))
        act = act if act is not None else str(getattr(encoder, "act_name", "leakyrelu"))
        self.decoder = UNetDecoder(dims, encoder.channels, encoder.strides, norm, act)
        self.head = UNetHead(dims, self.decoder.out_channels, out_channels, encoder.strides[0])

    def forward(self, x: Tensor, expertise: Tensor) -> tuple[Tensor, Tensor]:
        self.encoder.check_input(x)
        features = list(self.encoder(x))
        bottleneck = features[-1]
        c = check_expertise(expertise, x.shape[0], self.num_raters).to(bottleneck.dtype)
        grid = c.reshape(*c.shape, *[1] * (bottleneck.ndim - 2)).expand(-1, -1, *bottleneck.shape[2:])
        state = self.condition(grid)
        features[-1] = self.lstm(bottleneck, (state, state))[0]  # one step, c as hidden and cell state
        decoded = self.decoder(features)[0]
        return self.head(decoded), decoded


def _gaussian(size: int, sigma: float, dims: int) -> Tensor:
    """A normalised ``size^dims`` Gaussian kernel, ``(1, 1, *[size] * dims)``."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    kernel = g
    for _ in range(dims - 1):
        kernel = kernel[..., None] * g
    return (kernel / kernel.sum()).reshape(1, 1, *[size] * dims)


class GaussianBlur(nn.Module):
    """A learnable blur (the public code's ``Soft``): one ``size^dims`` kernel, a Gaussian of ``sigma`` at init
    (31 and 4 there), applied with "same" padding to one-channel maps."""

    def __init__(self, spatial_dims: int, size: int = 31, sigma: float = 4.0) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0 or sigma <= 0:
            raise MedsslError(f"the blur needs an odd size >= 1 and sigma > 0, got {size} and {sigma}")
        self.spatial_dims = layers.check_spatial_dims(spatial_dims)
        self.kernel = nn.Parameter(_gaussian(size, sigma, spatial_dims))

    def forward(self, x: Tensor) -> Tensor:
        conv = (F.conv2d, F.conv3d)[self.spatial_dims - 2]
        out: Tensor = conv(x, self.kernel.to(x.dtype), padding=self.kernel.shape[-1] // 2)
        return out


def _min_max(x: Tensor) -> Tensor:
    """Each map of ``(B, 1, *S)`` scaled to [0, 1]."""
    flat = x.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1, *[1] * (x.ndim - 1))
    return (x - low.reshape(shape)) / (high - low + 1e-8).reshape(shape)


class PerceptionModule(nn.Module):
    """The multi-rater perception module (see the module).

    ``forward(recon_logits (B, R, K, *S), features (B, in_channels, *S), coarse_logits (B, K, *S))`` ->
    refined logits ``(B, K, *S)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: width of the decoder features.
        structures: ``K``, binary structures.
        width: width of the feature block and of each attended copy.
        blur_size, blur_sigma: the learnable Gaussian's size and initial sigma (public code: 31 and 4).
        norm, act: the feature block's norm and activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        structures: int,
        *,
        width: int = 32,
        blur_size: int = 31,
        blur_sigma: float = 4.0,
        norm: str = "instance",
        act: str = "leakyrelu",
    ) -> None:
        super().__init__()
        self.structures = structures
        self.block = nn.Sequential(
            layers.ConvNormAct(spatial_dims, in_channels, width, 3, 1, norm, act),
            layers.ConvNormAct(spatial_dims, width, width, 3, 1, norm, act),
        )
        self.blur = GaussianBlur(spatial_dims, blur_size, blur_sigma)
        self.out = layers.conv(spatial_dims, 2 * structures * width, structures, kernel_size=3)

    def attention_maps(self, recon_logits: Tensor, coarse_logits: Tensor) -> list[Tensor]:
        """Per structure, the coarse prediction and the raters' disagreement, each ``(B, 1, *S)``."""
        if recon_logits.shape[1] < 2:
            raise MedsslError("the perception module needs at least two raters' reconstructions")
        spread = torch.sigmoid(recon_logits).std(dim=1)  # (B, K, *S)
        pred = torch.sigmoid(coarse_logits)
        return [m[:, k : k + 1] for k in range(self.structures) for m in (pred, spread)]

    def attend(self, attention: Tensor, features: Tensor) -> Tensor:
        """``features`` times the blurred, normalised attention (or the raw one where larger), plus ``features``."""
        soft = _min_max(self.blur(attention))
        return features * torch.maximum(soft, attention) + features

    def forward(self, recon_logits: Tensor, features: Tensor, coarse_logits: Tensor) -> Tensor:
        f = self.block(features)
        enhanced = [self.attend(m, f) for m in self.attention_maps(recon_logits, coarse_logits)]
        out: Tensor = self.out(torch.cat(enhanced, dim=1))
        return out


class MRNet(nn.Module):
    """Inference, reconstruction and perception chained (see the module); ``reconstruction`` and ``perception``
    None: the conditioned U-Net alone (the ablation baseline).

    ``forward(x, expertise=None)``: refined logits ``(B, K, *S)`` (a zero background logit in front when
    ``background_logit``) for the expertise vector given, else the stored one (``expertise`` buffer, uniform at
    init; ``set_expertise`` changes it and a checkpoint keeps it).

    Args:
        inference: the ``ExpertiseUNet`` giving coarse logits ``(B, K, *S)``.
        reconstruction: an ``ExpertiseUNet`` on ``(image, K coarse probabilities)`` with ``R * K`` outputs.
        perception: the ``PerceptionModule``.
        num_raters, structures: ``R`` and ``K``.
        background_logit: put a zero background logit first (label-map plans).
    """

    expertise: Tensor  # a buffer: the stored expertise vector

    def __init__(
        self,
        inference: ExpertiseUNet,
        reconstruction: ExpertiseUNet | None,
        perception: PerceptionModule | None,
        *,
        num_raters: int,
        structures: int,
        background_logit: bool = False,
    ) -> None:
        super().__init__()
        if (reconstruction is None) != (perception is None):
            raise MedsslError("MRNet needs both the reconstruction and the perception module, or neither")
        self.inference, self.reconstruction, self.perception = inference, reconstruction, perception
        self.num_raters, self.structures, self.background_logit = num_raters, structures, background_logit
        self.spatial_dims, self.in_channels = inference.encoder.spatial_dims, inference.encoder.in_channels
        self.out_channels = structures + int(background_logit)
        self.register_buffer("expertise", torch.full((num_raters,), 1.0 / num_raters))

    @property
    def encoder(self) -> Encoder:
        """The inference module's encoder (what ``finetune --init`` loads)."""
        return self.inference.encoder

    @property
    def required_divisor(self) -> int:
        dividers: Sequence[int] = [self.inference.encoder.required_divisor]
        if self.reconstruction is not None:
            dividers = [*dividers, self.reconstruction.encoder.required_divisor]
        return math.lcm(*dividers)

    def set_expertise(self, weights: Sequence[float] | Tensor) -> None:
        """Store the expertise vector ``forward(x)`` uses (checked: R weights, >= 0, summing to 1)."""
        c = torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        self.expertise.copy_(check_expertise(c, 1, self.num_raters)[0])

    def reconstruct(self, x: Tensor, coarse_prob: Tensor, expertise: Tensor) -> tuple[Tensor, Tensor]:
        """Every rater's reconstruction ``(B, R, K, *S)`` from the image and the coarse probabilities
        ``(B, K, *S)``, and the reconstruction network's decoder features."""
        if self.reconstruction is None:
            raise MedsslError("this MRNet has no reconstruction module (built without refinement)")
        logits, features = self.reconstruction(torch.cat((x, coarse_prob), dim=1), expertise)
        return logits.reshape(x.shape[0], self.num_raters, self.structures, *x.shape[2:]), features

    def refined(self, x: Tensor, expertise: Tensor) -> Tensor:
        """Refined logits ``(B, K, *S)`` (coarse ones without the refinement modules)."""
        coarse, features = self.inference(x, expertise)
        if self.perception is None:
            return coarse
        recon, _ = self.reconstruct(x, torch.sigmoid(coarse), expertise)
        out: Tensor = self.perception(recon, features, coarse)
        return out

    def forward(self, x: Tensor, expertise: Tensor | None = None) -> Tensor:
        c = self.expertise if expertise is None else expertise
        logits = self.refined(x, c.to(x.device))
        if self.background_logit:
            logits = torch.cat((torch.zeros_like(logits[:, :1]), logits), dim=1)
        return logits
