"""Sliding-window prediction blends overlapping tiles with Gaussian weights (``predict_logits``).

A 1x1 network gives every tile the same output where tiles overlap, so it cannot tell blending from "last tile
wins". These tests use networks with a real receptive field (zero-padded convolutions, whose outputs near a tile's
border differ from tile to tile) and compare with a naive tiling written here: tiles start every
``int(tile * (1 - overlap))`` voxels, the last one flush with the image's end, and each tile's output is weighted by
a Gaussian centred on the tile with sigma = tile / 8 per axis (floored at 1e-3, as MONAI does, so that no voxel has
zero weight), then divided by the summed weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import torch
from torch import nn

from medssl.data.plan import Plan
from medssl.segment.inference import predict_logits


def _plan(patch_size: Sequence[int], **kw: object) -> Plan:
    base: dict[str, object] = dict(
        spatial_dims=len(patch_size),
        data_dims=len(patch_size),
        in_channels=1,
        task="labelmap",
        class_values=[0, 1],
        class_names=["background", "a"],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=list(patch_size),
        channels=[4],
        batch_size=2,
    )
    base.update(kw)
    return Plan(**base)  # type: ignore[arg-type]


class ConvNet(nn.Module):
    """Two zero-padded convolutions (5 then 3 wide: receptive radius 3) with fixed, seeded weights."""

    radius = 3

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        torch.manual_seed(1)
        self.a = conv(1, 3, 5, padding=2)
        self.b = conv(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class TileMean(nn.Module):
    """Outputs, everywhere in a tile, the tile's mean input: tiles disagree wherever they overlap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        return x.mean(dims, keepdim=True).expand_as(x).clone()


def _starts(size: int, tile: int, overlap: float) -> list[int]:
    step = max(1, int(tile * (1 - overlap)))
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(min(starts[-1] + step, size - tile))
    return starts


def _gaussian(tile: Sequence[int]) -> torch.Tensor:
    weight = torch.ones(())
    for n in tile:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        g = torch.exp(-(x**2) / (2 * (n / 8) ** 2))
        weight = weight[..., None] * g
    return weight.clamp(min=1e-3)


def _tiled(net: nn.Module, image: torch.Tensor, tile: Sequence[int], overlap: float, blend: str) -> torch.Tensor:
    """Naive sliding window over ``image (C, *spatial)``: ``blend`` is gaussian, uniform or last (last tile wins)."""
    spatial = image.shape[1:]
    per_axis = [_starts(s, t, overlap) for s, t in zip(spatial, tile, strict=True)]
    weight = _gaussian(tile) if blend == "gaussian" else torch.ones(tuple(tile), dtype=torch.float64)
    out: torch.Tensor | None = None
    total = torch.zeros(spatial, dtype=torch.float64)
    with torch.no_grad():
        for start in itertools.product(*per_axis):
            region = tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))
            pred = net(image[(slice(None), *region)][None])[0].double()
            if out is None:
                out = torch.zeros((pred.shape[0], *spatial), dtype=torch.float64)
            if blend == "last":
                out[(slice(None), *region)] = pred
                total[region] = 1
            else:
                out[(slice(None), *region)] += weight * pred
                total[region] += weight
    assert out is not None
    return (out / total).float()


CASES = [
    pytest.param(2, (1, 21, 19), (8, 8), 0.5, id="2d-overlap0.5"),
    pytest.param(2, (1, 23, 17), (8, 8), 0.25, id="2d-overlap0.25"),
    pytest.param(3, (1, 13, 11, 10), (6, 6, 6), 0.5, id="3d-overlap0.5"),
    pytest.param(3, (1, 14, 12, 9), (8, 8, 8), 0.25, id="3d-overlap0.25"),
]


@pytest.mark.parametrize(("dims", "shape", "tile", "overlap"), CASES)
def test_overlapping_tiles_are_blended_with_gaussian_weights(
    dims: int, shape: tuple[int, ...], tile: tuple[int, ...], overlap: float
) -> None:
    net = ConvNet(dims)
    image = torch.randn(shape)
    got = predict_logits(net, image, _plan(tile), overlap=overlap, sw_batch_size=3)
    want = _tiled(net, image, tile, overlap, "gaussian")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the test can see the difference: other blendings are far from it
    for other in ("uniform", "last"):
        assert (_tiled(net, image, tile, overlap, other) - want).abs().max() > 1e-2, other


@pytest.mark.parametrize(("dims", "shape", "tile", "overlap"), CASES)
def test_whole_image_result_where_every_tile_sees_the_receptive_field(
    dims: int, shape: tuple[int, ...], tile: tuple[int, ...], overlap: float
) -> None:
    """Where every tile covering a voxel holds its whole receptive field (or shares the image's border), each tile
    predicts the whole-image value there, so any normalised blending must return it: checks the tiles' placement."""
    net = ConvNet(dims)
    image = torch.randn(shape)
    spatial = shape[1:]
    r = ConvNet.radius
    exact = torch.ones(spatial, dtype=torch.bool)
    for start in itertools.product(*[_starts(s, t, overlap) for s, t in zip(spatial, tile, strict=True)]):
        # a voxel in this tile must be at least r from each of its borders that is not the image's border
        in_tile = torch.ones(spatial, dtype=torch.bool)
        far = torch.ones(spatial, dtype=torch.bool)
        for axis, (s, t, n) in enumerate(zip(start, tile, spatial, strict=True)):
            idx = torch.arange(n)
            view = [1] * len(spatial)
            view[axis] = n
            in_tile = in_tile & ((idx >= s) & (idx < s + t)).view(view)
            far = far & (((idx - s >= r) | (s == 0)) & ((s + t - 1 - idx >= r) | (s + t == n))).view(view)
        exact &= ~in_tile | far
    assert exact.sum() >= 20
    got = predict_logits(net, image, _plan(tile), overlap=overlap)
    with torch.no_grad():
        whole = net(image[None])[0]
    torch.testing.assert_close(got[:, exact], whole[:, exact], atol=1e-5, rtol=1e-5)
    assert (got[:, ~exact] - whole[:, ~exact]).abs().max() > 1e-3  # elsewhere tiles see their zero padding


def test_the_weights_are_a_gaussian_of_sigma_tile_over_8() -> None:
    """Two 16-wide tiles overlapping on 8 columns, predicting 0 and 1: the blend at a column is w2 / (w1 + w2), so
    its odds (1 - out) / out are w1 / w2, which for Gaussians centred on each tile is exp(((p - c2)^2 - (p - c1)^2)
    / (2 sigma^2)). Uniform weights would give 0.5 and the last tile 1 throughout the overlap."""
    image = torch.zeros(1, 16, 24)
    image[..., 16:] = 2.0  # tile 1 (columns 0-15) has mean 0, tile 2 (columns 8-23) mean 1
    out = predict_logits(TileMean(), image, _plan((16, 16), class_names=["x"], class_values=[0]), overlap=0.5)[0]
    row = out[8]
    torch.testing.assert_close(row[:8], torch.zeros(8))
    torch.testing.assert_close(row[16:], torch.ones(8))
    p = torch.arange(9, 15, dtype=torch.float64)  # overlap columns where neither weight is floored at 1e-3
    c1, c2, sigma = 7.5, 15.5, 16 / 8
    odds = torch.exp(((p - c2) ** 2 - (p - c1) ** 2) / (2 * sigma**2))
    torch.testing.assert_close(row[9:15].double(), 1 / (1 + odds), atol=1e-5, rtol=1e-4)
    assert (row[9:15] - 0.5).abs().max() > 0.3  # not uniform


@pytest.mark.parametrize("slice_axis", [0, 2])
def test_2d_network_on_a_volume_blends_each_slice(slice_axis: int) -> None:
    net = ConvNet(2)
    volume = torch.randn(1, 11, 13, 12)
    plan = _plan((8, 8), data_dims=3, slice_axis=slice_axis)
    got = predict_logits(net, volume, plan, overlap=0.5, sw_batch_size=4)
    slices = volume.movedim(slice_axis + 1, 0)
    want = torch.stack([_tiled(net, s, (8, 8), 0.5, "gaussian") for s in slices]).movedim(0, slice_axis + 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
