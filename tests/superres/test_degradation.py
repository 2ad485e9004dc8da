"""Degradations (bicubic, k-space truncation), pairs, the split by volume and the slice sampler."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medssl.errors import MedsslError
from medssl.superres import (
    SliceSampler,
    bicubic_downsample,
    crop_to_multiple,
    degrade,
    kspace_truncate,
    make_pair,
    split_volumes,
)

SCALES = (2, 3, 4)


@pytest.mark.parametrize("mode", ["bicubic", "kspace"])
@pytest.mark.parametrize("scale", SCALES)
def test_constant_image_stays_that_constant(mode: str, scale: int) -> None:
    for shape in [(24, 36), (12, 12, 24)]:
        lr, _ = make_pair(np.full(shape, 3.7, dtype=np.float32), scale, mode)  # type: ignore[arg-type]
        assert lr.shape == tuple(n // scale for n in shape)
        np.testing.assert_allclose(lr, 3.7, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_bicubic_is_the_antialiased_cubic_kernel_of_pil(scale: int) -> None:
    # Pillow's BICUBIC reduction (a = -0.5, kernel widened by the scale) is MATLAB imresize's kernel
    image = crop_to_multiple(np.random.default_rng(scale).random((25, 38)).astype(np.float32), scale)
    reference = Image.fromarray(image, mode="F").resize(
        (image.shape[1] // scale, image.shape[0] // scale), Image.Resampling.BICUBIC
    )
    np.testing.assert_allclose(bicubic_downsample(image, scale), np.asarray(reference), atol=1e-6)


@pytest.mark.parametrize("mode", ["bicubic", "kspace"])
@pytest.mark.parametrize("scale", SCALES)
def test_low_resolution_pixels_sit_at_block_centres(mode: str, scale: int) -> None:
    n = 48
    # a slow sinusoid is smooth (bicubic) and band-limited (k-space): lr[j] = f(s j + (s - 1) / 2)
    f = np.sin(2 * np.pi * 2 * np.arange(n) / n)
    lr = degrade(np.outer(f, np.ones(n)), scale, mode)  # type: ignore[arg-type]
    centres = scale * np.arange(n // scale) + (scale - 1) / 2
    expected = np.sin(2 * np.pi * 2 * centres / n)
    inner = slice(2, -2)  # bicubic renormalises its weights at the border
    np.testing.assert_allclose(lr[inner, 5], expected[inner], atol=0.02 if mode == "bicubic" else 1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_kspace_keeps_a_band_limited_image_and_removes_high_frequencies(scale: int) -> None:
    n = 48
    i = np.arange(n)
    low = np.add.outer(np.sin(2 * np.pi * 3 * i / n), np.cos(2 * np.pi * 2 * i / n))
    j = scale * np.arange(n // scale) + (scale - 1) / 2
    np.testing.assert_allclose(
        kspace_truncate(low, scale),
        np.add.outer(np.sin(2 * np.pi * 3 * j / n), np.cos(2 * np.pi * 2 * j / n)),
        atol=1e-9,
    )
    high = np.outer(np.sin(2 * np.pi * (n // scale) * i / n), np.ones(n))  # above the new Nyquist limit
    np.testing.assert_allclose(kspace_truncate(high, scale), 0.0, atol=1e-9)


def test_bicubic_3d_is_separable_and_reduces_depth_too() -> None:
    rng = np.random.default_rng(0)
    plane = rng.random((16, 20))
    volume = np.repeat(plane[None], 8, axis=0)  # constant along depth: the 2D result on every slice
    out = bicubic_downsample(volume, 2)
    assert out.shape == (4, 8, 10)
    np.testing.assert_allclose(out, np.repeat(bicubic_downsample(plane, 2)[None], 4, axis=0), atol=1e-12)
    depth = np.broadcast_to(plane[:, :1, None], (16, 20, 6)).transpose(0, 2, 1)  # varies along depth only
    column = np.broadcast_to(plane[:, :1], (16, 6))  # the same profile in 2D, along the rows
    np.testing.assert_allclose(bicubic_downsample(depth, 2)[:, 1, 2], bicubic_downsample(column, 2)[:, 1], atol=1e-12)


def test_make_pair_crops_the_trailing_pixels_first() -> None:
    hr = np.arange(23 * 31, dtype=np.float64).reshape(23, 31)
    for scale in SCALES:
        lr, cropped = make_pair(hr, scale, "bicubic")
        assert cropped.shape == (23 - 23 % scale, 31 - 31 % scale)
        np.testing.assert_array_equal(cropped, hr[: cropped.shape[0], : cropped.shape[1]])  # voxel 0 unmoved
        assert lr.shape == (23 // scale, 31 // scale)
    assert make_pair(np.ones((8, 8), dtype=np.uint8), 2)[0].dtype == np.float32


@pytest.mark.parametrize(
    ("image", "scale", "mode"),
    [
        (np.ones((8, 8)), 1, "bicubic"),
        (np.ones((8, 8)), 2.0, "bicubic"),
        (np.ones((8, 8)), 2, "nearest"),
        (np.ones(8), 2, "bicubic"),
        (np.ones((2, 8, 8, 8)), 2, "kspace"),
        (np.ones((3, 8)), 4, "bicubic"),
    ],
)
def test_bad_inputs_raise_medssl_error(image: np.ndarray, scale: int, mode: str) -> None:
    with pytest.raises(MedsslError):
        make_pair(image, scale, mode)  # type: ignore[arg-type]
    with pytest.raises(MedsslError, match="multiple"):
        bicubic_downsample(np.ones((9, 8)), 2)


def test_split_is_by_volume_seeded_and_order_free() -> None:
    ids = [f"v{i:02d}" for i in range(20)]
    split = split_volumes(ids, test_fraction=0.25, val_fraction=0.1, seed=3)
    sides = [set(split.train), set(split.val), set(split.test)]
    assert (len(split.test), len(split.val)) == (5, 2)
    assert set().union(*sides) == set(ids) and sum(map(len, sides)) == len(ids)
    assert split_volumes(ids[::-1], 0.25, 0.1, seed=3) == split
    assert split_volumes(ids, 0.25, 0.1, seed=4) != split
    # a volume listed twice (two contrasts under one subject id) must still be on one side only
    for seed in range(10):
        twice = split_volumes(ids + ids[:10], 0.3, 0.2, seed=seed)
        assert len(twice.train) + len(twice.val) + len(twice.test) == len(ids)
    with pytest.raises(MedsslError):
        split_volumes(ids[:2], 0.5, 0.5)


def _volumes(count: int, shape: tuple[int, int, int] = (6, 24, 24)) -> list[np.ndarray]:
    """Volumes that say who they are: volume k is k + 1 inside a centred square, 0 outside."""
    out = []
    for k in range(count):
        v = np.zeros(shape, dtype=np.float32)
        v[:, 4:-4, 4:-4] = k + 1
        out.append(v)
    return out


def test_no_slice_of_a_test_volume_reaches_training() -> None:
    ids = [f"v{k}" for k in range(10)]
    volumes = dict(zip(ids, _volumes(10), strict=True))
    split = split_volumes(ids, test_fraction=0.3, val_fraction=0.0, seed=0)
    train = SliceSampler([volumes[i] for i in split.train], 2, patch_size=8, seed=1, samples=120)
    test = SliceSampler([volumes[i] for i in split.test], 2, patch_size=8, seed=1)
    seen_train = {float(v) for item in train for v in np.unique(item[1].numpy())} - {0.0}
    seen_test = {float(v) for item in test for v in np.unique(item[1].numpy())} - {0.0}
    assert seen_train and seen_test and not seen_train & seen_test


def test_sampler_patches_are_aligned_pairs() -> None:
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32), (3, 32, 40)).copy()
    for scale in SCALES:
        sampler = SliceSampler([ramp], scale, patch_size=12, seed=0, samples=6, min_foreground=0.0)
        for lr, hr in sampler:
            assert lr.shape == (1, 12 // scale, 12 // scale) and hr.shape == (1, 12, 12)
            # for a linear ramp the value at a block centre is the block's mean (away from the slice's border)
            blocks = hr[0].reshape(12 // scale, scale, 12 // scale, scale).mean(dim=(1, 3)).numpy()
            inner = (blocks > 2 * scale) & (blocks < 39 - 2 * scale)
            np.testing.assert_allclose(lr[0].numpy()[inner], blocks[inner], atol=1e-4)


def test_sampler_skips_empty_slices_and_is_seeded() -> None:
    volume = _volumes(1, (10, 24, 24))[0]
    volume[::2] = 0.0  # even slices are background
    sampler = SliceSampler([volume], 2, patch_size=8, seed=5, samples=12)
    assert [z for _, z in sampler.slices] == [1, 3, 5, 7, 9]
    assert all(hr.max() > 0 for _, hr in sampler)
    again = SliceSampler([volume], 2, patch_size=8, seed=5, samples=12)
    assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]) for a, b in zip(sampler, again, strict=True))
    noisy = volume + np.random.default_rng(0).random(volume.shape).astype(np.float32)
    first = [item[1] for item in SliceSampler([noisy], 2, patch_size=8, seed=5, samples=12, threshold=0.5)]
    other = [item[1] for item in SliceSampler([noisy], 2, patch_size=8, seed=6, samples=12, threshold=0.5)]
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    sampler.set_epoch(1)
    assert sampler.order.tolist() != again.order.tolist()


def test_sampler_axis_and_whole_slices() -> None:
    volume = np.random.default_rng(0).random((7, 20, 16)).astype(np.float32) + 1.0
    sampler = SliceSampler([volume], 2, patch_size=None, axis=2, seed=0)
    assert len(sampler) == 16
    lr, hr = sampler[0]
    assert hr.shape == (1, 6, 20) and lr.shape == (1, 3, 10)
    z = sampler.slices[int(sampler.order[0])][1]
    np.testing.assert_array_equal(hr[0].numpy(), volume[:6, :, z])
    with pytest.raises(MedsslError, match="patch_size"):
        SliceSampler([volume], 2, patch_size=24)
    with pytest.raises(MedsslError, match="non-empty"):
        SliceSampler([np.zeros((4, 8, 8))], 2, patch_size=4)


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 1}, {"scale": 2, "axis": 3}, {"scale": 2, "samples": 0}, {"scale": 2, "mode": "area"}, {"scale": 3}],
)
def test_sampler_bad_options_raise_medssl_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(MedsslError):
        SliceSampler(_volumes(1), patch_size=8, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(MedsslError, match="3D"):
        SliceSampler([np.ones((8, 8))], 2, axis=2)
