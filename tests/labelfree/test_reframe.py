"""A wider field keeps the camera's lighting out of the middle of the picture; the lighting estimate ignores the
lesion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medssl.labelfree.artefacts import corrupt
from medssl.labelfree.reframe import illumination

SKIN, BROWN = np.array([225.0, 180.0, 170.0]), np.array([110.0, 70.0, 50.0])


def scope_lighting(h: int = 120, w: int = 160, dark: float = 0.03) -> np.ndarray:
    """A round field of view's lighting: falling gently inside it (by a quarter at its edge), then over a soft
    edge to ``dark`` in the corners."""
    rows, cols = np.mgrid[:h, :w]
    radius = np.hypot(rows - h / 2, cols - w / 2) / (0.55 * np.hypot(h, w) / 2)
    return (1 - 0.25 * np.clip(radius, 0, 1) ** 2) * (1 - (1 - dark) * np.clip((radius - 1) / 0.12, 0, 1))


def scope_picture(h: int = 120, w: int = 160, hair: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A brown lesion on skin seen under ``scope_lighting``, with two dark hairs (``hair``); and the lesion mask."""
    rows, cols = np.mgrid[:h, :w]
    mask = (rows - 0.5 * h) ** 2 + (cols - 0.45 * w) ** 2 <= (0.22 * h) ** 2
    image = np.where(mask[..., None], BROWN, SKIN)
    hairs = (np.abs(rows - 0.3 * cols - 10) < 1) | (np.abs(rows + 0.5 * cols - 120) < 1)
    image[hairs & ~mask & hair] = (60.0, 40.0, 30.0)
    image = image * scope_lighting(h, w)[..., None] + np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def test_illumination_follows_the_lighting_under_the_lesion_and_hair_and_in_the_dark_corners():
    image, mask = scope_picture()
    field = illumination(image, mask)
    truth = scope_lighting()
    assert field.shape == mask.shape and field.min() >= 0 and field.max() <= 1
    # Inside the field of view, away from its edge, the estimate is the lighting up to one scale: neither the
    # lesion nor the hairs darken it.
    ratio = (field / truth)[truth > 0.78]
    assert ratio.max() / ratio.min() < 1.2
    assert (field / truth)[mask].max() / (field / truth)[mask].min() < 1.2  # 2.4 with the lesion counted
    assert field[:6, :6].max() < 0.2 and field[-6:, -6:].max() < 0.2


def test_a_wider_field_leaves_no_dark_frame_in_the_middle():
    image, mask = scope_picture(hair=False)
    out, out_mask = corrupt(image, mask, "small", seed=0, scale=0.5)
    light = out.astype(float).mean(axis=2)
    skin_light = SKIN.mean()
    # Beyond the lesion, every pixel is skin: the picture's dark corners went with its lighting, not into the
    # middle of the new picture as a frame (a picture in a picture).
    beyond = ~ndimage.binary_dilation(out_mask, iterations=3)
    assert light[beyond].min() > 0.9 * skin_light
    assert np.abs(np.median(out[beyond], axis=0) - SKIN).max() < 20  # the best-lit skin colour, evenly
    assert light[ndimage.binary_erosion(out_mask, iterations=2)].mean() < 0.6 * skin_light  # the lesion stays


def test_the_lighting_under_a_large_lesion_is_filled_in_without_seams():
    # Lighting rising from left to right under a lesion wider than the windows: the windows over the lesion hold
    # no skin, and their values come from around it. Copying the nearest known value leaves seams (a step of
    # 0.24 between neighbouring pixels here); a weighted mean of the values around does not.
    h, w = 120, 160
    rows, cols = np.mgrid[:h, :w]
    truth = 0.55 + 0.45 * cols / (w - 1)
    mask = (rows - h / 2) ** 2 + (cols - w / 2) ** 2 <= (0.3 * h) ** 2
    image = np.where(mask[..., None], BROWN, SKIN) * truth[..., None]
    image = np.clip(image + np.random.default_rng(0).normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    field = illumination(image, mask)
    assert np.abs(np.diff(field, axis=1))[mask[:, 1:]].max() < 0.05
    ratio = (field / truth)[mask]
    assert ratio.max() / ratio.min() < 1.3
