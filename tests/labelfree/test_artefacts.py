"""The seeded dermoscopy artefacts keep the lesion mask right and are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medssl.errors import MedsslError
from medssl.labelfree.artefacts import ARTEFACTS, PATCH_COLOURS, corrupt

SKIN, BROWN = (225, 180, 170), (110, 70, 50)


def picture(h: int = 90, w: int = 120, centre: tuple[float, float] = (0.5, 0.5), radius: float = 0.2):
    """A brown disc on pink skin as ``(H, W, 3)`` uint8, and its mask."""
    rows, cols = np.mgrid[:h, :w]
    mask = (rows - h * centre[0]) ** 2 + (cols - w * centre[1]) ** 2 <= (min(h, w) * radius) ** 2
    image = np.where(mask[..., None], BROWN, SKIN).astype(np.float64)
    image += np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def is_lesion(image: np.ndarray) -> np.ndarray:
    """Brown, not skin: red channel well below the skin's."""
    return image[..., 0] < 170


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


@pytest.mark.parametrize("kind", list(ARTEFACTS))
def test_same_call_same_picture_and_seed_changes_it(kind):
    image, mask = picture()
    first = corrupt(image, mask, kind, seed=3)
    again = corrupt(image, mask, kind, seed=3)
    other = corrupt(image, mask, kind, seed=4)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert first[0].shape == image.shape and first[0].dtype == np.uint8 and first[1].dtype == bool


def test_key_names_the_image_instead_of_its_pixels():
    image, mask = picture()
    assert np.array_equal(corrupt(image, mask, "ink", key="a")[0], corrupt(image, mask, "ink", key="a")[0])
    assert not np.array_equal(corrupt(image, mask, "ink", key="a")[0], corrupt(image, mask, "ink", key="b")[0])


@pytest.mark.parametrize("kind", ["patch", "ruler", "ink"])
@pytest.mark.parametrize("seed", range(6))
def test_overlays_keep_the_mask_and_never_paint_on_it(kind, seed):
    image, mask = picture(centre=(0.45, 0.55), radius=0.3)
    out, out_mask = corrupt(image, mask, kind, seed=seed)
    assert np.array_equal(out_mask, mask)
    assert changed(image, out).any()
    assert not (changed(image, out) & mask).any()


@pytest.mark.parametrize("seed", range(6))
def test_patches_are_saturated_shapes_near_the_border_clear_of_the_lesion(seed):
    image, mask = picture()
    out = corrupt(image, mask, "patch", seed=seed)[0]
    painted = changed(image, out)
    distance = ndimage.distance_transform_edt(~mask)
    assert distance[painted].min() > 0.03 * 90
    colours = np.array(PATCH_COLOURS, dtype=float)
    nearest = np.abs(out[painted].astype(float)[:, None] - colours[None]).max(axis=2).min(axis=1)
    assert np.median(nearest) < 15
    # Within one patch size (15 % of the short side) of an edge, the far side of the patch included.
    rows, cols = np.nonzero(painted)
    edge = np.minimum.reduce([rows, 89 - rows, cols, 119 - cols])
    for label in range(1, ndimage.label(painted)[1] + 1):
        part = ndimage.label(painted)[0][rows, cols] == label
        assert edge[part].min() <= 0.15 * 90 / 2 + 1


@pytest.mark.parametrize("seed", range(6))
def test_ruler_is_a_bar_with_regular_ticks_along_one_edge(seed):
    image, mask = picture(centre=(0.6, 0.5))
    out = corrupt(image, mask, "ruler", seed=seed, numbers=False)[0]
    painted = changed(image, out)
    rows, cols = np.nonzero(painted)
    bands = [rows.max() < 10, rows.min() >= 80, cols.max() < 10, cols.min() >= 110]
    assert sum(bands) == 1  # thickness at most 9 % of the short side (9 px here)
    bar = painted if (bands[0] or bands[1]) else painted.T
    strip = out if (bands[0] or bands[1]) else out.transpose(1, 0, 2)
    line = strip[np.nonzero(bar.any(axis=1))[0][bar.any(axis=1).sum() // 2]].astype(float).mean(axis=1)
    # Along the bar, the tick colour alternates with the bar colour at a regular step.
    ticks = np.abs(line - np.median(line)) > 100
    starts = np.nonzero(ticks[1:] & ~ticks[:-1])[0]
    assert len(starts) >= 5
    assert np.ptp(np.diff(starts)) <= 1


@pytest.mark.parametrize("seed", range(6))
def test_ink_is_violet_around_the_lesion_not_on_it(seed):
    image, mask = picture()
    out = corrupt(image, mask, "ink", seed=seed)[0]
    painted = changed(image, out)
    pixels = out[painted].astype(float)
    assert np.median(pixels[:, 2] - pixels[:, 1]) > 20  # blue above green: violet, not skin or lesion
    assert ndimage.distance_transform_edt(~mask)[painted].min() > 0.02 * 90


def test_vignette_darkens_corners_not_the_centre():
    image, mask = picture()
    out, out_mask = corrupt(image, mask, "vignette", seed=0, strength=0.9)
    assert np.array_equal(out_mask, mask)
    assert out[:5, :5].mean() < 0.5 * image[:5, :5].mean()
    assert np.abs(out[40:50, 55:65].astype(int) - image[40:50, 55:65]).max() <= 1
    assert np.array_equal(corrupt(image, mask, "vignette", strength=0.0)[0][40:50], image[40:50])
    with pytest.raises(MedsslError, match="strength"):
        corrupt(image, mask, "vignette", strength=1.5)


@pytest.mark.parametrize("scale", [0.4, 0.5])
def test_small_shrinks_the_lesion_by_the_square_of_scale_and_keeps_it_aligned(scale):
    image, mask = picture(radius=0.3)
    out, out_mask = corrupt(image, mask, "small", seed=1, scale=scale)
    assert out_mask.mean() / mask.mean() == pytest.approx(scale**2, rel=0.12)
    interior = ndimage.binary_erosion(out_mask, iterations=2)
    assert is_lesion(out)[interior].mean() > 0.95
    outside = ~ndimage.binary_dilation(out_mask, iterations=3)
    assert is_lesion(out)[outside].mean() < 0.02  # the padding is skin, not lesion
    assert np.abs(np.median(out[outside], axis=0) - SKIN).max() < 15


@pytest.mark.parametrize("seed", range(8))
def test_border_cuts_the_lesion_with_the_image_edge_and_keeps_it_aligned(seed):
    image, mask = picture(centre=(0.5, 0.45), radius=0.25)
    out, out_mask = corrupt(image, mask, "border", seed=seed)
    edges = np.concatenate([out_mask[0], out_mask[-1], out_mask[:, 0], out_mask[:, -1]])
    assert edges.any() and not out_mask.all()
    assert out_mask.mean() > mask.mean()  # zoomed in
    assert is_lesion(out)[ndimage.binary_erosion(out_mask, iterations=2)].mean() > 0.95
    assert is_lesion(out)[~ndimage.binary_dilation(out_mask, iterations=2)].mean() < 0.02


def test_user_mistakes_are_reported():
    image, mask = picture()
    with pytest.raises(MedsslError, match="unknown artefact"):
        corrupt(image, mask, "smudge")
    with pytest.raises(MedsslError, match="uint8"):
        corrupt(image.astype(float), mask, "ink")
    with pytest.raises(MedsslError, match="does not match"):
        corrupt(image, mask[:10], "ink")
    with pytest.raises(MedsslError, match="negative"):
        corrupt(image, mask, "ink", seed=-1)
    with pytest.raises(MedsslError, match="empty"):
        corrupt(image, np.zeros_like(mask), "border")
    with pytest.raises(MedsslError, match="scale"):
        corrupt(image, mask, "small", scale=2.0)


@pytest.mark.parametrize("kind", ["patch", "ruler", "ink"])
def test_a_lesion_touching_every_edge_is_never_painted_over(kind):
    image, mask = picture(radius=0.7)
    out, out_mask = corrupt(image, mask, kind, seed=0)
    assert np.array_equal(out_mask, mask)
    assert not (changed(image, out) & mask).any()
    if kind == "ruler":
        assert changed(image, out).any()  # drawn where the edge is skin


@pytest.mark.parametrize("seed", range(6))
def test_one_patch_is_5_to_15_percent_of_the_short_side(seed):
    image, mask = picture()
    painted = changed(image, corrupt(image, mask, "patch", seed=seed, count=1)[0])
    rows, cols = np.nonzero(painted)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    assert 0.05 * 90 - 1 <= extent <= 0.15 * 90 + 1


@pytest.mark.parametrize("seed", range(4))
def test_small_by_default_leaves_a_few_percent_of_the_image(seed):
    image, mask = picture(radius=0.3)  # the lesion is 24 % of the picture
    out_mask = corrupt(image, mask, "small", seed=seed)[1]
    assert 0.35**2 * 0.9 <= out_mask.mean() / mask.mean() <= 0.5**2 * 1.1
    assert out_mask.mean() < 0.07
