"""PGL's prior-guided aligner: bring the feature maps of two views of one image onto their common region.

PGL (Xie et al., MICCAI 2021, https://arxiv.org/abs/2109.13243) knows from the augmentation what each view is:
FlipAlign undoes each view's flips on its feature map, CSAlign maps the overlap of the two crop boxes into each
view's feature coordinates, and a RoIAlign of that region, resized to the feature map size, gives two maps whose
voxel ``j`` shows the same place of the original image. Everything here is read from the ``ViewRecord`` that
``medssl.data.views.ViewGenerator`` wrote while making the views, so rotations (``rot90``) are undone as well.

Coordinates (the box convention of ``medssl.data.views``, voxel ``i`` covering ``[i, i + 1)``):
    overlap in input coordinates ``[max(z1_lo, z2_lo), min(z1_hi, z2_hi))``
    -> ``ViewRecord.box_in_view(..., oriented=False)``: the region in view ``i``'s resized crop, i.e.
       ``(overlap - z_i_lo) * out_size / crop_size``, before the flips (FlipAlign has already undone them)
    -> times ``feature_size / view_size`` per axis (``/ stride``): the region in feature coordinates.
So feature voxel ``j`` stands for view voxels ``[j * s, (j + 1) * s)`` (centre ``j * s + (s - 1) / 2``), as in
torchvision's ``roi_align(aligned=True)``. This is exact for encoders that pool aligned blocks of ``s`` voxels.
A stack of stride-2 "same" convolutions centres feature ``j`` at view voxel ``j * s`` instead, and the same stack
on the mirrored view centres it at ``j * s + s - 1`` after the flip is undone. The block convention lies half-way
between the two: with random flips no fixed convention does better, its worst case being ``(s - 1) / 2`` view
voxels, half that of matching either end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from medssl.data.views import ViewRecord, overlap_box
from medssl.pretrain.roi_align import roi_align

__all__ = ["OverlapRegions", "align_features", "cs_align", "flip_align"]


def flip_align(features: Tensor, records: Sequence[ViewRecord]) -> Tensor:
    """FlipAlign: undo each sample's flips (and quarter turns) on its view-aligned map.

    Args:
        features: ``(B, C, *S)`` maps of the views, any resolution (the flips act on whole axes).
        records: the ``B`` records of the views.

    Returns:
        ``(B, C, *S')`` maps in each view's crop frame (``S' = S`` without rotations).

    Raises:
        ValueError: the number of records is not ``B``, or odd quarter turns of non-square planes give samples of
            different shapes, which cannot be batched.
    """
    if len(records) != features.shape[0]:
        raise ValueError(f"need one record per sample: {len(records)} records for batch {features.shape[0]}")
    if not any(any(r.flips) or r.rot90_k % 4 for r in records):
        return features
    maps = [rec.to_crop_frame(f) for f, rec in zip(features, records, strict=True)]
    if len({m.shape for m in maps}) > 1:
        raise ValueError("quarter turns of a non-square plane give maps of different shapes; use square planes")
    return torch.stack(maps)


@dataclass(frozen=True)
class OverlapRegions:
    """The overlap of two views in each view's feature coordinates (crop frame, box convention).

    Attributes:
        lo1, hi1: ``(B, D)`` float64 region in view 1's flip-aligned feature map.
        lo2, hi2: ``(B, D)`` the same region in view 2's.
        valid: ``(B,)`` bool, False where the two crop boxes do not overlap (the regions are then whole maps).
    """

    lo1: Tensor
    hi1: Tensor
    lo2: Tensor
    hi2: Tensor
    valid: Tensor

    def view(self, index: int) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` of view ``index`` (0 or 1)."""
        if index not in (0, 1):
            raise ValueError(f"index must be 0 or 1, got {index}")
        return (self.lo1, self.hi1) if index == 0 else (self.lo2, self.hi2)


def cs_align(
    records1: Sequence[ViewRecord], records2: Sequence[ViewRecord], feature_shape: Sequence[int]
) -> OverlapRegions:
    """CSAlign: the overlap of each sample's two crop boxes in both views' feature coordinates.

    Args:
        records1: records of the first views, one per sample.
        records2: records of the second views, same length.
        feature_shape: spatial shape of the views' feature maps as the encoder returns them (view-aligned), the
            same for both views.

    Returns:
        The regions, see ``OverlapRegions``; divide by nothing more: they are in feature voxels.
    """
    if len(records1) != len(records2):
        raise ValueError(f"need as many first as second records, got {len(records1)} and {len(records2)}")
    boxes: list[list[Tensor]] = [[], [], [], []]
    valid = []
    for rec1, rec2 in zip(records1, records2, strict=True):
        box = overlap_box(rec1, rec2)
        valid.append(box is not None)
        for i, rec in enumerate((rec1, rec2)):
            fshape = torch.tensor(_crop_frame_shape(feature_shape, rec), dtype=torch.float64)
            if box is None:
                lo, hi = torch.zeros_like(fshape), fshape
            else:
                lo, hi = rec.box_in_view(box[0], box[1], oriented=False)
                # View box coordinates -> feature box coordinates: the stride of each axis, crop_shape / feature_shape.
                scale = fshape / torch.tensor(rec.crop_shape, dtype=torch.float64)
                lo, hi = lo * scale, hi * scale
            boxes[2 * i].append(lo)
            boxes[2 * i + 1].append(hi)
    lo1, hi1, lo2, hi2 = (torch.stack(b) for b in boxes)
    return OverlapRegions(lo1, hi1, lo2, hi2, torch.tensor(valid, dtype=torch.bool))


def _crop_frame_shape(shape: Sequence[int], record: ViewRecord) -> tuple[int, ...]:
    """Shape of a view-aligned map of spatial shape ``shape`` after ``to_crop_frame`` (odd turns swap the plane)."""
    out = [int(n) for n in shape]
    if record.rot90_k % 2:
        a, b = record.rot90_plane
        out[a], out[b] = out[b], out[a]
    return tuple(out)


def align_features(
    features: Tensor,
    records: Sequence[ViewRecord],
    lo: Tensor,
    hi: Tensor,
    output_size: Sequence[int] | None = None,
    sampling_ratio: int | None = 2,
) -> Tensor:
    """FlipAlign, then RoIAlign of the CSAlign region resized to ``output_size`` in one sampling.

    RoIAlign straight onto the feature map size replaces PGL's RoIAlign followed by a trilinear resize: one
    interpolation instead of two, so less smoothing, and the same region.

    Args:
        features: ``(B, C, *S)`` view-aligned maps (e.g. an encoder's deepest map of the views).
        records: the views' records.
        lo: ``(B, D)`` region start from ``cs_align`` for these views.
        hi: ``(B, D)`` region end.
        output_size: spatial size of the result (default: the flip-aligned map's own size).
        sampling_ratio: RoIAlign points per bin and axis (None: adaptive, see ``roi_align``).

    Returns:
        ``(B, C, *output_size)``, differentiable with respect to ``features``.
    """
    aligned = flip_align(features, records)
    size = tuple(aligned.shape[2:]) if output_size is None else tuple(output_size)
    return roi_align(aligned, lo, hi, size, sampling_ratio)
