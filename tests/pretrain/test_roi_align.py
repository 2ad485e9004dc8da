"""RoIAlign on grid_sample: a naive loop reference, exact crops, linear maps and gradients, in 2D and 3D."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from medssl.pretrain.roi_align import roi_align

SHAPES = {2: (5, 7), 3: (4, 5, 6)}
OUT = {2: (3, 4), 3: (2, 3, 2)}


def _bilinear(f: torch.Tensor, point: list[float]) -> torch.Tensor:
    """``f (C, *S)`` at a point in voxel-centre coordinates, clamped to the map (border padding)."""
    point = [min(max(p, 0.0), n - 1.0) for p, n in zip(point, f.shape[1:], strict=True)]
    value = torch.zeros(f.shape[0], dtype=f.dtype)
    lower = [math.floor(p) for p in point]
    for corner in itertools.product((0, 1), repeat=len(point)):
        index, weight = [], 1.0
        for p, low, c, n in zip(point, lower, corner, f.shape[1:], strict=True):
            index.append(min(low + c, n - 1))
            weight *= (p - low) if c else (1.0 - (p - low))
        value += weight * f[(slice(None), *index)]
    return value


def _naive(
    f: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, out: tuple[int, ...], ratio: int | list[int]
) -> torch.Tensor:
    """One sample, one bin, one sampling point at a time; ``ratio`` for every axis or one per axis."""
    ratios = [ratio] * len(out) if isinstance(ratio, int) else ratio
    b, c = f.shape[:2]
    result = torch.zeros(b, c, *out, dtype=f.dtype)
    for i in range(b):
        width = [(h - low) / n for low, h, n in zip(lo[i].tolist(), hi[i].tolist(), out, strict=True)]
        for bin_ in itertools.product(*[range(n) for n in out]):
            acc = torch.zeros(c, dtype=f.dtype)
            for k in itertools.product(*[range(r) for r in ratios]):
                edge = [
                    low + (j + (kk + 0.5) / r) * w
                    for low, j, kk, r, w in zip(lo[i].tolist(), bin_, k, ratios, width, strict=True)
                ]
                acc += _bilinear(f[i], [e - 0.5 for e in edge])  # box coordinates -> voxel-centre coordinates
            result[(i, slice(None), *bin_)] = acc / math.prod(ratios)
    return result


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("ratio", [1, 2, 3])
def test_matches_a_naive_loop(dims: int, ratio: int) -> None:
    shape = SHAPES[dims]
    f = torch.randn(2, 3, *shape, dtype=torch.float64)
    size = torch.tensor(shape, dtype=torch.float64)
    lo = torch.rand(2, dims, dtype=torch.float64) * size * 0.4
    hi = lo + (0.3 + 0.6 * torch.rand(2, dims, dtype=torch.float64)) * (size - lo)
    hi[1, 0], lo[1, 0] = lo[1, 0], hi[1, 0]  # a mirrored axis
    got = roi_align(f, lo, hi, OUT[dims], sampling_ratio=ratio)
    torch.testing.assert_close(got, _naive(f, lo, hi, OUT[dims], ratio))


@pytest.mark.parametrize("dims", [2, 3])
def test_adaptive_ratio_is_the_widest_bin_rounded_up(dims: int) -> None:
    """Bins 2.6 voxels wide on the first axis take 3 points there; bins under one voxel take one."""
    f = torch.randn(2, 2, *[12] * dims, dtype=torch.float64)
    lo = torch.full((2, dims), 0.5, dtype=torch.float64)
    hi = lo + 2.0
    hi[0, 0] = lo[0, 0] + 7.8  # 3 bins of 2.6 voxels
    out = (3,) * dims
    ratios = [3] + [1] * (dims - 1)
    torch.testing.assert_close(roi_align(f, lo, hi, out), _naive(f, lo, hi, out, ratios))
    small = lo + 2.4  # every bin 0.8 voxel wide: one point
    torch.testing.assert_close(roi_align(f, lo, small, out), roi_align(f, lo, small, out, sampling_ratio=1))


@pytest.mark.parametrize("dims", [2, 3])
def test_integer_boxes_give_exact_crops(dims: int) -> None:
    f = torch.randn(2, 2, *SHAPES[dims])
    lo = torch.tensor([[1] * dims, [0] * dims], dtype=torch.float64)
    hi = lo + 3
    got = roi_align(f, lo, hi, 3, sampling_ratio=1)
    for i in range(2):
        crop = tuple(slice(int(a), int(b)) for a, b in zip(lo[i], hi[i], strict=True))
        torch.testing.assert_close(got[i], f[(i, slice(None), *crop)])
    whole = torch.tensor([list(SHAPES[dims])] * 2, dtype=torch.float64)
    torch.testing.assert_close(roi_align(f, torch.zeros(2, dims), whole, SHAPES[dims], 1), f)
    mirrored = roi_align(f, whole, torch.zeros(2, dims), SHAPES[dims], 1)
    torch.testing.assert_close(mirrored, f.flip(list(range(2, 2 + dims))))


@pytest.mark.parametrize("dims", [2, 3])
def test_linear_map_is_read_at_bin_centres(dims: int) -> None:
    """Checks the half-voxel convention on its own: on a map linear in the voxel-centre coordinates, every bin's mean
    equals the map at the bin's centre ``lo + (j + 0.5) * width - 0.5``, whatever the sampling ratio."""
    shape = SHAPES[dims]
    slope = torch.tensor([0.7, -1.3, 0.4][:dims], dtype=torch.float64)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    f = sum(s * g for s, g in zip(slope, grids, strict=True))[None, None] + 2.0
    lo = torch.tensor([[0.6, 1.1, 0.9][:dims]], dtype=torch.float64)
    hi = torch.tensor([[3.4, 4.2, 4.0][:dims]], dtype=torch.float64)
    out = OUT[dims]
    centres = [
        lo[0, a] + (torch.arange(n, dtype=torch.float64) + 0.5) * (hi[0, a] - lo[0, a]) / n - 0.5
        for a, n in enumerate(out)
    ]
    expected = sum(s * g for s, g in zip(slope, torch.meshgrid(*centres, indexing="ij"), strict=True)) + 2.0
    for ratio in (1, 2, 4):
        torch.testing.assert_close(roi_align(f, lo, hi, out, ratio)[0, 0], expected)


def test_gradients_reach_the_features() -> None:
    f = torch.randn(2, 2, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    lo = torch.tensor([[0.3, 1.0, 0.2], [1.1, 0.4, 0.5]], dtype=torch.float64)
    hi = lo + torch.tensor([2.5, 3.1, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, lo, hi, (2, 3, 2), 2), (f,))


def test_rejects_bad_arguments() -> None:
    f = torch.randn(2, 1, 4, 4)
    box = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="lo and hi"):
        roi_align(f, torch.zeros(1, 2), box, 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(f, box, box + 1, (2, 0))
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align(f, box, box + 1, 2, sampling_ratio=0)
    with pytest.raises(ValueError, match="spatial axes"):
        roi_align(torch.randn(2, 1, 4), box, box, 2)
