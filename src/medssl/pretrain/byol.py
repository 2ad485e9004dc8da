"""BYOL: an online network predicts a slowly moving target network's projection (https://arxiv.org/abs/2006.07733)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from medssl.networks import Encoder
from medssl.networks.heads import PredictionHead, ProjectionHead
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.losses import byol_loss
from medssl.pretrain.registry import register

__all__ = ["BYOL", "MomentumMethod", "cosine_momentum", "update_momentum"]


def cosine_momentum(step: int, max_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's momentum schedule: ``final - (final - base) * (cos(pi * step / max_steps) + 1) / 2``.

    ``base`` at step 0, rising to ``final`` at ``max_steps`` (steps past it stay at ``final``).
    """
    if max_steps < 1 or step < 0:
        raise ValueError(f"need step >= 0 and max_steps >= 1, got step={step}, max_steps={max_steps}")
    progress = min(step, max_steps) / max_steps
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """Exponential moving average in place: ``target = momentum * target + (1 - momentum) * online``.

    Parameters are averaged; buffers (e.g. BatchNorm statistics) are copied from the online module. Both modules
    must have the same structure (``target`` a deep copy of ``online``).
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)


class MomentumMethod(PretrainMethod):
    """The online/target pair shared by BYOL and PGL: online encoder + projector + predictor, and a target encoder +
    projector that are frozen deep copies moved towards the online weights after every step.

    Subclasses implement ``losses``; ``after_step`` applies ``cosine_momentum(step, max_steps, momentum,
    final_momentum)`` through ``update_momentum``.

    Args:
        spatial_dims, in_channels, channels, encoder, views: see ``PretrainMethod``.
        heads: ``heads(encoder) -> (projector, predictor)``, called with the built online encoder.
        momentum: EMA momentum at step 0 (BYOL: 0.996).
        final_momentum: EMA momentum at the last step (BYOL: 1).

    Attributes:
        projector, predictor: the online heads. target_encoder, target_projector: the EMA copies (no gradient).
        momentum: the momentum used by the latest ``after_step`` (``base`` before the first).
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        heads: Callable[[Encoder], tuple[nn.Module, nn.Module]],
        momentum: float = 0.996,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=views)
        if not 0.0 <= momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"need 0 <= momentum <= final_momentum <= 1, got momentum={momentum}, final_momentum={final_momentum}"
            )
        self.base_momentum, self.final_momentum = float(momentum), float(final_momentum)
        self.momentum = self.base_momentum
        self.projector, self.predictor = heads(self.encoder)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for param in (*self.target_encoder.parameters(), *self.target_projector.parameters()):
            param.requires_grad_(False)

    def after_step(self, step: int, max_steps: int) -> None:
        """Move the target towards the online network with ``cosine_momentum(step, max_steps, ...)``."""
        self.momentum = cosine_momentum(step, max_steps, self.base_momentum, self.final_momentum)
        update_momentum(self.encoder, self.target_encoder, self.momentum)
        update_momentum(self.projector, self.target_projector, self.momentum)


@register("byol")
class BYOL(MomentumMethod):
    """Online encoder + projector + predictor regress the target encoder + projector's output on the other view.

    The projectors act per position of the deepest map and are then averaged (see ``medssl.networks.heads``);
    the predictor acts on the averaged projection. The target is a deep copy of the online encoder and projector
    that receives no gradient; ``after_step`` moves it towards the online weights with momentum
    ``cosine_momentum(step, max_steps, momentum, final_momentum)``. The loss ``byol_loss`` is symmetrised: each
    view's prediction regresses the other view's target projection, and the two terms are averaged (the paper sums
    them, which only rescales the gradient).

    Args:
        spatial_dims, in_channels, channels, encoder, views: see ``PretrainMethod``.
        hidden_dim: hidden width of the projector and the predictor (BYOL: 4096).
        projection_dim: projection and prediction size (BYOL: 256).
        momentum: EMA momentum at step 0 (BYOL: 0.996).
        final_momentum: EMA momentum at the last step (BYOL: 1).

    Attributes:
        projector, predictor: the online heads. target_encoder, target_projector: the EMA copies (no gradient).
        momentum: the momentum used by the latest ``after_step`` (``base`` before the first).
    """

    projector: ProjectionHead
    predictor: PredictionHead
    target_projector: ProjectionHead

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        hidden_dim: int = 1024,
        projection_dim: int = 256,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
    ) -> None:
        def heads(online: Encoder) -> tuple[nn.Module, nn.Module]:
            return (
                ProjectionHead(online.out_channels, hidden_dim, projection_dim),
                PredictionHead(projection_dim, hidden_dim, projection_dim),
            )

        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            encoder=encoder,
            views=views,
            heads=heads,
            momentum=momentum,
            final_momentum=final_momentum,
        )

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": symmetrised BYOL loss}`` for a batch ``(B, in_channels, *S)``."""
        view_a, view_b = self.make_views(batch, generator)
        views = torch.cat((view_a, view_b))
        predictions = self.predictor(self.projector.forward_map(self.encoder(views)[-1]))
        with torch.no_grad():
            targets = self.target_projector.forward_map(self.target_encoder(views)[-1])
        target_a, target_b = targets.chunk(2)
        # View a's prediction regresses view b's target and vice versa; the mean over 2B averages the two terms.
        return {"loss": byol_loss(predictions, torch.cat((target_b, target_a)))}
