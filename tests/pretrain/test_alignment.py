"""PGL's aligner: for encoders that are equivariant by construction the two aligned maps of one image agree, and
wrong flips or boxes make them disagree."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from medssl.data.views import ViewGenerator, ViewRecord, overlap_box
from medssl.networks import layers
from medssl.pretrain.alignment import align_features, cs_align, flip_align
from medssl.pretrain.roi_align import roi_align

NO_INTENSITY = {
    "noise": (0.0, 0.0, 0.1),
    "blur": (0.0, 0.5, 1.0),
    "contrast": (0.0, 1.0, 1.0),
    "gamma": (0.0, 1.0, 1.0),
}
# (dims, image size, encoder stride): identity encoders (stride 1) and average pooling with stride 2 or 4.
CASES = [(2, 32, 1), (2, 32, 4), (3, 16, 1), (3, 16, 2)]


def _waves(batch: int, size: int, dims: int) -> Tensor:
    """Smooth oblique waves (about 10 voxels per period at 16 voxels) that fade to zero at the border, so that the
    zero padding of crops larger than the image adds no edge."""
    g = torch.Generator().manual_seed(0)
    grids = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij")
    window = math.prod(torch.sin(math.pi * (x + 0.5) / size) ** 2 for x in grids)
    out = []
    for _ in range(batch):
        freq = (0.1 + 0.1 * torch.rand(dims, generator=g)) * 32 / size
        phase = sum(f * x for f, x in zip(freq, grids, strict=True)) + 6 * torch.rand(1, generator=g)
        out.append((torch.sin(phase) * window)[None])
    return torch.stack(out)


def _encoder(dims: int, stride: int) -> Callable[[Tensor], Tensor]:
    """An encoder equivariant to crops, resizes and flips up to interpolation: identity or block averages."""
    return (lambda v: v) if stride == 1 else layers.pool(dims, "avg", stride)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _views(dims: int, size: int, seed: int) -> tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord], Tensor]:
    x = _waves(2, size, dims)
    # PGL's geometry plus quarter turns, which the records let the aligner undo as well.
    gen = ViewGenerator(dims, size, scale=(1.1, 1.4), min_overlap=0.1, rot90_p=0.75, **NO_INTENSITY)
    v1, v2, r1, r2 = gen.pair(x, torch.Generator().manual_seed(seed))
    return v1, v2, r1, r2, x


@pytest.mark.parametrize(("dims", "size", "stride"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_aligned_maps_of_one_image_agree_and_mutations_disagree(dims: int, size: int, stride: int, seed: int) -> None:
    v1, v2, r1, r2, _ = _views(dims, size, seed)
    assert any(any(r.flips) for r in r1 + r2)
    encode = _encoder(dims, stride)
    f1, f2 = encode(v1), encode(v2)
    assert f1.shape[2:] == (size // stride,) * dims
    regions = cs_align(r1, r2, f1.shape[2:])
    assert regions.valid.all()
    a2 = align_features(f2, r2, *regions.view(1))
    a1 = align_features(f1, r1, *regions.view(0))
    error = _rel(a1, a2)
    assert error < (0.05 if stride == 1 else 0.15)

    toggled = [dataclasses.replace(r, flips=(not r.flips[0], *r.flips[1:])) for r in r1]
    mutants = {
        "wrong flips": align_features(f1, toggled, *regions.view(0)),
        "other view's box": align_features(f1, r1, *regions.view(1)),
        "half a feature voxel off": align_features(f1, r1, regions.lo1 + 0.5, regions.hi1 + 0.5),
    }
    if stride > 1:
        mutants["box not divided by the stride"] = align_features(f1, r1, regions.lo1 * stride, regions.hi1 * stride)
    for name, mutant in mutants.items():
        assert _rel(mutant, a2) > max(0.15, 4 * error), name


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_encoder_aligns_to_the_overlap_of_the_input(dims: int) -> None:
    """With the identity as encoder each aligned view is the input's overlap box, resampled: the absolute check."""
    size = 32 if dims == 2 else 16
    v1, v2, r1, r2, x = _views(dims, size, seed=2)
    regions = cs_align(r1, r2, v1.shape[2:])
    boxes = [overlap_box(a, b) for a, b in zip(r1, r2, strict=True)]
    lo = torch.tensor([box[0] for box in boxes if box is not None])
    hi = torch.tensor([box[1] for box in boxes if box is not None])
    truth = roi_align(x, lo, hi, v1.shape[2:])
    assert _rel(align_features(v1, r1, *regions.view(0)), truth) < 0.1
    assert _rel(align_features(v2, r2, *regions.view(1)), truth) < 0.1


def _record(start: tuple[float, ...], size: tuple[float, ...], flips: tuple[bool, ...], k: int = 0) -> ViewRecord:
    return ViewRecord(start, size, (16, 16), (16, 16), flips, rot90_k=k)


def test_cs_align_by_hand() -> None:
    """Overlap [4, 20) x [8, 20) in input voxels; view 1 is [0, 20)^2 shrunk by 16/20, view 2 is [4, 20) x [8, 24)
    at scale 1; the feature stride is 4. Flips do not change the regions (they are in the crop frame)."""
    r1 = _record((0.0, 0.0), (20.0, 20.0), (True, False))
    r2 = _record((4.0, 8.0), (16.0, 16.0), (False, True))
    regions = cs_align([r1], [r2], (4, 4))
    torch.testing.assert_close(regions.lo1[0], torch.tensor([0.8, 1.6], dtype=torch.float64))
    torch.testing.assert_close(regions.hi1[0], torch.tensor([4.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(regions.lo2[0], torch.tensor([0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(regions.hi2[0], torch.tensor([4.0, 3.0], dtype=torch.float64))
    assert regions.valid.tolist() == [True]


def test_disjoint_crops_are_marked_invalid() -> None:
    r1, r2 = _record((0.0, 0.0), (8.0, 8.0), (False, False)), _record((8.0, 0.0), (8.0, 8.0), (False, False))
    regions = cs_align([r1, r1], [r2, r1], (4, 4))
    assert regions.valid.tolist() == [False, True]
    torch.testing.assert_close(regions.hi1[0], torch.tensor([4.0, 4.0], dtype=torch.float64))


def test_flip_align_undoes_flips_and_turns() -> None:
    t = torch.randn(3, 2, 4, 4)
    records = [
        _record((0.0, 0.0), (16.0, 16.0), (True, False)),
        _record((0.0, 0.0), (16.0, 16.0), (False, True), k=1),
        _record((0.0, 0.0), (16.0, 16.0), (False, False)),
    ]
    seen = torch.stack([r.from_crop_frame(m) for r, m in zip(records, t, strict=True)])
    torch.testing.assert_close(flip_align(seen, records), t)
    assert torch.equal(flip_align(t[2:], records[2:]), t[2:])
    with pytest.raises(ValueError, match="one record per sample"):
        flip_align(t, records[:2])


def test_gradients_flow_through_the_alignment() -> None:
    v1, _, r1, r2, _ = _views(2, 16, seed=0)
    features = v1.clone().requires_grad_(True)
    regions = cs_align(r1, r2, features.shape[2:])
    align_features(features, r1, *regions.view(0)).square().sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
