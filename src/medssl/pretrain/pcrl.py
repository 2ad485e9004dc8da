"""PCRL: preservational contrastive representation learning (Zhou et al., ICCV 2021, https://arxiv.org/abs/2106.14038).

Three encoders over one U-Net-shaped network: the ordinary (online) encoder, a momentum encoder (an EMA copy, no
gradient) and a hybrid one (a mixup of the two encoders' maps at every level, one alpha for all). Each is trained
contrastively against a first-in first-out queue of momentum keys, and one decoder, whose bottleneck is gated by the
transforms the view went through (transformation-conditioned attention), reconstructs every branch's target.

Decoder: by default the public code's U-Net decoder (``SkipDecoder``: a ``UNetDecoder`` over every encoder level,
then a 1x1 conv); for the hybrid, every skip map is mixed with the bottleneck's alpha, and the gate multiplies the
bottleneck only, as in ``pcrl_model_3d.py``. ``decoder="plain"`` reconstructs from the gated bottleneck alone
(``ReconstructionDecoder``, no skips). The exported encoder is the same either way.

Views and targets (our choice, used by every branch alike): ``ViewGenerator.pair`` draws two geometric views of
each image (crop, resize, flips, quarter turns; no grey-value ops) with their ``ViewRecord``. The reconstruction
target of a view is that view, clean and as transformed. The encoder sees the same crop in its crop frame (flips
and turn undone, ``ViewRecord.to_crop_frame``), so only the gate tells the decoder which flips and turn to
reproduce, and corrupted as in the public code (``pcrl_corruptions``, each step drawn per image: Gaussian blur p 0.5,
local pixel shuffle p 0.5, the Bezier intensity curve p 0 (commented out in the code), then painting p 0.9: in-painting
(p 0.2) or out-painting, the boxes filled with noise of the image's mean and standard deviation since our images are
z-scored). The public code reconstructs augmented targets in one branch and un-augmented ones in the other; here all
three reconstruct transformed targets.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.data.views import ViewGenerator, ViewRecord
from medssl.errors import MedsslError
from medssl.networks import Encoder
from medssl.networks.decoders import ReconstructionDecoder
from medssl.networks.heads import ProjectionHead
from medssl.networks.unet import UNetDecoder, UNetHead
from medssl.pretrain.base import PretrainMethod
from medssl.pretrain.byol import update_momentum
from medssl.pretrain.pcrl_corruptions import PCRLCorruptions
from medssl.pretrain.pcrl_losses import info_nce_loss, nce_loss
from medssl.pretrain.registry import register

__all__ = ["PCRL", "PCRL_PRESETS", "PCRLViews", "SkipDecoder", "TransformGate", "transform_indicator"]

PairFn: TypeAlias = Callable[
    [Tensor, torch.Generator | None], tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]
]
"""``pairs(x, generator) -> (v1, v2, records1, records2)``: two recorded views of every image."""

# "paper": the public code's sizes (a 512-wide bottleneck, 16384 keys); "small": a CPU run's. Both use the code's
# U-Net decoder: its skips carry the reconstruction's gradient into every encoder level, which the fine-tuned U-Net
# reads. On one CPU thread a step costs about 15 % more than with "plain" in 2D (64x64, batch 8) and 75 % more in 3D
# (32^3, batch 2; full-resolution decoder convolutions); `decoder="plain"` is the cheaper choice there.
PCRL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"channels": None, "queue_size": 1024, "hidden_dim": 128, "decoder": "unet"},
    "paper": {"channels": (64, 128, 256, 512), "queue_size": 16384, "hidden_dim": 128, "decoder": "unet"},
}


def transform_indicator(records: Sequence[ViewRecord]) -> Tensor:
    """PCRL's transform indicator, one row per record: the flip of every axis (0/1) and the one-hot number of
    quarter turns (0-3), ``(B, spatial_dims + 4)``: 6 values in 2D, 7 in 3D."""
    rows = [[float(f) for f in r.flips] + F.one_hot(torch.tensor(r.rot90_k % 4), 4).float().tolist() for r in records]
    return torch.tensor(rows)


class TransformGate(nn.Module):
    """Transformation-conditioned attention: indicator ``(B, n)`` -> FC 256 -> ReLU -> FC ``channels`` -> sigmoid,
    multiplied channel-wise into a bottleneck map ``(B, channels, *S)``."""

    def __init__(self, n_indicator: int, channels: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(n_indicator, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, channels), nn.Sigmoid()
        )

    def forward(self, features: Tensor, indicator: Tensor) -> Tensor:
        """``features * gate(indicator)``, the gate broadcast over the spatial axes."""
        gate: Tensor = self.mlp(indicator.to(features))
        return features * gate.view(*gate.shape, *([1] * (features.ndim - 2)))


class SkipDecoder(nn.Module):
    """PCRL's U-Net-shaped decoder: a ``UNetDecoder`` over the encoder's feature list (skips at every level), then
    a 1x1 conv (``UNetHead``) to ``out_channels`` intensities at input resolution (no activation: z-scored images).

    ``[(B, channels[s], *S / strides[s]) for s] -> (B, out_channels, *S)``.
    """

    def __init__(self, encoder: Encoder, out_channels: int) -> None:
        super().__init__()
        norm, act = str(getattr(encoder, "norm_name", "instance")), str(getattr(encoder, "act_name", "leakyrelu"))
        self.body = UNetDecoder(encoder.spatial_dims, encoder.channels, encoder.strides, norm, act)
        self.head = UNetHead(encoder.spatial_dims, self.body.out_channels, out_channels, encoder.strides[0])

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode the features (finest first) to intensities."""
        out: Tensor = self.head(self.body(features)[0])
        return out


def _check_options(preset: str, loss: str, momentum: float, temperature: float, dataset_size: int) -> None:
    if preset not in PCRL_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PCRL_PRESETS)}, got {preset!r}")
    if loss not in ("infonce", "nce"):
        raise ValueError(f"loss must be 'infonce' or 'nce', got {loss!r}")
    if not 0.0 <= momentum <= 1.0 or temperature <= 0 or dataset_size < 1:
        raise ValueError("need 0 <= momentum <= 1, temperature > 0 and dataset_size >= 1")


@dataclass(frozen=True)
class PCRLViews:
    """Two geometric views of every image at its own size, with records (the project's ``ViewGenerator``).

    Args:
        crop_scale: range of the crop edge as a fraction of the input's edge.
        flip_prob: probability of a flip per axis.
        rot90_prob: probability of 1-3 quarter turns in the first two axes (0.75: 0/90/180/270 uniform); turns are
            drawn only where those two axes have one size.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    flip_prob: float = 0.5
    rot90_prob: float = 0.75

    def __post_init__(self) -> None:
        # Build one generator eagerly so that bad settings fail at construction, naming the argument.
        self._generator(2, (8, 8))

    def _generator(self, spatial_dims: int, size: tuple[int, ...]) -> ViewGenerator:
        rot = self.rot90_prob if size[0] == size[1] else 0.0
        off = (0.0, 0.0, 0.0)
        return ViewGenerator(
            spatial_dims, size, scale=self.crop_scale, flip_p=self.flip_prob, rot90_p=rot,
            noise=off, blur=(0.0, 0.5, 1.0), contrast=(0.0, 1.0, 1.0), gamma=(0.0, 1.0, 1.0),
        )  # fmt: skip

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]:
        return self._generator(x.ndim - 2, tuple(x.shape[2:])).pair(x, generator)


@register("pcrl")
class PCRL(PretrainMethod):
    """PCRL in 2D and 3D: contrastive ordinary, momentum and hybrid encoders plus a transform-gated decoder.

    One step, for two recorded views ``t1, t2`` of every image (targets) and their corrupted crop-frame inputs
    ``x1, x2`` (``corrupt``): maps ``o1, o2`` of the ordinary encoder and ``m1, m2`` of the momentum encoder (no
    gradient) at every level; queries ``q = normalise(projector(pool(o)))``, keys
    ``k = normalise(momentum projector(pool(m)))`` from the deepest level; hybrid maps ``h = a * o1 + (1 - a) * m2``
    at every level with ``a ~ Beta(1, 1)``, ``a = max(a, 1 - a)``, its query from the ordinary projector and its key
    ``normalise(a * k1 + (1 - a) * k2)``. Contrastive terms: ``(q1, k2)``, ``(q2, k1)``, ``(q_h, k_h)``, each against
    the queue (temperature 0.2); reconstruction terms: MSE of ``decoder(skips o_i, gate(o_i, ind_i))`` to ``t_i``
    and of ``decoder(skips h, gate(h, a * ind1 + (1 - a) * ind2))`` to ``a * t1 + (1 - a) * t2`` (the gate on the
    deepest map only; no skips with ``decoder="plain"``). Loss: mean of the three contrastive terms + mean of the
    three MSE terms (1:1). After the loss the keys ``k1, k2`` enter the queue, so a batch's keys are never its own
    negatives.

    The contrastive loss is InfoNCE (softmax cross-entropy, the default) or, with ``loss="nce"``, the CMC-style NCE
    of the public code with the number of samples ``dataset_size`` (the code passes the number of batches there).
    The public code trains with SGD (lr 1e-3, momentum 0.9, weight decay 1e-4, cosine) for 240 epochs on 3D crops
    64x64x32 (batch 16) or 2D 224x224 (batch 64); those are the engine's settings, not this module's.

    Args:
        spatial_dims, in_channels, encoder: see ``PretrainMethod``.
        channels: U-Net widths (default: the preset's; the ``small`` preset's is ``DEFAULT_CHANNELS``).
        views: ``pairs(x, generator) -> (v1, v2, records1, records2)`` (default ``PCRLViews()``).
        preset: ``"small"`` (CPU) or ``"paper"`` (``PCRL_PRESETS``); the arguments below override it.
        queue_size: number of keys K in the queue (>= 2 * batch size).
        projection_dim: query/key size (128).
        hidden_dim: projector hidden width (default: the preset's).
        temperature: contrastive temperature (0.2).
        momentum: EMA momentum of the momentum encoder and projector (0.999), applied in ``after_step``.
        loss: ``"infonce"`` (default) or ``"nce"`` (the public code's CMC-style NCE).
        dataset_size: the NCE's number of samples (the size of the pretraining set; unused by InfoNCE).
        blur_prob, shuffle_prob, nonlinear_prob, paint_prob: per-image probabilities of the input corruptions
            (``PCRLCorruptions``; the code's 0.5, 0.5, 0 (its curve is commented out) and 0.9).
        inpaint_prob: probability that a painted image is in-painted rather than out-painted (the code's 0.2).
        decoder: ``"unet"`` (the code's: skips at every level, each mixed for the hybrid) or ``"plain"`` (from the
            bottleneck alone, ``ReconstructionDecoder``); default: the preset's (``"unet"`` for both).

    Attributes:
        projector, gate, decoder: the trained heads. momentum_encoder, momentum_projector: the EMA copies.
        corruptions: the ``PCRLCorruptions`` of the encoder input. decoder_kind: ``"unet"`` or ``"plain"``.
        queue: ``(queue_size, projection_dim)`` normalised keys; queue_ptr: where the next key goes.
    """

    queue: Tensor
    queue_ptr: Tensor
    nce_norm: Tensor

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: PairFn | None = None,
        preset: Literal["small", "paper"] = "small",
        queue_size: int | None = None,
        projection_dim: int = 128,
        hidden_dim: int | None = None,
        temperature: float = 0.2,
        momentum: float = 0.999,
        loss: Literal["infonce", "nce"] = "infonce",
        dataset_size: int = 10_000,
        blur_prob: float = 0.5,
        shuffle_prob: float = 0.5,
        nonlinear_prob: float = 0.0,
        paint_prob: float = 0.9,
        inpaint_prob: float = 0.2,
        decoder: Literal["unet", "plain"] | None = None,
    ) -> None:
        _check_options(preset, loss, momentum, temperature, dataset_size)
        settings = PCRL_PRESETS[preset]
        decoder_kind = settings["decoder"] if decoder is None else decoder
        if decoder_kind not in ("unet", "plain"):
            raise ValueError(f"decoder must be 'unet' or 'plain', got {decoder_kind!r}")
        corruptions = PCRLCorruptions(
            blur=blur_prob, shuffle=shuffle_prob, nonlinear=nonlinear_prob, paint=paint_prob, inpaint=inpaint_prob
        )
        if channels is None and encoder is None:
            channels = settings["channels"]
        pairs: PairFn = PCRLViews() if views is None else views

        def two_views(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
            return pairs(x, generator)[:2]

        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=two_views)
        self.pairs = pairs
        self.preset, self.loss_kind = preset, loss
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.dataset_size, self.corruptions, self.decoder_kind = int(dataset_size), corruptions, decoder_kind
        width = self.encoder.out_channels
        hidden = int(settings["hidden_dim"] if hidden_dim is None else hidden_dim)
        self.projector = ProjectionHead(width, hidden, projection_dim)
        self.gate = TransformGate(self.spatial_dims + 4, width)
        self.decoder: nn.Module = (
            SkipDecoder(self.encoder, self.in_channels)
            if decoder_kind == "unet"
            else ReconstructionDecoder.for_encoder(self.encoder)
        )
        self.momentum_encoder = copy.deepcopy(self.encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for param in (*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()):
            param.requires_grad_(False)
        size = int(settings["queue_size"] if queue_size is None else queue_size)
        if size < 1:
            raise ValueError(f"queue_size must be >= 1, got {size}")
        self.register_buffer("queue", F.normalize(torch.randn(size, projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("nce_norm", torch.zeros(()))  # CMC's normaliser Z, fixed at the first NCE step

    def after_step(self, step: int, max_steps: int) -> None:
        """EMA: ``momentum params = m * momentum params + (1 - m) * online params`` (encoder and projector)."""
        update_momentum(self.encoder, self.momentum_encoder, self.momentum)
        update_momentum(self.projector, self.momentum_projector, self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys (N, D)`` over the oldest entries (first in, first out), wrapping around the end."""
        size = self.queue.shape[0]
        if keys.shape[0] > size:
            raise MedsslError(f"PCRL queue_size={size} must hold a step's {keys.shape[0]} keys (2 x batch size)")
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue[index] = keys.detach().to(self.queue)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The encoder input: blur, local pixel shuffle, (Bezier curve,) in- or out-painting, each drawn per image
        with ``self.corruptions``' probabilities (``pcrl_corruptions.corrupt``), ``(B, C, *S)`` -> same shape."""
        return self.corruptions(x, generator)

    def contrast(self, query: Tensor, key: Tensor, negatives: Tensor) -> Tensor:
        """The contrastive term of queries and positive keys ``(N, D)`` (normalised) against ``negatives (K, D)``."""
        if self.loss_kind == "infonce":
            return info_nce_loss(query, key, negatives, self.temperature)
        if not bool(self.nce_norm):
            with torch.no_grad():
                logits = torch.cat(((query * key).sum(1, keepdim=True), query @ negatives.T), 1)
                self.nce_norm.fill_(float(torch.exp(logits / self.temperature).mean()) * self.dataset_size)
        return nce_loss(query, key, negatives, self.temperature, self.dataset_size, float(self.nce_norm))

    def inputs_and_targets(
        self, batch: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(x1, x2, t1, t2, ind1, ind2)``: encoder inputs, reconstruction targets and transform indicators."""
        if not batch.is_floating_point():
            batch = batch.to(torch.get_default_dtype())
        self.encoder.check_input(batch)
        t1, t2, rec1, rec2 = self.pairs(batch, generator)
        if t1.shape != batch.shape or t2.shape != batch.shape:
            raise MedsslError(f"PCRL views must keep the input's shape {tuple(batch.shape)}, got {tuple(t1.shape)}")
        x1 = torch.stack([r.to_crop_frame(t) for r, t in zip(rec1, t1, strict=True)])
        x2 = torch.stack([r.to_crop_frame(t) for r, t in zip(rec2, t2, strict=True)])
        ind1, ind2 = transform_indicator(rec1).to(t1), transform_indicator(rec2).to(t1)
        return self.corrupt(x1, generator), self.corrupt(x2, generator), t1, t2, ind1, ind2

    def mix_coefficient(self, generator: torch.Generator | None = None) -> float:
        """``a ~ Beta(1, 1) = U(0, 1)``, returned as ``max(a, 1 - a)``."""
        where = generator.device if generator is not None else None
        a = float(torch.rand((), generator=generator, device=where))
        return max(a, 1.0 - a)

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss", "contrastive", "reconstruction"}`` for a batch ``(B, in_channels, *S)`` (see the class)."""
        x1, x2, t1, t2, ind1, ind2 = self.inputs_and_targets(batch, generator)
        a = self.mix_coefficient(generator)
        online = self.encoder(torch.cat((x1, x2)))
        with torch.no_grad():
            momentum = self.momentum_encoder(torch.cat((x1, x2)))
            k1, k2 = F.normalize(self.momentum_projector.forward_map(momentum[-1]), dim=1).chunk(2)
            k_mix = F.normalize(a * k1 + (1 - a) * k2, dim=1)
        # Every level, as the code mixes the bottleneck and every skip: (o1, o2, a * o1 + (1 - a) * m2) on the batch.
        levels = [
            torch.cat((o, a * o[: len(x1)] + (1 - a) * m[len(x1) :])) for o, m in zip(online, momentum, strict=True)
        ]
        q1, q2, q_mix = F.normalize(self.projector.forward_map(levels[-1]), dim=1).chunk(3)
        negatives = self.queue.clone().detach()  # the enqueue below must not touch what autograd saved
        contrastive = torch.stack(
            [self.contrast(q1, k2, negatives), self.contrast(q2, k1, negatives), self.contrast(q_mix, k_mix, negatives)]
        ).mean()
        indicators = torch.cat((ind1, ind2, a * ind1 + (1 - a) * ind2))
        targets = torch.cat((t1, t2, a * t1 + (1 - a) * t2))
        gated = self.gate(levels[-1], indicators)  # the gate acts on the bottleneck only, as in the code
        recon = self.decoder([*levels[:-1], gated] if self.decoder_kind == "unet" else gated)
        reconstruction = F.mse_loss(recon, targets, reduction="none").flatten(1).mean(1).view(3, -1).mean(1).mean()
        self.enqueue(torch.cat((k1, k2)))
        return {
            "loss": contrastive + reconstruction,
            "contrastive": contrastive.detach(),
            "reconstruction": reconstruction.detach(),
        }
