"""MLP heads for pretraining: the projection head (SimCLR, BYOL), BYOL's predictor and PGL's dense conv head.

Both are ``Linear - LayerNorm - ReLU - Linear`` acting on the last dimension. The papers put BatchNorm1d in the
hidden layer, but batch statistics break at batch size 1 (training raises) and are noise at the batch sizes of 3D
medical patches (2-4); LayerNorm normalises each sample on its own, so training and evaluation agree at any batch
size. BYOL still works without batch statistics (Richemond et al., https://arxiv.org/abs/2010.10241).

``forward_map`` projects every position of a feature map and then averages (a 1x1-conv MLP, then global pooling,
like PGL's projector). Methods use it instead of projecting ``Encoder.pool``: after the instance norm and
activation that end every ``UNetEncoder`` scale, each channel's spatial mean depends only on the shape of that
channel's value distribution, so pooled features of different images are nearly identical (cosine > 0.99 at
initialisation) and SimCLR on them does not learn. The per-position nonlinearity mixes channels before the
average, which instance norm does not normalise away.
"""

from __future__ import annotations

from torch import Tensor, nn

from medssl.networks import layers

__all__ = ["ConvProjectionHead", "PredictionHead", "ProjectionHead"]


class _TwoLayerMLP(nn.Sequential):
    """``(..., in_dim) -> Linear -> LayerNorm -> ReLU -> Linear -> (..., out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        for arg, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            layers.act("relu"),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim

    def forward_map(self, feature_map: Tensor) -> Tensor:
        """Apply the MLP at every position of ``feature_map (B, in_dim, *S)``, then average: ``(B, out_dim)``."""
        per_position: Tensor = self(feature_map.movedim(1, -1))
        return per_position.flatten(1, -2).mean(dim=1)


class ProjectionHead(_TwoLayerMLP):
    """Projects encoder features (vectors, or every position of a map with ``forward_map``) into the space where
    the SSL loss is computed.

    SimCLR (https://arxiv.org/abs/2002.05709) projects to 128-d; BYOL (https://arxiv.org/abs/2006.07733) uses a
    4096-d hidden layer and a 256-d output.

    Args:
        in_dim: feature size (the encoder's ``out_channels``).
        hidden_dim: hidden layer width.
        out_dim: projection size.

    Shape:
        ``forward``: ``(B, *, in_dim) -> (B, *, out_dim)``; ``forward_map``: ``(B, in_dim, *S) -> (B, out_dim)``;
        any ``B >= 1``.
    """


class PredictionHead(_TwoLayerMLP):
    """BYOL's predictor (https://arxiv.org/abs/2006.07733): maps online projections to predictions of the target's.

    Args:
        in_dim: projection size.
        hidden_dim: hidden layer width.
        out_dim: prediction size (equal to ``in_dim`` in BYOL).

    Shape:
        ``(B, *, in_dim) -> (B, *, out_dim)``; any ``B >= 1``.
    """


class ConvProjectionHead(nn.Sequential):
    """PGL's projector and predictor (https://arxiv.org/abs/2109.13243): a dense head without global pooling,
    ``Conv1x1 (hidden_dim) - BatchNorm - ReLU - Conv1x1 (out_dim)``, applied at every position of a map.

    BatchNorm normalises over the batch and every position (``B * prod(S)`` values per channel), so its statistics
    are sound at batch size 2; training needs more than one value per channel. The first conv has no bias (the norm
    removes it).

    Args:
        spatial_dims: 2 or 3.
        in_dim: input channels (the encoder's ``out_channels`` for the projector).
        hidden_dim: hidden width (PGL: 4096).
        out_dim: output channels (PGL: 256).

    Shape:
        ``(B, in_dim, *S) -> (B, out_dim, *S)``.
    """

    def __init__(self, spatial_dims: int, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        for arg, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}")
        super().__init__(
            layers.conv(spatial_dims, in_dim, hidden_dim, kernel_size=1, bias=False),
            layers.norm("batch", spatial_dims, hidden_dim),
            layers.act("relu"),
            layers.conv(spatial_dims, hidden_dim, out_dim, kernel_size=1),
        )
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
