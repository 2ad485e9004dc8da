"""Super-resolution systems (registry kind ``super-resolution``): SERAN and its baselines, trained on slice pairs.

``SuperResolution`` holds a ``medssl.networks.seran.SERANet`` and trains it with the L1 loss between the network's
output for the low-resolution input (``batch["image"]``) and the high-resolution truth (``batch["high_res"]``):
the loss of EDSR, RCAN and SERAN (L1 converges to sharper images than L2 in the SR literature). Registered names:

- ``seran``: SERAN attention in every residual block (the paper's network, at the chosen size);
- ``edsr``: the same trunk without attention (the plain residual CNN of the same depth and width);
- ``rcan``: RCAN's channel attention in its place.

Intensities (one rule for training, validation, applying and every metric, see ``normalise``): each volume is
clipped to [its 0.5th percentile, the 99.5th percentile of its foreground] and scaled linearly to [0, 1]. PSNR
and SSIM are computed on that [0, 1] range (``data_range = 1``) after the network's output is clipped to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.metrics.image_quality import psnr
from medssl.networks.seran import SERANet
from medssl.registry import register
from medssl.superres.degradation import foreground
from medssl.systems.base import IMAGE, Batch, System

__all__ = [
    "DATA_RANGE",
    "EDSR",
    "HIGH_PERCENTILE",
    "LOW_PERCENTILE",
    "RCAN",
    "SERAN",
    "SYSTEMS",
    "SuperResolution",
    "denormalise",
    "intensity_window",
    "normalise",
]

HIGH_RES = "high_res"
LOW_PERCENTILE = 0.5  # of the whole volume (its background, for MR magnitude images)
HIGH_PERCENTILE = 99.5  # of the foreground: a few bright vessels or artefacts do not set the scale
DATA_RANGE = 1.0  # the span of the normalised intensities: PSNR's peak and SSIM's data_range

# registered name -> the trunk's attention
SYSTEMS: dict[str, str] = {"seran": "seran", "edsr": "none", "rcan": "rcan"}


def intensity_window(volume: npt.ArrayLike) -> tuple[float, float]:
    """``(low, high)``: the volume's 0.5th percentile and its foreground's 99.5th (``foreground`` threshold).

    Raises:
        MedsslError: a constant volume (nothing to scale).
    """
    array = np.asarray(volume, dtype=np.float64)
    mask = foreground(array)
    low = float(np.percentile(array, LOW_PERCENTILE))
    high = float(np.percentile(array[mask], HIGH_PERCENTILE)) if mask.any() else float(array.max())
    if not high > low:
        raise MedsslError("a volume is constant (or nearly so): there is nothing to super-resolve")
    return low, high


def normalise(volume: npt.ArrayLike, window: tuple[float, float] | None = None) -> npt.NDArray[np.float32]:
    """Clip to ``window`` (default ``intensity_window(volume)``) and scale it to [0, 1], float32."""
    low, high = intensity_window(volume) if window is None else window
    array = (np.asarray(volume, dtype=np.float64) - low) / (high - low)
    return np.clip(array, 0.0, 1.0).astype(np.float32)


def denormalise(array: npt.ArrayLike, window: tuple[float, float]) -> npt.NDArray[np.float32]:
    """The inverse of ``normalise`` on [0, 1]: back to the input's units (clipped values stay at the window)."""
    low, high = window
    return (np.asarray(array, dtype=np.float64) * (high - low) + low).astype(np.float32)


class SuperResolution(System):
    """A SERANet trained with the L1 loss on (low-resolution, high-resolution) slice pairs; validation PSNR.

    Batches: ``image`` the low-resolution input ``(B, 1, h, w)`` and ``high_res`` the truth ``(B, 1, s h, s w)``,
    both normalised to [0, 1] (``normalise``). Validation batches are one whole slice each. With
    ``spatial_dims=3`` the same on 3D patches, ``(B, 1, d, h, w)`` and ``(B, 1, s d, s h, s w)``.
    """

    attention = "seran"

    def __init__(
        self,
        scale: int,
        *,
        width: int = 32,
        groups: int = 2,
        blocks: int = 4,
        descriptors: int = 8,
        input_skip: bool = False,
        in_channels: int = 1,
        spatial_dims: int = 2,
    ) -> None:
        """Build the network (see ``SERANet`` for the options; the attention is the registered name's;
        ``spatial_dims=3`` super-resolves 3D patches along all three axes).

        Raises:
            MedsslError: options ``SERANet`` refuses.
        """
        super().__init__()
        self.scale = scale
        self.network = SERANet(
            scale,
            in_channels=in_channels,
            width=width,
            groups=groups,
            blocks=blocks,
            descriptors=descriptors,
            attention=self.attention,
            input_skip=input_skip,
            spatial_dims=spatial_dims,
        )

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``{"loss": mean |SERANet(image) - high_res|}``."""
        return {"loss": F.l1_loss(self.network(batch[IMAGE]), batch[HIGH_RES])}  # type: ignore[literal-required]

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """PSNR (dB, on [0, 1]) of the clipped output of each slice (or 3D patch), averaged over the batch."""
        with torch.no_grad():
            sr = self.predict(batch[IMAGE]).cpu().numpy()
        truth = batch[HIGH_RES].cpu().numpy()  # type: ignore[literal-required]
        scores = [psnr(p, t, DATA_RANGE) for p, t in zip(sr, truth, strict=True)]
        return {"psnr": torch.tensor(float(np.mean(scores)))}

    def predict(self, x: Tensor) -> Tensor:
        """The super-resolved images, clipped to the normalised range [0, 1]."""
        return self.network(x).clamp(0.0, DATA_RANGE)

    def export(self) -> dict[str, nn.Module]:
        """``{"network": the SERANet}``."""
        return {"network": self.network}


@register("super-resolution", "seran")
class SERAN(SuperResolution):
    """SERAN: squeeze-and-excitation reasoning attention in an RCAN-style trunk, L1 loss (Zhang et al. 2021)."""

    attention = "seran"


@register("super-resolution", "edsr")
class EDSR(SuperResolution):
    """The plain residual CNN (EDSR-like) of the same depth and width, without attention, L1 loss."""

    attention = "none"


@register("super-resolution", "rcan")
class RCAN(SuperResolution):
    """The same trunk with RCAN's channel attention in every residual block, L1 loss."""

    attention = "rcan"


def build(name: str, scale: int, options: dict[str, Any], spatial_dims: int = 2) -> SuperResolution:
    """The registered system ``name`` at ``scale`` with ``options`` (``SuperResolution`` keyword arguments), on
    2D slices or, with ``spatial_dims=3``, 3D patches.

    Raises:
        MedsslError: an unknown name (listing the known ones) or options the network refuses.
    """
    from medssl import registry

    cls = registry.get("super-resolution", name)
    try:
        system = cls(scale, spatial_dims=spatial_dims, **options)
    except TypeError as exc:
        raise MedsslError(f"cannot build super-resolution system {name!r}: {exc}") from None
    assert isinstance(system, SuperResolution)
    return system
