"""Masked image modelling on a convolutional encoder (SparK, Tian et al. ICLR 2023, https://arxiv.org/abs/2301.03580;
the masked autoencoder of the nnssl study, Wald et al. 2025, https://arxiv.org/abs/2503.11463).

Random blocks of the input are replaced by a learned token, and every conv unit of the encoder has its output
multiplied by the visible mask at its own scale, so masked positions stay empty through the encoder (SparK's trick
without a sparse-convolution library). A light decoder reconstructs the image from the deepest map, and the loss is
the MSE on the masked voxels only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import Encoder
from medssl.networks.decoders import ReconstructionDecoder
from medssl.networks.layers import ConvNormAct
from medssl.pretrain.base import PretrainMethod, ViewFn
from medssl.pretrain.registry import register

__all__ = ["MIM", "MIM_PRESETS", "block_normalize", "downsample_visible", "masked_mse", "sample_block_mask"]

# block_size None: the encoder's total stride (one deepest-map cell per block, as in SparK).
MIM_PRESETS: dict[str, dict[str, float | int | None]] = {
    "small": {"mask_ratio": 0.6, "block_size": None},
    "nnssl": {"mask_ratio": 0.75, "block_size": 16},
}
# The nnssl recipe's encoder widths (nnU-Net's plain encoder; the study's ResEnc-L adds residual blocks).
_NNSSL_CHANNELS = (32, 64, 128, 256, 320)


def sample_block_mask(
    shape: Sequence[int],
    block_size: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Visible mask ``(B, 1, *S)`` (True = visible) for images ``(B, C, *S)``: in every image exactly
    ``round(ratio * n)`` of the ``n`` cubes of side ``block_size`` that tile it are masked, clamped to ``[1, n - 1]``
    when ``n > 1`` so that the loss has voxels and the encoder has context. Drawn on the generator's device, built
    at full size on ``device`` (default: the same).

    Raises:
        MedsslError: a spatial size is not divisible by ``block_size``.
    """
    batch, spatial = shape[0], tuple(shape[2:])
    if any(size % block_size for size in spatial):
        raise MedsslError(
            f"image size {spatial} is not divisible by the MIM block_size {block_size}; change the patch size "
            "or block_size"
        )
    grid = [size // block_size for size in spatial]
    blocks = math.prod(grid)
    masked = round(ratio * blocks)
    if blocks > 1:
        masked = min(max(masked, 1), blocks - 1)
    where = generator.device if generator is not None else None
    order = torch.rand((batch, blocks), generator=generator, device=where).argsort(dim=1)
    visible = order >= masked  # a random permutation: the first `masked` ranks are masked
    mask = visible.view(batch, 1, *grid).to(device)
    for axis in range(2, 2 + len(spatial)):
        mask = mask.repeat_interleave(block_size, dim=axis)
    return mask


def downsample_visible(visible: Tensor, spatial: Sequence[int]) -> Tensor:
    """The visible mask ``(B, 1, *S)`` at a coarser size ``spatial``: a cell is visible if any voxel in it is,
    masked only when it is masked entirely (exact when the block size is a multiple of the cell size)."""
    if tuple(visible.shape[2:]) == tuple(spatial):
        return visible
    pool = F.adaptive_max_pool2d if visible.ndim == 4 else F.adaptive_max_pool3d
    return pool(visible.float(), tuple(spatial)) > 0


def block_normalize(x: Tensor, block_size: int, eps: float = 1e-6) -> Tensor:
    """``x (B, C, *S)`` with every cube of side ``block_size`` normalised per channel to zero mean and unit
    variance (population variance, ``eps`` added; MAE's ``norm_pix_loss`` target); ``S`` divisible by it."""
    batch, ch, spatial = x.shape[0], x.shape[1], x.shape[2:]
    grid = [size // block_size for size in spatial]
    split = [v for g in grid for v in (g, block_size)]
    dims = len(spatial)
    # (B, C, g1, b, g2, b, ...) -> (B, C, g1, g2, ..., b, b, ...)
    perm = [0, 1, *range(2, 2 + 2 * dims, 2), *range(3, 3 + 2 * dims, 2)]
    blocks = x.reshape(batch, ch, *split).permute(perm)
    flat = blocks.reshape(batch, ch, *grid, -1)
    mean = flat.mean(-1, keepdim=True)
    var = flat.var(-1, keepdim=True, correction=0)
    normed = ((flat - mean) / (var + eps).sqrt()).reshape(blocks.shape)
    inverse = [perm.index(i) for i in range(len(perm))]
    return normed.permute(inverse).reshape(x.shape)


def masked_mse(prediction: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    """Mean squared error over the masked voxels only (every channel): ``visible (B, 1, *S)`` is True where the
    voxel was seen, and those voxels do not count."""
    hidden = (~visible).to(prediction.dtype).expand_as(prediction)
    return ((prediction - target).square() * hidden).sum() / hidden.sum().clamp_min(1.0)


@register("mim")
class MIM(PretrainMethod):
    """Masked image modelling: reconstruct randomly masked blocks of a view from its visible part.

    One step: a view ``x`` (the first of ``views``); a visible mask of blocks (``sample_block_mask``); masked blocks
    set to a learned token; the encoder runs with every ``ConvNormAct`` unit's output multiplied by the mask at its
    scale (``downsample_visible``), so masked positions stay zero at every scale and no sparse convolution is
    needed; masked cells of the deepest map get a second learned token (SparK's densifying) and a
    ``ReconstructionDecoder`` (no skips, discarded after pretraining) decodes the image; loss ``masked_mse`` against
    ``x`` or its per-block normalised copy. The ``nnssl`` preset sets the nnssl recipe's 75 % masking and 16-voxel
    blocks (and the nnU-Net encoder widths when none are given); its optimiser (SGD 1e-2, Nesterov 0.99, poly
    schedule, 160^3 patches) is the run's setting, not a method's, and is left to the pretraining config.
    Instance norm sees the zeros of masked positions in its statistics (SparK uses a masked norm instead).

    Args:
        spatial_dims, in_channels, encoder, views: see ``PretrainMethod``.
        channels: widths of the U-Net encoder (default: ``DEFAULT_CHANNELS``; ``nnssl`` preset: 32 to 320;
            ``medssl pretrain`` always passes the plan's widths).
        preset: ``"small"`` (CPU: 60 % masking, blocks of the encoder's total stride) or ``"nnssl"`` (75 %, 16).
        mask_ratio: fraction of the blocks masked in each image, in (0, 1) (default: the preset's).
        block_size: side of the masked cubes in voxels (default: the preset's; ``small``: the encoder's total
            stride, so every deepest-map cell is either seen or masked); image sizes must be divisible by it.
        normalize_target: regress each block normalised to zero mean and unit variance (MAE's per-patch target).

    Attributes:
        mask_token: learned value ``(1, in_channels, 1, ...)`` of masked input voxels.
        feature_token: learned value ``(1, out_channels, 1, ...)`` of masked deepest-map cells, for the decoder.
        decoder: the ``ReconstructionDecoder`` from the deepest encoder map.
        units: the encoder's ``ConvNormAct`` units whose outputs are masked (a plain list: not extra state).
        preset, mask_ratio, block_size, normalize_target: the settings in effect.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: ViewFn | None = None,
        preset: Literal["small", "nnssl"] = "small",
        mask_ratio: float | None = None,
        block_size: int | None = None,
        normalize_target: bool = False,
    ) -> None:
        if preset not in MIM_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(MIM_PRESETS)}, got {preset!r}")
        settings = MIM_PRESETS[preset]
        if preset == "nnssl" and encoder is None and channels is None:
            channels = _NNSSL_CHANNELS
        super().__init__(spatial_dims, in_channels, channels, encoder=encoder, views=views)
        ratio = float(settings["mask_ratio"] if mask_ratio is None else mask_ratio)  # type: ignore[arg-type]
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {ratio}")
        block = settings["block_size"] if block_size is None else block_size
        block = self.encoder.required_divisor if block is None else int(block)
        if block < 1:
            raise ValueError(f"block_size must be >= 1, got {block}")
        self.units = [m for m in self.encoder.modules() if isinstance(m, ConvNormAct)]
        if not self.units:
            raise ValueError(f"mim masks the outputs of ConvNormAct units; {type(self.encoder).__name__} has none")
        self.preset = preset
        self.mask_ratio, self.block_size, self.normalize_target = ratio, block, bool(normalize_target)
        ones = [1] * self.spatial_dims
        self.mask_token = nn.Parameter(torch.zeros(1, self.in_channels, *ones))
        self.feature_token = nn.Parameter(torch.zeros(1, self.encoder.out_channels, *ones))
        self.decoder = ReconstructionDecoder.for_encoder(self.encoder)

    def sample_mask(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A visible mask ``(B, 1, *S)`` for images ``x (B, C, *S)`` (see ``sample_block_mask``), on ``x``'s device."""
        return sample_block_mask(x.shape, self.block_size, self.mask_ratio, generator, x.device)

    @contextlib.contextmanager
    def masking(self, visible: Tensor) -> Iterator[None]:
        """Within the block, every ``ConvNormAct`` unit of the encoder multiplies its output by ``visible`` at the
        output's scale (hooks are removed on exit, so the exported encoder carries none)."""

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            return output * downsample_visible(visible, output.shape[2:]).to(output.dtype)

        # prepended: any other hook on a unit sees the masked output, as the next layer does
        handles = [unit.register_forward_hook(hook, prepend=True) for unit in self.units]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def encode(self, x: Tensor, visible: Tensor) -> list[Tensor]:
        """Encoder maps of ``x`` with the masked blocks set to ``mask_token`` and kept masked at every scale."""
        filled = torch.where(visible, x, self.mask_token.to(x.dtype))
        with self.masking(visible):
            return self.encoder(filled)

    def reconstruct(self, x: Tensor, visible: Tensor) -> Tensor:
        """The decoder's image ``(B, in_channels, *S)`` from the masked encoding of ``x`` (``visible (B, 1, *S)``)."""
        deepest = self.encode(x, visible)[-1]
        seen = downsample_visible(visible, deepest.shape[2:])
        out: Tensor = self.decoder(torch.where(seen, deepest, self.feature_token.to(deepest.dtype)))
        return out

    def target(self, x: Tensor) -> Tensor:
        """What the decoder regresses: ``x``, or its per-block normalised copy with ``normalize_target``."""
        return block_normalize(x, self.block_size) if self.normalize_target else x

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": masked_mse}`` of the reconstruction of one view per image of ``batch (B, in_channels, *S)``,
        on its masked voxels only."""
        x, _ = self.make_views(batch, generator)
        visible = self.sample_mask(x, generator)
        return {"loss": masked_mse(self.reconstruct(x, visible), self.target(x), visible)}
