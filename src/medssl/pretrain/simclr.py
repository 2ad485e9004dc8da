"""SimCLR: contrastive pretraining of a global image embedding (https://arxiv.org/abs/2002.05709)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medssl.networks import Encoder
from medssl.networks.heads import ProjectionHead
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.losses import NTXentLoss
from medssl.pretrain.registry import register

__all__ = ["SimCLR"]


@register("simclr")
class SimCLR(PretrainMethod):
    """Two views -> encoder -> deepest map -> projection head (per position, then averaged) -> NT-Xent.

    The head is applied before the global average, not to ``Encoder.pool``: see ``medssl.networks.heads`` for why.

    Args:
        spatial_dims, in_channels, channels, encoder, views: see ``PretrainMethod``.
        temperature: NT-Xent temperature.
        hidden_dim: projection head hidden width.
        projection_dim: projection size (SimCLR: 128).

    Attributes:
        projector: the ``ProjectionHead``. criterion: the ``NTXentLoss``.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        temperature: float = 0.1,
        hidden_dim: int = 512,
        projection_dim: int = 128,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=views)
        self.projector = ProjectionHead(self.encoder.out_channels, hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature)

    def embed(self, x: Tensor) -> Tensor:
        """Projections of images ``(B, in_channels, *S)``: ``(B, projection_dim)``."""
        return self.projector.forward_map(self.encoder(x)[-1])

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": NT-Xent}`` for a batch ``(B, in_channels, *S)``, B >= 2 (B = 1 has no negatives)."""
        view_a, view_b = self.make_views(batch, generator)
        # One encoder pass over both views: cheaper than two.
        z_a, z_b = self.embed(torch.cat((view_a, view_b))).chunk(2)
        return {"loss": self.criterion(z_a, z_b)}
