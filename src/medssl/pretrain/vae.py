"""Variational autoencoder pretraining (https://arxiv.org/abs/1312.6114), optionally with SimCLR's NT-Xent on the
latent means of two views (the source document's combination, METHODS.md section 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.networks import Encoder, layers
from medssl.networks.decoders import ReconstructionDecoder
from medssl.networks.heads import ProjectionHead
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.losses import NTXentLoss, kl_divergence
from medssl.pretrain.registry import register

__all__ = ["VAE"]

# Bounds on the log-variance: keep exp() finite while the 1x1 conv is still far from trained.
_LOGVAR_RANGE = (-30.0, 20.0)


@register("vae")
class VAE(PretrainMethod):
    """Encoder -> Gaussian posterior over a latent map -> reparameterised sample -> decoder -> image.

    The posterior is spatial: a 1x1 conv on the deepest encoder map gives mean and log-variance maps
    ``(B, latent_channels, *S / strides[-1])``, so the method works for any input size in 2D and 3D; the
    ``ReconstructionDecoder`` (no skip connections) upsamples a sample back to ``(B, in_channels, *S)``.

    Loss (the beta-VAE objective divided by the number of image elements ``N = C * prod(S)``, so that ``beta``
    means the same at every image size)::

        loss = recon + beta * kl / N  [+ contrastive_weight * contrastive]

    with ``recon`` the mean squared error over the image, ``kl`` = ``kl_divergence(mu, logvar)`` (nats per image:
    sum over the latent map, mean over the batch) and ``contrastive`` NT-Xent between the latent mean maps of two
    views, each through a ``ProjectionHead`` applied per position and then averaged (averaging the means directly
    gives nearly identical vectors for every image after the encoder's instance norm; see
    ``medssl.networks.heads``). ``beta = 1`` is the ELBO of a Gaussian decoder with variance 1/2; smaller values
    trade prior fit for reconstruction detail, which is what a segmentation encoder needs.

    Args:
        spatial_dims, in_channels, channels, encoder, views: see ``PretrainMethod``.
        latent_channels: channels of the latent map.
        beta: weight of the KL term (see above), >= 0.
        contrastive_weight: weight of the NT-Xent term, >= 0; 0 trains a plain VAE on one view per image, > 0
            reconstructs both views and adds the contrastive term.
        temperature: NT-Xent temperature.
        hidden_dim: hidden width of the contrastive projection head.
        projection_dim: output size of the contrastive projection head.

    Attributes:
        to_posterior: 1x1 conv, deepest map -> ``2 * latent_channels`` (mean, log-variance).
        decoder: the ``ReconstructionDecoder``. criterion: the ``NTXentLoss``.
        projector: the contrastive ``ProjectionHead`` (``None`` when ``contrastive_weight == 0``).
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        latent_channels: int = 32,
        beta: float = 0.1,
        contrastive_weight: float = 0.0,
        temperature: float = 0.1,
        hidden_dim: int = 512,
        projection_dim: int = 128,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=views)
        if latent_channels < 1:
            raise ValueError(f"latent_channels must be >= 1, got {latent_channels}")
        if beta < 0 or contrastive_weight < 0:
            raise ValueError(f"beta and contrastive_weight must be >= 0, got {beta} and {contrastive_weight}")
        self.latent_channels = int(latent_channels)
        self.beta, self.contrastive_weight = float(beta), float(contrastive_weight)
        self.to_posterior = layers.conv(self.spatial_dims, self.encoder.out_channels, 2 * latent_channels, 1)
        self.decoder = ReconstructionDecoder.for_encoder(self.encoder, latent_channels)
        self.criterion = NTXentLoss(temperature)
        # Only built when used, so that every parameter of a plain VAE trains.
        self.projector = ProjectionHead(latent_channels, hidden_dim, projection_dim) if contrastive_weight > 0 else None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and log-variance of images ``(B, in_channels, *S)``, each
        ``(B, latent_channels, *S / strides[-1])``."""
        mu, logvar = self.to_posterior(self.encoder(x)[-1]).chunk(2, dim=1)
        return mu, logvar.clamp(*_LOGVAR_RANGE)

    def reparameterise(self, mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A sample ``mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``; differentiable in ``mu`` and ``logvar``."""
        where = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=where, dtype=mu.dtype).to(mu.device)
        return mu + (0.5 * logvar).exp() * eps

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss", "recon", "kl"}`` (plus ``"contrastive"`` when ``contrastive_weight > 0``) for a batch
        ``(B, in_channels, *S)``."""
        view_a, view_b = self.make_views(batch, generator)
        images = torch.cat((view_a, view_b)) if self.projector is not None else view_a
        mu, logvar = self.encode(images)
        reconstruction = self.decoder(self.reparameterise(mu, logvar, generator))
        recon = F.mse_loss(reconstruction, images)
        kl = kl_divergence(mu, logvar)
        loss = recon + self.beta * kl / images[0].numel()
        losses = {"recon": recon.detach(), "kl": kl.detach()}
        if self.projector is not None:
            mean_a, mean_b = self.projector.forward_map(mu).chunk(2)
            nt_xent = self.criterion(mean_a, mean_b)
            loss = loss + self.contrastive_weight * nt_xent
            losses["contrastive"] = nt_xent.detach()
        return {"loss": loss, **losses}
