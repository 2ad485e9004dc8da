"""Load a medssl encoder file into MONAI's ``DynUNet``, the nnU-Net-shaped network of MONAI.

``UNetEncoder`` and ``DynUNet``'s encoder path are the same network: per scale two ``conv 3 - instance norm -
leaky ReLU (0.01)`` units, stride 1 at the first scale and 2 after, convolutions without bias. Only the parameter
names differ: ``stages.0`` is ``input_block``, the middle stages are ``downsamples.{s-1}`` and the last one is
``bottleneck``. Build the ``DynUNet`` with ``dynunet_arguments`` (it sets ``norm_name=("instance", {"affine":
True})``, because medssl's instance norms learn a scale and shift) and load ``dynunet_encoder_state`` with
``strict=False``: the decoder keeps its initialisation, as in ``medssl finetune --init``.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor

from medssl.errors import MedsslError
from medssl.networks.encoders import UNetEncoder
from medssl.networks.weights import ENCODER_FORMAT, load_checkpoint_file

__all__ = ["dynunet_arguments", "dynunet_encoder_state"]


def dynunet_arguments(path: str | os.PathLike[str], out_channels: int) -> dict[str, Any]:
    """Keyword arguments of ``monai.networks.nets.DynUNet`` whose encoder matches the encoder file at ``path``.

    Args:
        path: a medssl encoder file (``medssl pretrain``'s ``encoder.pt``) of a ``UNetEncoder``.
        out_channels: classes of the segmentation head.

    Raises:
        MedsslError: the file is not a ``UNetEncoder`` file, or has fewer than 2 scales (DynUNet needs 2).
    """
    payload = _unet_encoder_payload(path)
    n, dims = len(payload["channels"]), payload["spatial_dims"]
    return {
        "spatial_dims": dims,
        "in_channels": payload["in_channels"],
        "out_channels": out_channels,
        "kernel_size": [3] * n,
        "strides": [1] + [2] * (n - 1),
        "upsample_kernel_size": [2] * (n - 1),
        "filters": list(payload["channels"]),
        "norm_name": ("instance", {"affine": True}),
        "act_name": ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
    }


def dynunet_encoder_state(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The encoder file's tensors renamed to ``DynUNet`` parameter names (load with ``strict=False``)."""
    payload = _unet_encoder_payload(path)
    last = len(payload["channels"]) - 1
    state: dict[str, Tensor] = {}
    for key, value in payload["state_dict"].items():
        parts = key.split(".")  # stages.<scale>.<unit>.<conv|norm>.<weight|bias>
        if len(parts) != 5 or parts[0] != "stages" or parts[3] not in ("conv", "norm"):
            raise MedsslError(f"unexpected tensor {key!r} in {path}: not a UNetEncoder state")
        scale, unit, kind, name = int(parts[1]), int(parts[2]) + 1, parts[3], parts[4]
        block = "input_block" if scale == 0 else "bottleneck" if scale == last else f"downsamples.{scale - 1}"
        state[f"{block}.{kind}{unit}.conv.{name}" if kind == "conv" else f"{block}.norm{unit}.{name}"] = value
    return state


def _unet_encoder_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    payload = load_checkpoint_file(path)
    if payload.get("format") != ENCODER_FORMAT:
        raise MedsslError(f"{path} is not a medssl encoder file (write one with `medssl pretrain`)")
    if payload.get("encoder") != UNetEncoder.__name__:
        raise MedsslError(f"{path} holds a {payload.get('encoder')} encoder; only UNetEncoder maps onto DynUNet")
    if len(payload["channels"]) < 2:
        raise MedsslError(f"{path} has one scale; DynUNet needs at least 2")
    return payload
