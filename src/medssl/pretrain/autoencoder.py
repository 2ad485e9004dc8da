"""Denoising autoencoder pretraining: reconstruct a clean image from a noisy, partly masked-out copy
(METHODS.md section 3; denoising criterion of Vincent et al. 2008, block masking as in Models Genesis' in-painting,
https://arxiv.org/abs/1908.06912)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.networks import Encoder
from medssl.networks.decoders import ReconstructionDecoder
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.registry import register

__all__ = ["DenoisingAutoencoder", "random_block_mask"]


def random_block_mask(
    shape: Sequence[int], block_size: int, ratio: float, generator: torch.Generator | None = None
) -> Tensor:
    """Boolean mask ``(B, 1, *S)`` for images of shape ``(B, C, *S)``: True on a random ``ratio`` of the cubes of
    side ``block_size`` that tile the image (each block independently; edge blocks are cut at the border)."""
    batch, spatial = shape[0], tuple(shape[2:])
    grid = [-(-size // block_size) for size in spatial]
    where = generator.device if generator is not None else None
    mask = torch.rand((batch, 1, *grid), generator=generator, device=where) < ratio
    for axis, size in enumerate(spatial, start=2):
        mask = mask.repeat_interleave(block_size, dim=axis).narrow(axis, 0, size)
    return mask


@register("autoencoder")
class DenoisingAutoencoder(PretrainMethod):
    """Corrupt a view (Gaussian noise + masked-out blocks), encode it, decode the deepest map, regress the clean view.

    The decoder has no skip connections (see ``ReconstructionDecoder``), so the encoder cannot pass the input
    through its shallow scales: restoring masked blocks needs context, which only deep features carry.

    Args:
        spatial_dims, in_channels, channels, encoder, views: see ``PretrainMethod``.
        noise_std: noise standard deviation relative to each image's standard deviation, >= 0.
        mask_ratio: probability that a block is masked out (filled with the image's mean), in [0, 1).
        mask_block: block side in pixels/voxels; default the encoder's deepest stride (one deepest-map cell).

    Attributes:
        decoder: the ``ReconstructionDecoder`` from the deepest encoder map.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        noise_std: float = 0.1,
        mask_ratio: float = 0.3,
        mask_block: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=views)
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if mask_block is not None and mask_block < 1:
            raise ValueError(f"mask_block must be >= 1, got {mask_block}")
        self.noise_std, self.mask_ratio = float(noise_std), float(mask_ratio)
        self.mask_block = self.encoder.required_divisor if mask_block is None else int(mask_block)
        self.decoder = ReconstructionDecoder.for_encoder(self.encoder)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy copy of ``x (B, C, *S)`` with random blocks set to each image's mean; same shape."""
        where = generator.device if generator is not None else x.device
        flat = x.flatten(1)
        scale = (flat.std(1, correction=0) * self.noise_std).view(-1, *([1] * (x.ndim - 1)))
        noisy = x + scale * torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
        mask = random_block_mask(x.shape, self.mask_block, self.mask_ratio, generator).to(x.device)
        return torch.where(mask, flat.mean(1).view_as(scale), noisy)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode images ``(B, in_channels, *S)`` from the deepest encoder map only: ``(B, in_channels, *S)``."""
        out: Tensor = self.decoder(self.encoder(x)[-1])
        return out

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": MSE}`` between the reconstruction of a corrupted view and the clean view, for a batch
        ``(B, in_channels, *S)`` (one view per image)."""
        clean, _ = self.make_views(batch, generator)
        return {"loss": F.mse_loss(self.reconstruct(self.corrupt(clean, generator)), clean)}
