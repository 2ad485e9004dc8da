"""A medssl pretrained encoder as nnU-Net v2 ``-pretrained_weights`` (``nnUNetv2_train D C F -pretrained_weights X``).

What nnU-Net reads (nnunetv2 2.8.1, ``nnunetv2/run/load_pretrained_weights.py``): ``torch.load(X)["network_weights"]``,
a state dict that must hold EVERY key of the network built from the plans, with the same shape, except the keys
containing ``.seg_layers.``; a missing key or another shape is an assertion error. An encoder alone therefore does
not load: the file written here also carries the decoder, freshly initialised the way nnU-Net initialises it (He
normal with slope 1e-2, zero biases, norms at 1 and 0), so fine-tuning starts from the pretrained encoder and a new
decoder, as ``medssl finetune --init`` does.

The network (dynamic-network-architectures 0.4.4: ``architectures/unet.py`` ``PlainConvUNet``,
``building_blocks/plain_conv_encoder.py``, ``simple_conv_blocks.py``, ``unet_decoder.py``): per stage ``s`` a
``StackedConvBlocks`` at ``encoder.stages.{s}.0``, whose ``convs.{u}`` are ``conv - [dropout] - norm - nonlin``
units; each unit's conv and norm are in the state dict twice (``convs.{u}.conv`` and ``convs.{u}.all_modules.0``,
``convs.{u}.norm`` and ``convs.{u}.all_modules.1``, or ``.2`` after a dropout), and the decoder holds the encoder,
so every encoder tensor appears once more under ``decoder.encoder.``. The decoder has ``decoder.transpconvs.{i}``
(kernel = stride) and ``decoder.stages.{i}.convs.{u}``, deepest first.

medssl's ``UNetEncoder`` is the same encoder when the plans' configuration has: ``PlainConvUNet``; kernel 3 on
every axis of every stage; strides 1 at the first stage and 2 on every axis after; 2 convs per stage;
``InstanceNorm`` with ``affine`` and eps 1e-5; ``LeakyReLU`` (slope 0.01) after the norm. nnU-Net's convs have a
bias (``conv_bias: true``) and medssl's do not: a per-channel constant added before an instance norm is removed by
the norm's mean, so a zero bias is exact. nnU-Net's anisotropic plans (kernels ``[1, 3, 3]``, strides ``[1, 2, 2]``)
and ``ResidualEncoderUNet`` plans cannot be produced by a medssl encoder and are refused.

Axes: medssl arrays are in the file's index order ``(i, j, k)``; nnU-Net's readers (``SimpleITKIO``,
``NibabelIO``) give ``(k, j, i)`` and the preprocessing then applies the plans' ``transpose_forward``. The kernels are
permuted so that each filter sees the same anatomy axis as in pretraining. 2D pictures are ``(rows, columns)`` in
both, so a 2D configuration keeps the axes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks.encoders import UNetEncoder
from medssl.networks.weights import ENCODER_FORMAT, load_checkpoint_file

__all__ = [
    "PLAIN_CONV_UNET",
    "NnunetArchitecture",
    "export_nnunet_weights",
    "medssl_pretrain_options",
    "nnunet_state_dict",
    "read_plans",
]

PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
_INIT_SLOPE = 1e-2  # nnU-Net's InitWeights_He(1e-2)
_NORM_EPS = 1e-5  # torch's default, which medssl's instance norms use
_LEAKY_SLOPE = 0.01  # medssl's leakyrelu and torch's LeakyReLU default


@dataclass(frozen=True)
class NnunetArchitecture:
    """One configuration of an nnU-Net v2 plans file, as far as the network's tensors depend on it.

    Attributes:
        configuration: its name in the plans (``2d``, ``3d_fullres``, ...).
        arch_kwargs: the resolved ``architecture.arch_kwargs`` (class paths as strings).
        network_class: ``architecture.network_class_name``.
        spatial_dims: 2 or 3 (from the kernel sizes).
        in_channels: image channels (from ``foreground_intensity_properties_per_channel``; None when absent).
        transpose_forward: the plans' axis order of the preprocessed data.
        patch_size: the configuration's patch size (nnU-Net's axes).
        spacing: the configuration's target spacing (nnU-Net's axes).
    """

    configuration: str
    arch_kwargs: dict[str, Any]
    network_class: str
    spatial_dims: int
    in_channels: int | None
    transpose_forward: tuple[int, ...]
    patch_size: tuple[int, ...]
    spacing: tuple[float, ...]

    @property
    def features(self) -> tuple[int, ...]:
        """``features_per_stage``: the width of each stage, finest first."""
        return tuple(int(f) for f in self.arch_kwargs["features_per_stage"])

    def per_stage(self, name: str) -> list[Any]:
        """An ``arch_kwargs`` entry expanded to one value per stage (nnU-Net allows a scalar for all)."""
        value = self.arch_kwargs[name]
        n = len(self.features) - (1 if name == "n_conv_per_stage_decoder" else 0)
        return list(value) if isinstance(value, list | tuple) else [value] * n

    def axis_list(self, name: str) -> list[tuple[int, ...]]:
        """``kernel_sizes`` or ``strides`` as one tuple per stage with one entry per axis."""
        return [tuple([v] * self.spatial_dims if isinstance(v, int) else v) for v in self.per_stage(name)]

    @property
    def norm_index(self) -> int:
        """Index of the norm inside a unit's ``all_modules`` (the dropout, when there is one, comes first)."""
        return 2 if self.arch_kwargs.get("dropout_op") else 1

    def default_axes(self) -> tuple[int, ...]:
        """For each axis of nnU-Net's network, the medssl axis it is (see the module docstring)."""
        if self.spatial_dims == 2:
            return (0, 1)
        return tuple(self.spatial_dims - 1 - t for t in self.transpose_forward)


def _load_plans(plans: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(plans, dict):
        return plans
    try:
        loaded = json.loads(Path(plans).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MedsslError(f"cannot read nnU-Net plans {plans}: {exc}") from None
    if not isinstance(loaded, dict) or "configurations" not in loaded:
        raise MedsslError(f"{plans} is not an nnU-Net v2 plans file (no 'configurations')")
    return loaded


def _resolve(configs: dict[str, Any], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The configuration with its ``inherits_from`` parents merged in (the child's entries win)."""
    if name not in configs:
        raise MedsslError(f"the nnU-Net plans have no configuration {name!r}; they have: {', '.join(configs)}")
    if name in seen:
        raise MedsslError(f"nnU-Net plans: configurations inherit in a circle: {' -> '.join((*seen, name))}")
    config = dict(configs[name])
    parent = config.get("inherits_from")
    return {**_resolve(configs, parent, (*seen, name)), **config} if parent else config


def read_plans(plans: str | os.PathLike[str] | dict[str, Any], configuration: str) -> NnunetArchitecture:
    """The network description of ``configuration`` in an nnU-Net v2 plans file (``nnUNetPlans.json``) or dict.

    Raises:
        MedsslError: unreadable, no such configuration, or a v1-style configuration without ``architecture``.
    """
    data = _load_plans(plans)
    config = _resolve(data["configurations"], configuration)
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "arch_kwargs" not in arch:
        raise MedsslError(
            f"nnU-Net configuration {configuration!r} has no 'architecture' entry (plans from nnU-Net < 2.3); "
            "re-plan with a current nnU-Net"
        )
    kwargs = dict(arch["arch_kwargs"])
    channels = data.get("foreground_intensity_properties_per_channel")
    return NnunetArchitecture(
        configuration=configuration,
        arch_kwargs=kwargs,
        network_class=str(arch.get("network_class_name", "")),
        spatial_dims=len(config.get("patch_size") or kwargs["kernel_sizes"][0]),
        in_channels=len(channels) if isinstance(channels, dict) else None,
        transpose_forward=tuple(data.get("transpose_forward", range(3))),
        patch_size=tuple(int(p) for p in config.get("patch_size", ())),
        spacing=tuple(float(s) for s in config.get("spacing", ())),
    )


def _differences(arch: NnunetArchitecture) -> list[str]:
    """What in ``arch`` a medssl ``UNetEncoder`` cannot be (empty: it can be configured identically)."""
    k, d = arch.arch_kwargs, arch.spatial_dims
    found: list[str] = []
    if arch.network_class.rsplit(".", 1)[-1] != "PlainConvUNet":
        found.append(f"network {arch.network_class or '?'} (only PlainConvUNet maps)")
    if str(k.get("conv_op", "")).rsplit(".", 1)[-1] != f"Conv{d}d":
        found.append(f"conv_op {k.get('conv_op')} (need Conv{d}d)")
    if any(kernel != (3,) * d for kernel in arch.axis_list("kernel_sizes")):
        found.append(f"kernel_sizes {arch.per_stage('kernel_sizes')} (medssl: 3 on every axis)")
    if arch.axis_list("strides") != [(1,) * d] + [(2,) * d] * (len(arch.features) - 1):
        found.append(f"strides {arch.per_stage('strides')} (medssl: 1, then 2 on every axis)")
    if any(int(n) != 2 for n in arch.per_stage("n_conv_per_stage")):
        found.append(f"n_conv_per_stage {arch.per_stage('n_conv_per_stage')} (medssl: 2)")
    norm_kwargs = k.get("norm_op_kwargs") or {}
    if str(k.get("norm_op", "")).rsplit(".", 1)[-1] != f"InstanceNorm{d}d" or not norm_kwargs.get("affine"):
        found.append(f"norm {k.get('norm_op')} {norm_kwargs} (medssl: InstanceNorm{d}d with affine)")
    elif abs(float(norm_kwargs.get("eps", _NORM_EPS)) - _NORM_EPS) > 1e-12:
        found.append(f"norm eps {norm_kwargs['eps']} (medssl: {_NORM_EPS})")
    slope = float((k.get("nonlin_kwargs") or {}).get("negative_slope", _LEAKY_SLOPE))
    if str(k.get("nonlin", "")).rsplit(".", 1)[-1] != "LeakyReLU" or slope != _LEAKY_SLOPE:
        found.append(f"nonlin {k.get('nonlin')} slope {slope} (medssl: LeakyReLU 0.01)")
    if k.get("nonlin_first"):
        found.append("nonlin_first (medssl: norm before the nonlinearity)")
    return found


def medssl_pretrain_options(
    plans: str | os.PathLike[str] | dict[str, Any], configuration: str, axes: Sequence[int] | None = None
) -> dict[str, Any]:
    """``medssl pretrain`` options whose encoder maps onto ``configuration``'s PlainConvUNet encoder.

    ``channels`` is the plans' ``features_per_stage``; ``patch_size`` and ``target_spacing`` are the configuration's,
    reordered into medssl's axes, so pretraining sees the scale that nnU-Net will train at. Pretrain on images of the
    configuration's dimensionality (2D pictures or 2D-planned data for ``2d``, volumes for ``3d_*``) with the
    plans' number of image channels. Every medssl pretraining method built on the U-Net encoder qualifies (not
    ``pgl``, whose encoder is a ResNet).

    Raises:
        MedsslError: one line naming every setting of the configuration that no medssl encoder has.
    """
    arch = read_plans(plans, configuration)
    found = _differences(arch)
    if found:
        raise MedsslError(
            f"nnU-Net configuration {configuration!r} cannot hold a medssl encoder: {'; '.join(found)}; "
            "plan with nnU-Net's default planner and isotropic kernels, or train that network from scratch"
        )
    order = _check_axes(arch, axes)
    options: dict[str, Any] = {"channels": list(arch.features)}
    for key, values in (("patch_size", arch.patch_size), ("target_spacing", arch.spacing)):
        if len(values) == arch.spatial_dims:  # medssl axis order[j] holds nnU-Net axis j
            options[key] = [values[order.index(i)] for i in range(arch.spatial_dims)]
    return options


def _check_axes(arch: NnunetArchitecture, axes: Sequence[int] | None) -> tuple[int, ...]:
    order = arch.default_axes() if axes is None else tuple(int(a) for a in axes)
    if sorted(order) != list(range(arch.spatial_dims)):
        raise MedsslError(f"axes must be a permutation of 0..{arch.spatial_dims - 1}, got {list(order)}")
    return order


def _encoder_payload(path: Path) -> dict[str, Any]:
    """The medssl encoder file at ``path`` (or ``path/encoder.pt`` for a pretraining run folder), checked."""
    file = path / "encoder.pt" if path.is_dir() else path
    payload = load_checkpoint_file(file)
    if payload.get("format") != ENCODER_FORMAT:
        raise MedsslError(f"{file} is not a medssl encoder file (write one with `medssl pretrain`)")
    if payload.get("encoder") != UNetEncoder.__name__:
        raise MedsslError(
            f"{file} holds a {payload.get('encoder')} encoder; only a UNetEncoder maps onto nnU-Net's PlainConvUNet "
            "(pretrain with a method on the U-Net encoder, not pgl)"
        )
    state = payload["state_dict"]
    if any(key.endswith(("running_mean", "conv.bias")) for key in state) or "stages.0.0.norm.weight" not in state:
        raise MedsslError(f"{file}: the encoder's norm is not an affine instance norm, as nnU-Net's is")
    return payload


def _match_encoder(payload: dict[str, Any], arch: NnunetArchitecture, source: str) -> None:
    found = _differences(arch)
    if found:
        raise MedsslError(
            f"nnU-Net configuration {arch.configuration!r} cannot hold a medssl encoder: {'; '.join(found)}"
        )
    have = (payload["spatial_dims"], list(payload["channels"]), payload["in_channels"])
    want = (arch.spatial_dims, list(arch.features), arch.in_channels or payload["in_channels"])
    if have != want:
        raise MedsslError(
            f"{source} is a {have[0]}D encoder with channels {have[1]} on {have[2]} image channel(s); nnU-Net's "
            f"{arch.configuration!r} needs {want[0]}D, channels {want[1]}, {want[2]} image channel(s): pretrain with "
            f"`medssl pretrain --set channels=[{','.join(map(str, want[1]))}]` on {want[0]}D images of "
            f"{want[2]} channel(s) (medssl_pretrain_options gives patch_size and target_spacing too)"
        )


def _unit(prefix: str, weight: Tensor, norm: tuple[Tensor, Tensor], arch: NnunetArchitecture) -> dict[str, Tensor]:
    """The state-dict entries of one ``ConvDropoutNormReLU`` at ``prefix`` (each module under both of its names)."""
    conv: dict[str, Tensor] = {"weight": weight}
    if arch.arch_kwargs.get("conv_bias"):  # exact: the instance norm removes any per-channel constant
        conv["bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    affine = {"weight": norm[0], "bias": norm[1]}
    out: dict[str, Tensor] = {}
    for name, params in (
        ("conv", conv),
        ("all_modules.0", conv),
        ("norm", affine),
        (f"all_modules.{arch.norm_index}", affine),
    ):
        out.update({f"{prefix}{name}.{param}": value for param, value in params.items()})
    return out


def _fresh_decoder(arch: NnunetArchitecture, generator: torch.Generator) -> dict[str, Tensor]:
    """The decoder's tensors (without ``seg_layers``), initialised as nnU-Net's ``InitWeights_He(1e-2)`` does."""
    features, strides, kernels = arch.features, arch.axis_list("strides"), arch.axis_list("kernel_sizes")
    bias = bool(arch.arch_kwargs.get("conv_bias"))
    out: dict[str, Tensor] = {}

    def he(*shape: int) -> Tensor:
        return nn.init.kaiming_normal_(torch.empty(shape), a=_INIT_SLOPE, generator=generator)

    for i, n_conv in enumerate(int(n) for n in arch.per_stage("n_conv_per_stage_decoder")):
        below, skip = features[-(i + 1)], features[-(i + 2)]
        out[f"decoder.transpconvs.{i}.weight"] = he(below, skip, *strides[-(i + 1)])
        if bias:
            out[f"decoder.transpconvs.{i}.bias"] = torch.zeros(skip)
        for u in range(n_conv):
            weight = he(skip, 2 * skip if u == 0 else skip, *kernels[-(i + 2)])
            out.update(_unit(f"decoder.stages.{i}.convs.{u}.", weight, (torch.ones(skip), torch.zeros(skip)), arch))
    return out


def nnunet_state_dict(
    payload: dict[str, Any], arch: NnunetArchitecture, axes: Sequence[int] | None = None, seed: int = 0
) -> dict[str, Tensor]:
    """PlainConvUNet's state dict (without ``seg_layers``): the medssl encoder's tensors and a fresh decoder.

    Args:
        payload: a loaded medssl encoder file of a matching ``UNetEncoder`` (see ``export_nnunet_weights``).
        arch: the nnU-Net configuration (``read_plans``).
        axes: for each spatial axis of nnU-Net's network, the medssl axis it is (default ``arch.default_axes()``).
        seed: seed of the decoder's initialisation.

    Raises:
        MedsslError: the encoder's tensors are not those of ``arch``'s encoder.
    """
    order = _check_axes(arch, axes)
    state, out = dict(payload["state_dict"]), {}
    for s in range(len(arch.features)):
        for u in range(2):
            key = f"stages.{s}.{u}."
            try:
                weight = state.pop(key + "conv.weight").permute(0, 1, *(2 + a for a in order)).contiguous()
                norm = (state.pop(key + "norm.weight"), state.pop(key + "norm.bias"))
            except KeyError as missing:
                raise MedsslError(f"the encoder file lacks {missing}: not a UNetEncoder of {arch.features}") from None
            for prefix in ("encoder.", "decoder.encoder."):  # the decoder holds the encoder: its tensors again
                out.update(_unit(f"{prefix}stages.{s}.0.convs.{u}.", weight, norm, arch))
    if state:
        raise MedsslError(f"the encoder file has tensors nnU-Net's encoder lacks: {', '.join(sorted(state)[:5])}")
    generator = torch.Generator().manual_seed(seed)
    return out | _fresh_decoder(arch, generator)


def export_nnunet_weights(
    encoder_or_run: str | os.PathLike[str],
    plans: str | os.PathLike[str] | dict[str, Any],
    configuration: str,
    out: str | os.PathLike[str],
    axes: Sequence[int] | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a file that ``nnUNetv2_train DATASET CONFIGURATION FOLD -pretrained_weights FILE`` loads.

    Args:
        encoder_or_run: ``medssl pretrain``'s ``encoder.pt``, or its run folder.
        plans: nnU-Net's ``nnUNetPlans.json`` of the dataset (path or loaded dict).
        configuration: the configuration trained (``2d``, ``3d_fullres``, ...).
        out: the file to write (parent folders are created).
        axes: for each spatial axis of nnU-Net's network, the medssl axis it is; the default follows nnU-Net's
            ``SimpleITKIO``/``NibabelIO`` and the plans' ``transpose_forward`` (give it for other readers).
        seed: seed of the fresh decoder.
        overwrite: replace an existing ``out`` (else refused).

    Returns:
        ``out``: a ``torch.save`` of ``{"network_weights": state_dict, "medssl": {...}}`` (plain types and tensors).

    Raises:
        MedsslError: one line when the architectures differ (widths, stages, convs per stage, kernels, strides,
            norm, nonlinearity, dimensionality, image channels), naming the ``medssl pretrain`` options that match.
    """
    source, target = Path(encoder_or_run), Path(out)
    arch = read_plans(plans, configuration)
    payload = _encoder_payload(source)
    _match_encoder(payload, arch, str(source))
    if target.resolve() in (source.resolve(), (source / "encoder.pt").resolve()):
        raise MedsslError(f"--out {target} would overwrite the encoder file; choose another file")
    if target.is_dir():
        raise MedsslError(f"--out {target} is a folder; give the file to write, e.g. {target / 'pretrained.pth'}")
    if target.exists() and not overwrite:
        raise MedsslError(f"{target} exists; pass --overwrite to replace it")
    weights = nnunet_state_dict(payload, arch, axes, seed)
    info: dict[str, Any] = {"encoder": str(source), "configuration": configuration, "seed": seed}
    info["axes"] = list(_check_axes(arch, axes))  # the decoder is fresh: He init drawn with ``seed``
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        torch.save({"network_weights": weights, "medssl": info}, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
