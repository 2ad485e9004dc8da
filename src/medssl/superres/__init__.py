"""medssl.superres: MR super-resolution data: low-resolution inputs made from high-resolution images.

``degradation`` holds the degradations (antialiased bicubic as in the SR literature; k-space truncation as a
scanner's lower resolution), ``make_pair``, the split by volume and the on-the-fly slice sampler. The network is
``medssl.networks.seran``; PSNR and SSIM are ``medssl.metrics.image_quality``.
"""

from medssl.superres.degradation import (
    MODES,
    Mode,
    SliceSampler,
    VolumeSplit,
    bicubic_downsample,
    crop_to_multiple,
    degrade,
    foreground,
    kspace_truncate,
    make_pair,
    split_volumes,
)

__all__ = [
    "MODES",
    "Mode",
    "SliceSampler",
    "VolumeSplit",
    "bicubic_downsample",
    "crop_to_multiple",
    "degrade",
    "foreground",
    "kspace_truncate",
    "make_pair",
    "split_volumes",
]
