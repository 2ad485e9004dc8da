"""medssl.superres: MR super-resolution data: low-resolution inputs made from high-resolution images.

``degradation`` holds the degradations (antialiased bicubic as in the SR literature; k-space truncation as a
scanner's lower resolution), ``make_pair``, the split by volume and the on-the-fly slice sampler; ``volumes3d``
the 3D option (3D patch pairs, tiled whole-volume super-resolution). The network is
``medssl.networks.seran``; PSNR and SSIM are ``medssl.metrics.image_quality``.

The trainable systems (registry kind ``super-resolution``: seran, edsr, rcan) are in ``system``; ``train(data,
out, ...)`` (``workflow``) trains one through the project's run workflow and ``apply(model, input, out, ...)``
(``applying``) super-resolves volumes with the right geometry. Those two, and the system classes, are imported on
first use (they need the training engine).
"""

from typing import Any

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
from medssl.superres.volumes3d import ValidationPatches, VolumePatchSampler, super_resolve_volume

_LAZY = {
    "train": "medssl.superres.workflow",
    "SuperResConfig": "medssl.superres.workflow",
    "apply": "medssl.superres.applying",
    "load_model": "medssl.superres.applying",
    "super_resolve": "medssl.superres.applying",
    "super_resolved_meta": "medssl.superres.applying",
    "SuperResolution": "medssl.superres.system",
}


def __getattr__(name: str) -> Any:
    """The training and applying API, imported on first use (module-level ``__getattr__``, PEP 562)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MODES",
    "Mode",
    "SliceSampler",
    "SuperResConfig",
    "SuperResolution",
    "ValidationPatches",
    "VolumePatchSampler",
    "VolumeSplit",
    "apply",
    "bicubic_downsample",
    "crop_to_multiple",
    "degrade",
    "foreground",
    "kspace_truncate",
    "load_model",
    "make_pair",
    "split_volumes",
    "super_resolve",
    "super_resolve_volume",
    "super_resolved_meta",
    "train",
]
