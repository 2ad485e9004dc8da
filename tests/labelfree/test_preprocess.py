from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.labelfree.preprocess import (
    field_of_view,
    hair_mask,
    image_lightness,
    prepare_image,
    rgb_to_lab,
    to_unit_range,
)
from tests.labelfree.conftest import dermoscopy_like


def test_rgb_to_lab_reference_colours() -> None:
    rgb = np.array([[[1.0, 0.0, 1.0, 0.5]], [[1.0, 0.0, 0.0, 0.5]], [[1.0, 0.0, 0.0, 0.5]]])  # white, black, red, grey
    lab = rgb_to_lab(rgb)
    assert lab[:, 0, 0] == pytest.approx([100.0, 0.0, 0.0], abs=0.1)
    assert lab[:, 0, 1] == pytest.approx([0.0, 0.0, 0.0], abs=0.1)
    assert lab[:, 0, 2] == pytest.approx([53.24, 80.09, 67.20], abs=0.2)  # sRGB red, D65
    assert lab[0, 0, 3] == pytest.approx(53.39, abs=0.2)


def test_unit_range_of_integer_and_float_pictures() -> None:
    assert to_unit_range(np.array([[[0, 255]]], dtype=np.uint8)).tolist() == [[[0.0, 1.0]]]
    values = to_unit_range(np.linspace(-5, 5, 1000, dtype=np.float32).reshape(1, 10, 100))
    assert values.min() == 0 and values.max() == 1


def test_field_of_view_finds_the_vignette_and_nothing_without_one() -> None:
    image, lesion = dermoscopy_like((96, 128))
    lightness = image_lightness(image)
    fov = field_of_view(lightness, lightness.shape)
    assert not fov[0, 0] and not fov[-1, -1] and fov[48, 64]
    assert fov[lesion].all()  # the lesion is never cut away
    flat, _ = dermoscopy_like((96, 128), vignette=False)
    assert field_of_view(image_lightness(flat), (96, 128)).all()


def test_a_dark_lesion_cut_by_one_border_is_not_taken_for_a_field_of_view() -> None:
    # A zoomed, off-centre shot: the left half darkens from 0.5 half short sides out and a dark lesion is cut by
    # the left edge. The radial profile drops as for a vignette, and the field it gives would keep a quarter of
    # the picture, beyond which the median is still light.
    rows, cols = np.mgrid[:96, :128]
    radius = np.hypot(rows - 47.5, cols - 63.5) / 48
    lightness = 90.0 - 40.0 * np.clip(radius - 0.5, 0, 2) * (cols < 64)
    lightness[np.hypot(rows - 48, cols + 5) <= 35] = 30.0
    assert field_of_view(lightness.astype(np.float32), (96, 128)).all()
    # A small circle in a black frame keeps as little of the picture, but is dark beyond: found.
    small_circle = np.where(radius <= 0.6, 90.0, 5.0).astype(np.float32)
    fov = field_of_view(small_circle, (96, 128))
    assert fov.mean() < 0.4 and not fov[0, 0] and fov[48, 64]


def test_a_circle_across_a_cut_lesion_is_no_field_of_view_but_a_one_sided_vignette_is() -> None:
    rows, cols = np.mgrid[:96, :128]
    radius = np.hypot(rows - 47.5, cols - 63.5) / 48
    # Skin whose right corners dim a little and a dark lesion cut by the left edge: the profile's outer rings are
    # dark (the lesion fills the left corners) and the field it gives keeps most of the picture, but the light
    # falls nowhere across its edge, which runs through the lesion and the skin.
    lightness = 80.0 - 12.0 * np.clip(radius - 1.0, 0, 1) * (cols >= 64)
    lesion = np.hypot(rows - 48, cols + 20) <= 70
    lightness[lesion] = 30.0
    assert field_of_view(lightness.astype(np.float32), (96, 128)).all()
    # A vignette on one side only (as PH2's) falls across the edge in half the sectors: found.
    one_sided = 80.0 - 60.0 * np.clip((radius - 0.85) / 0.3, 0, 1) * (cols >= 64)
    fov = field_of_view(one_sided.astype(np.float32), (96, 128))
    assert fov.mean() < 0.9 and not fov[0, -1] and fov[48, 64]


def test_hair_mask_finds_thin_dark_lines_not_the_lesion() -> None:
    image, lesion = dermoscopy_like((64, 64), vignette=False)
    lightness = image_lightness(image)
    lightness[5, :] = 10.0  # a hair across the top
    hair = hair_mask(lightness, size=7)
    assert hair[5, 10:54].all()
    assert hair[lesion].mean() < 0.03  # at most a few stair-step pixels of the round rim


def test_prepare_image_fills_hair_and_outside_and_resizes() -> None:
    image, _ = dermoscopy_like((96, 128))
    image[:, 14, :] = 20  # a dark hair above the lesion
    prepared = prepare_image(image, size=64, hair_size=5)
    assert prepared.features.shape == (3, 64, 64)
    assert prepared.input_shape == (96, 128)
    assert prepared.hair.any() and not prepared.valid.all()
    outside = prepared.features[:, ~prepared.valid]
    assert np.allclose(outside, outside[:, :1])  # one value: the mean inside
    assert prepared.features[0, 9:11, 20:44].min() > 60  # the hair rows are filled with skin lightness


def test_grey_pictures_give_one_channel_and_bad_inputs_are_refused() -> None:
    grey = np.random.default_rng(0).integers(0, 255, (1, 40, 30), dtype=np.uint8)
    assert prepare_image(grey, size=32).features.shape == (1, 32, 32)
    with pytest.raises(MedsslError, match="1 or 3 channels"):
        prepare_image(np.zeros((2, 10, 10), np.uint8))
    with pytest.raises(MedsslError, match="1 or 3 channels"):
        prepare_image(np.zeros((1, 4, 10, 10), np.uint8))
    with pytest.raises(MedsslError, match="colour space"):
        prepare_image(grey, colour_space="hsv")
