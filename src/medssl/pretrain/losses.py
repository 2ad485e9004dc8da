"""Self-supervised losses: NT-Xent (SimCLR), BYOL's normalised regression, and the Gaussian KL term of a VAE.

Embedding losses reduce along dimension 1 (the feature axis), so the same function serves global embeddings
``(B, D)`` and dense ones ``(B, D, *S)`` where that makes sense. They compute in float32 with autocast off: early
in training the cosine similarities of different images differ in the third decimal, below bfloat16's resolution
near 1, so a bf16 similarity matrix is flat and the loss gives no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NTXentLoss", "byol_loss", "kl_divergence"]


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy (SimCLR, https://arxiv.org/abs/2002.05709).

    The ``2B`` embeddings of a batch are L2-normalised; for each one, its other view is the positive and the
    remaining ``2B - 2`` embeddings are the negatives, in a softmax over cosine similarities divided by the
    temperature. The loss is the mean over all ``2B`` anchors. With ``B = 1`` there are no negatives and the
    loss is 0.

    Args:
        temperature: softmax temperature, > 0 (SimCLR uses 0.1-0.5).

    Shape:
        z_a, z_b: ``(B, D)``, the embeddings of two views of the same ``B`` images, row ``i`` matching row ``i``.
        Output: scalar.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        self.temperature = float(temperature)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.ndim != 2 or z_a.shape != z_b.shape:
            raise ValueError(f"z_a and z_b must both be (B, D), got {tuple(z_a.shape)} and {tuple(z_b.shape)}")
        n = z_a.shape[0]
        with _float32(z_a):
            z = F.normalize(_wide(torch.cat((z_a, z_b))), dim=1)
            logits = z @ z.T / self.temperature
        # An embedding is never its own negative.
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        positives = torch.cat((torch.arange(n, 2 * n), torch.arange(n))).to(z.device)
        return F.cross_entropy(logits, positives)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss ``2 - 2 cos(p, z)`` (https://arxiv.org/abs/2006.07733), averaged.

    Equals the squared distance between the L2-normalised vectors. ``z`` should come from the target network,
    which carries no gradient; the loss itself does not detach it.

    Args:
        p: online predictions ``(B, D)`` or dense ``(B, D, *S)``.
        z: target projections, same shape.

    Returns:
        Scalar: ``2 - 2 cos`` along dimension 1, mean over the batch (and positions).
    """
    if p.shape != z.shape:
        raise ValueError(f"p and z must have one shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    with _float32(p):
        cosine = (F.normalize(_wide(p), dim=1) * F.normalize(_wide(z), dim=1)).sum(dim=1)
        return (2 - 2 * cosine).mean()


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` of a diagonal Gaussian posterior (VAE, https://arxiv.org/abs/1312.6114).

    Args:
        mu: posterior means ``(B, *latent)``.
        logvar: posterior log-variances, same shape.

    Returns:
        Scalar in nats: sum over the latent dimensions, mean over the batch.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have one shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    with _float32(mu):
        mu, logvar = _wide(mu), _wide(logvar)
        per_element = 0.5 * (mu.square() + logvar.exp() - 1 - logvar)
        return per_element.flatten(1).sum(1).mean()


def _wide(t: Tensor) -> Tensor:
    """``t`` in float32 if it is in a narrower float type (float64 stays)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def _float32(like: Tensor) -> torch.autocast:
    """Autocast switched off on ``like``'s device: the loss runs in the float32 its inputs are cast to."""
    return torch.autocast(device_type=like.device.type, enabled=False)
