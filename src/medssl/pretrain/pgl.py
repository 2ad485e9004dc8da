"""PGL: prior-guided local self-supervised learning (Xie et al., MICCAI 2021, https://arxiv.org/abs/2109.13243).

BYOL on feature maps instead of pooled vectors: the augmentation records how each of two views was cut, scaled and
flipped, the prior-guided aligner (``medssl.pretrain.alignment``) brings both views' feature maps onto the region
they share, and a dense projector and predictor (``ConvProjectionHead``) feed a per-voxel BYOL loss between the
online prediction of one view and the target projection of the other, symmetrised. BYOL's global loss may be added.
The target network and its momentum schedule are BYOL's (``MomentumMethod``).

Presets (``PGL_PRESETS``): ``small`` (default, for CPU runs and tests): the U-Net's encoder (``channels``), heads
1024 / 256; ``paper``: the paper's ResNet-50 (3, 4, 6, 3) with output stride (16, 16, 8) in 3D ((16, 16) in 2D),
heads 4096 / 256, for GPUs (about 30 s a step at 128 x 128 x 64 on a CPU). The paper's patches are 64 slices of
128 x 128 with the slice axis strided least; medssl's arrays are ``(x, y, z)``, so the slice axis is the last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor, nn

from medssl.data.views import IntensityOp, ViewGenerator, ViewRecord
from medssl.networks import Encoder
from medssl.networks.heads import ConvProjectionHead
from medssl.networks.resnet import resnet_encoder
from medssl.pretrain.alignment import align_features, cs_align
from medssl.pretrain.byol import MomentumMethod
from medssl.pretrain.losses import byol_loss
from medssl.pretrain.registry import register

__all__ = ["PGL", "PGL_INTENSITY", "PGL_PRESETS", "PGLViews", "PairFn", "local_consistency_loss"]

PairFn: TypeAlias = Callable[
    [Tensor, torch.Generator | None], tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]
]
"""``pairs(x, generator) -> (view_1, view_2, records_1, records_2)``, as ``ViewGenerator.pair`` returns them."""

PGL_INTENSITY: dict[str, IntensityOp] = {
    "noise": (0.1, 0.0, 0.1),  # p 0.1, variance ~ U(0, 0.1)
    "blur": (0.2, 0.5, 1.0),  # p 0.2, sigma ~ U(0.5, 1)
    "contrast": (0.5, 0.75, 1.25),  # p 0.5, factor ~ U(0.75, 1.25), clipped to the original range
    "gamma": (0.5, 0.7, 1.5),  # p 0.5, gamma ~ U(0.7, 1.5) on the image rescaled to [0, 1], then scaled back
}
"""PGL's intensity ops as ``(p, low, high)``; pinned here so that a change of ``ViewGenerator``'s defaults does not
change PGL."""
_NO_INTENSITY: dict[str, IntensityOp] = {name: (0.0, op[1], op[2]) for name, op in PGL_INTENSITY.items()}

PGL_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"encoder": None, "hidden_dim": 1024, "projection_dim": 256},
    # Output stride per number of spatial axes; in 3D the slice axis (medssl's last, z) is strided least.
    "paper": {
        "encoder": "resnet50",
        "output_stride": {2: (16, 16), 3: (16, 16, 8)},
        "hidden_dim": 4096,
        "projection_dim": 256,
    },
}


@dataclass(frozen=True)
class PGLViews:
    """PGL's augmentation module: two recorded views of every image of ``x (B, C, *S)``, each of the input's size.

    ``medssl.data.views.ViewGenerator.pair`` does the work, one generator per input size: crops of 110-140 % of
    the input edge (padded outside) whose boxes overlap by at least 10 %, resized to the input size; a flip of each
    axis with p 0.5; no rotation; then ``PGL_INTENSITY``.

    Args:
        crop_scale: range of the crop edge as a fraction of the input's edge.
        min_overlap: least overlap of the two crop boxes (fraction of the larger box).
        flip_prob: probability of a flip per axis.
        intensity: apply ``PGL_INTENSITY``; False gives purely geometric views (for tests and diagnostics).
        padding_mode: ``grid_sample`` padding outside the input (``"zeros"``, ``"border"``, ``"reflection"``).
    """

    crop_scale: tuple[float, float] = (1.1, 1.4)
    min_overlap: float = 0.1
    flip_prob: float = 0.5
    intensity: bool = True
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        _generator(self, 2, (8, 8))  # bad settings fail here, naming the argument

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]:
        """``(view_1, view_2, records_1, records_2)``, views ``(B, C, *S)``; see ``ViewGenerator.pair``."""
        return _generator(self, x.ndim - 2, tuple(x.shape[2:])).pair(x, generator)


@lru_cache(maxsize=16)
def _generator(views: PGLViews, spatial_dims: int, size: tuple[int, ...]) -> ViewGenerator:
    ops = PGL_INTENSITY if views.intensity else _NO_INTENSITY
    return ViewGenerator(
        spatial_dims,
        size,
        scale=views.crop_scale,
        min_overlap=views.min_overlap,
        flip_p=views.flip_prob,
        rot90_p=0.0,
        noise=ops["noise"],
        blur=ops["blur"],
        contrast=ops["contrast"],
        gamma=ops["gamma"],
        padding_mode=views.padding_mode,
    )


@dataclass(frozen=True)
class _WithoutRecords:
    """A ``PairFn`` seen as a ``ViewFn`` (the base class's ``views``): the two views without their records."""

    pairs: PairFn

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        view_1, view_2, _, _ = self.pairs(x, generator)
        return view_1, view_2


def local_consistency_loss(p: Tensor, z: Tensor, valid: Tensor | None = None) -> Tensor:
    """PGL's local consistency loss: BYOL's ``2 - 2 cos`` at every voxel of two aligned maps, averaged.

    Args:
        p: online predictions ``(B, D, *S)``.
        z: target projections of the same region, same shape.
        valid: ``(B,)`` bool, the samples to average over (views whose crops did not overlap are left out);
            None: all.

    Returns:
        Scalar; 0 (still attached to ``p``) when no sample is valid.
    """
    if valid is None or bool(valid.all()):
        return byol_loss(p, z)
    if not bool(valid.any()):
        return p.sum() * 0.0
    keep = valid.to(p.device)
    return byol_loss(p[keep], z[keep])


@register("pgl")
class PGL(MomentumMethod):
    """Online encoder + dense projector + predictor regress the target's dense projection of the other view, voxel
    by voxel, on the overlap of the two views aligned from their records.

    One step: two recorded views ``v1, v2`` of every image; deepest encoder maps ``f1, f2`` (online) and ``g1, g2``
    (target, no gradient); ``cs_align`` maps the overlap of the crop boxes into feature coordinates; each map is
    flip-aligned and RoI-aligned onto its feature map size; ``p_i = predictor(projector(aligned f_i))``,
    ``z_i = target_projector(aligned g_i)``; loss ``(L(p1, z2) + L(p2, z1)) / 2`` with ``local_consistency_loss``,
    plus ``global_weight`` times BYOL's loss on the spatial means of the unaligned maps' heads.

    Args:
        spatial_dims, in_channels: see ``PretrainMethod``.
        channels: widths of the U-Net encoder of the ``small`` preset. The ``paper`` preset builds its ResNet-50 and
            does not use them (``medssl pretrain`` always passes the plan's widths).
        encoder: an existing encoder to pretrain instead of the preset's.
        views: ``pairs(x, generator) -> (v1, v2, records1, records2)`` (default ``PGLViews()``).
        preset: ``"small"`` or ``"paper"`` (``PGL_PRESETS``); the arguments below override it.
        hidden_dim: hidden width of the projector and the predictor (default: the preset's).
        projection_dim: projection and prediction channels (default: the preset's).
        global_weight: weight of BYOL's global loss (0: PGL's local loss only).
        sampling_ratio: RoIAlign points per bin and axis (None: adaptive, see ``roi_align``). The overlap spans
            about as many feature voxels as it gets bins, where adaptive sampling takes one point; two halve to
            quarter the misalignment between the two views' maps (measured with equivariant encoders, see
            ``tests/pretrain/test_alignment.py``), four gain nothing more.
        momentum, final_momentum: the target's EMA schedule (BYOL: 0.996 to 1).

    Attributes:
        pairs: the view source. preset, global_weight, sampling_ratio: as given. See ``MomentumMethod`` for the rest.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: Sequence[int] | None = None,
        *,
        encoder: Encoder | None = None,
        views: PairFn | None = None,
        preset: Literal["small", "paper"] = "small",
        hidden_dim: int | None = None,
        projection_dim: int | None = None,
        global_weight: float = 0.0,
        sampling_ratio: int | None = 2,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
    ) -> None:
        if preset not in PGL_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PGL_PRESETS)}, got {preset!r}")
        if global_weight < 0:
            raise ValueError(f"global_weight must be >= 0, got {global_weight}")
        if sampling_ratio is not None and sampling_ratio < 1:
            raise ValueError(f"sampling_ratio must be >= 1 or None, got {sampling_ratio}")
        settings = PGL_PRESETS[preset]
        hidden = int(settings["hidden_dim"] if hidden_dim is None else hidden_dim)
        projection = int(settings["projection_dim"] if projection_dim is None else projection_dim)
        if encoder is None and settings["encoder"] is not None:
            if spatial_dims is None or in_channels is None:
                raise ValueError("spatial_dims and in_channels are required unless an encoder is given")
            stride = settings["output_stride"][spatial_dims]
            encoder = resnet_encoder(settings["encoder"], spatial_dims, in_channels, output_stride=stride)
            channels = None  # the preset's encoder replaces the U-Net widths

        def heads(online: Encoder) -> tuple[nn.Module, nn.Module]:
            dims = online.spatial_dims
            return (
                ConvProjectionHead(dims, online.out_channels, hidden, projection),
                ConvProjectionHead(dims, projection, hidden, projection),
            )

        pairs: PairFn = PGLViews() if views is None else views
        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            encoder=encoder,
            views=_WithoutRecords(pairs),
            heads=heads,
            momentum=momentum,
            final_momentum=final_momentum,
        )
        self.pairs: PairFn = pairs
        self.preset = preset
        self.global_weight = float(global_weight)
        self.sampling_ratio = sampling_ratio

    def align(
        self, maps: Sequence[Tensor], records_1: Sequence[ViewRecord], records_2: Sequence[ViewRecord]
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """PGL's prior-guided aligner, as one step runs it: CSAlign of the two views' crop boxes from their records,
        then FlipAlign and RoIAlign of the overlap, resized to the maps' own size, of every map in ``maps``.

        Args:
            maps: maps of both views, ``(2B, C, *S)`` each: view 1 of the ``B`` images, then view 2 (e.g. the
                online and the target encoder's deepest maps); all of one spatial size.
            records_1: the records of the first views, ``B`` of them.
            records_2: the records of the second views.

        Returns:
            Each map aligned, same shape, differentiable with respect to it (voxel ``j`` of view 1's and of view 2's
            half shows the same place of the image), and ``valid`` ``(B,)``: False where the crops do not overlap.
        """
        n, size = len(records_1), maps[0].shape[2:]
        regions = cs_align(records_1, records_2, size)

        def aligned(m: Tensor) -> Tensor:
            return torch.cat(
                (
                    align_features(m[:n], records_1, *regions.view(0), size, self.sampling_ratio),
                    align_features(m[n:], records_2, *regions.view(1), size, self.sampling_ratio),
                )
            )

        return tuple(aligned(m) for m in maps), regions.valid

    def losses(self, batch: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss", "local"[, "global"]}`` for a batch ``(B, in_channels, *S)``; ``local`` and ``global`` are
        detached copies for logging."""
        if not batch.is_floating_point():
            batch = batch.to(torch.get_default_dtype())
        self.encoder.check_input(batch)
        view_1, view_2, records_1, records_2 = self.pairs(batch, generator)
        self.encoder.check_input(view_1)
        views = torch.cat((view_1, view_2))
        online = self.encoder(views)[-1]
        with torch.no_grad():
            target = self.target_encoder(views)[-1]
        # the target maps carry no graph, so aligning them outside no_grad records nothing
        (online_aligned, target_aligned), valid = self.align((online, target), records_1, records_2)
        predictions = self.predictor(self.projector(online_aligned))
        with torch.no_grad():
            projections = self.target_projector(target_aligned)
        z_1, z_2 = projections.chunk(2)
        # View 1's prediction regresses view 2's target and vice versa; the mean over 2B averages the two terms.
        local = local_consistency_loss(predictions, torch.cat((z_2, z_1)), valid.repeat(2))
        losses = {"loss": local, "local": local.detach()}
        if self.global_weight > 0:
            pooled = self.predictor(self.projector(online)).flatten(2).mean(2)
            with torch.no_grad():
                t_1, t_2 = self.target_projector(target).flatten(2).mean(2).chunk(2)
            global_ = byol_loss(pooled, torch.cat((t_2, t_1)))
            losses["loss"] = local + self.global_weight * global_
            losses["global"] = global_.detach()
        return losses
