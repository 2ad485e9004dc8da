"""Artefact detectors before clustering: each finds its synthetic artefact and leaves a plain lesion alone."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.labelfree.artefacts import ruler
from medssl.labelfree.config import KMeansConfig
from medssl.labelfree.detectors import (
    dark_corner_mask,
    ink_mask,
    inpaint_nearest,
    patch_mask,
    regularity,
    ruler_mask,
)
from medssl.labelfree.kmeans import kmeans_segment, prepared_features
from medssl.labelfree.preprocess import image_lightness, prepare_image, rgb_to_lab
from medssl.labelfree.protocols import select_mask
from medssl.metrics.overlap import dice
from tests.labelfree.conftest import dermoscopy_like

SIZE = (128, 128)
ROWS, COLS = np.mgrid[: SIZE[0], : SIZE[1]]


def _plain() -> tuple[np.ndarray, np.ndarray]:
    return dermoscopy_like(SIZE, vignette=False)


def _lab(image: np.ndarray) -> np.ndarray:
    return rgb_to_lab(image.astype(np.float32) / 255.0)


def _paint(image: np.ndarray, where: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    for c in range(3):
        out[c][where] = colour[c]
    return out


def _with_patch() -> tuple[np.ndarray, np.ndarray]:
    """A green calibration disc in the top-right corner."""
    disc = np.hypot(ROWS - 6, COLS - 121) <= 30
    return _paint(_plain()[0], disc, (30, 170, 70)), disc


def _with_ruler() -> tuple[np.ndarray, np.ndarray]:
    """A dark bar along the bottom with a tick every 8 pixels above it."""
    bar = (ROWS >= 116) & (ROWS < 120) & (COLS >= 8) & (COLS < 120)
    ticks = (ROWS >= 109) & (ROWS < 116) & (COLS >= 8) & (COLS < 120) & ((COLS - 8) % 8 < 2)
    return _paint(_plain()[0], bar | ticks, (25, 25, 25)), bar


def _with_ink() -> tuple[np.ndarray, np.ndarray]:
    """A purple stroke, an arc around the lesion."""
    radius = np.hypot(ROWS - 64, COLS - 58)
    stroke = (np.abs(radius - 44) <= 1.5) & (ROWS < 90)
    return _paint(_plain()[0], stroke, (110, 40, 150)), stroke


def _with_dark_corners() -> np.ndarray:
    """Corners darkened outside a radius of 1.15 half sides (no field-of-view ring to find)."""
    image = _plain()[0].astype(np.float64)
    radius = np.hypot(ROWS - 63.5, COLS - 63.5) / 64
    return (image * np.where(radius > 1.15, 0.2, 1.0)[None]).astype(np.uint8)


def test_patch_is_found_and_a_plain_lesion_left_alone() -> None:
    image, disc = _with_patch()
    everywhere = np.ones(SIZE, dtype=bool)
    found = patch_mask(_lab(image), everywhere)
    assert found[disc].mean() > 0.95
    assert not found[_plain()[1]].any()
    assert not patch_mask(_lab(_plain()[0]), everywhere).any()


@pytest.mark.parametrize("colour", [(20, 20, 20), (245, 245, 245), (220, 30, 30)])
@pytest.mark.parametrize("shape", ["square", "disc"])
def test_a_flat_drawn_patch_clear_of_the_border_is_found(colour: tuple[int, int, int], shape: str) -> None:
    # Black, white or coloured, a disc or a square well inside the picture: no border contact to go by.
    centre = np.hypot(ROWS - 30, COLS - 100)
    drawn = centre <= 9 if shape == "disc" else (np.abs(ROWS - 30) <= 8) & (np.abs(COLS - 100) <= 8)
    image = _paint(_plain()[0], drawn, colour)
    everywhere = np.ones(SIZE, dtype=bool)
    found = patch_mask(_lab(image), everywhere)
    assert found[drawn].mean() > 0.95
    assert not found[_plain()[1]].any()


def test_a_flat_black_lesion_core_is_not_taken_for_a_patch() -> None:
    # As flat and as dark as a black sticker, but not drawn: a lobed blob (PH2 has such cores).
    angle = np.arctan2(ROWS - 64, COLS - 60)
    blob = np.hypot(ROWS - 64, COLS - 60) <= 12 + 4 * np.sin(3 * angle)
    assert regularity(blob) < 0.85
    image = _paint(_plain()[0], blob, (20, 20, 20))
    assert not patch_mask(_lab(image), np.ones(SIZE, dtype=bool)).any()


def test_a_round_textured_red_lesion_is_not_taken_for_a_patch() -> None:
    # As round and as saturated as a red sticker, but with a lesion's texture (a photographed surface, not print).
    disc = np.hypot(ROWS - 64, COLS - 60) <= 14
    image = _paint(_plain()[0], disc, (200, 30, 30)).astype(np.float64)
    texture = np.random.default_rng(0).normal(0.0, 15.0, disc.sum())
    image[:, disc] = np.clip(image[:, disc] + texture, 0, 255)
    lab = _lab(image.astype(np.uint8))
    assert np.hypot(lab[1], lab[2])[disc].min() > 55  # every pixel a candidate: only the texture tells
    assert not patch_mask(lab, np.ones(SIZE, dtype=bool)).any()


def test_a_flat_white_picture_is_not_a_patch() -> None:
    # A close-up of pale skin: flat, white and, as the whole picture, a rectangle.
    image = np.full((3, *SIZE), 240, dtype=np.uint8)
    assert not patch_mask(_lab(image), np.ones(SIZE, dtype=bool)).any()


def test_regularity_of_drawn_and_grown_shapes() -> None:
    square = (np.abs(ROWS - 40) <= 10) & (np.abs(COLS - 70) <= 20)
    ellipse = ((ROWS - 64) / 20) ** 2 + ((COLS - 64) / 35) ** 2 <= 1
    blob = np.hypot(ROWS - 64, COLS - 64) <= 20 + 6 * np.sin(5 * np.arctan2(ROWS - 64, COLS - 64))
    assert regularity(square) == 1.0 and regularity(ellipse) > 0.95
    assert regularity(blob) < 0.85 and regularity(np.zeros(SIZE, dtype=bool)) == 0.0


def test_ruler_is_found_a_straight_hair_and_a_plain_lesion_are_not() -> None:
    image, bar = _with_ruler()
    everywhere = np.ones(SIZE, dtype=bool)
    found = ruler_mask(_lab(image)[0], everywhere)
    assert found[bar].mean() > 0.9
    assert not found[_plain()[1]].any()
    assert not ruler_mask(_lab(_plain()[0])[0], everywhere).any()
    hair = _paint(_plain()[0], (ROWS >= 116) & (ROWS < 118) & (COLS >= 8) & (COLS < 120), (25, 25, 25))
    assert not ruler_mask(_lab(hair)[0], everywhere).any()  # a bar without ticks


@pytest.mark.parametrize("dark", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_generators_rulers_are_found_thick_on_the_edge_or_a_white_bar_on_light_skin(dark: bool, seed: int) -> None:
    # At the working size: a bar 5-9 % of the side thick (wider than the top-hat's base window) lying on the
    # image edge, dark with white ticks, or white with dark ticks and hardly brighter than the skin.
    image, lesion = dermoscopy_like((256, 256), vignette=False, seed=seed)
    picture = np.moveaxis(image, 0, -1)
    out, _ = ruler(picture, lesion, np.random.default_rng(seed), dark=dark, numbers=bool(seed))
    bar = np.abs(out.astype(int) - picture.astype(int)).max(axis=-1) > 40
    found = ruler_mask(_lab(np.moveaxis(out, -1, 0))[0], np.ones(lesion.shape, dtype=bool))
    assert found[bar].mean() > 0.9
    assert not found[lesion].any()
    assert found.mean() < 0.15  # the ruler's strip, not the picture


def test_a_bar_thicker_than_the_base_window_on_the_image_edge_is_found() -> None:
    # 20 pixels thick on the bottom edge, ticks above it: a valley only against skin beyond the edge, and only
    # for a top-hat window wider than the bar.
    image, lesion = dermoscopy_like((256, 256), vignette=False)
    rows, cols = np.mgrid[:256, :256]
    bar = (rows >= 236) & (cols >= 16) & (cols < 240)
    ticks = (rows >= 226) & (rows < 236) & (cols >= 16) & (cols < 240) & ((cols - 16) % 12 < 2)
    painted = _paint(image, bar | ticks, (25, 25, 25))
    found = ruler_mask(_lab(painted)[0], np.ones(lesion.shape, dtype=bool))
    assert found[bar].mean() > 0.9 and not found[lesion].any()


def test_ink_is_found_and_inpainted_from_the_skin() -> None:
    image, stroke = _with_ink()
    everywhere = np.ones(SIZE, dtype=bool)
    found = ink_mask(_lab(image), everywhere)
    assert found[stroke].mean() > 0.95
    assert found.mean() < 3 * stroke.mean()
    assert not ink_mask(_lab(_plain()[0]), everywhere).any()
    filled = inpaint_nearest(_lab(image), found)
    assert filled[0][stroke].mean() > 75  # skin lightness, not the ink's
    assert not ink_mask(filled, everywhere).any()


def test_dark_corners_are_found_and_a_lesion_touching_a_border_is_not() -> None:
    everywhere = np.ones(SIZE, dtype=bool)
    found = dark_corner_mask(_lab(_with_dark_corners())[0], everywhere)
    corners = np.hypot(ROWS - 63.5, COLS - 63.5) / 64 > 1.2
    assert found[corners].all()
    assert not found[_plain()[1]].any()
    assert not dark_corner_mask(_lab(_plain()[0])[0], everywhere).any()
    at_border = np.hypot(ROWS - 64, COLS - 4) <= 25
    touching = _paint(_plain()[0], at_border, (100, 60, 45))
    assert not dark_corner_mask(_lab(touching)[0], everywhere).any()
    into_corner = np.hypot(ROWS - 16, COLS - 16) <= 30  # holds the corner pixel, lies mostly inside the ellipse
    cornered = _paint(_plain()[0], into_corner, (100, 60, 45))
    assert not dark_corner_mask(_lab(cornered)[0], everywhere).any()


@pytest.mark.parametrize(
    ("make", "step"),
    [
        (lambda: _with_patch()[0], "patches"),
        (lambda: _with_ruler()[0], "rulers"),
        (_with_dark_corners, "dark_corners"),
    ],
)
def test_each_excluding_step_removes_its_pixels_only_when_on(make, step) -> None:  # type: ignore[no-untyped-def]
    image = make()
    on = prepare_image(image, size=128, detect_field_of_view=False, hair_size=0)
    off = prepare_image(image, size=128, detect_field_of_view=False, hair_size=0, artefact_steps=())
    assert step in on.artefacts and off.artefacts == {}
    assert off.valid.all() and not on.valid[on.artefacts[step]].any()


def test_ink_step_inpaints_only_when_on() -> None:
    image, stroke = _with_ink()
    on = prepare_image(image, size=128, detect_field_of_view=False, hair_size=0)
    off = prepare_image(image, size=128, detect_field_of_view=False, hair_size=0, artefact_steps=())
    assert on.valid.all()  # inpainted, not excluded
    assert on.features[0][stroke].mean() > 75 > off.features[0][stroke].mean()
    with pytest.raises(MedsslError, match="artefact step"):
        prepare_image(image, artefact_steps=("stickers",))


def test_a_calibration_patch_no_longer_takes_a_cluster_from_the_lesion() -> None:
    # The failure the patch step fixes: with two clusters, the patch takes one and skin and lesion the other.
    image, _ = _with_patch()
    lesion = _plain()[1]
    lightness = image_lightness(image)
    scores = {}
    for patches in (True, False):
        config = KMeansConfig(clusters=2, size=128, field_of_view=False, patches=patches)
        labels = kmeans_segment(image, config).labels
        scores[patches] = dice(select_mask("lesion", labels, None, lightness)[1], lesion)
    assert scores[True] > 0.9 > scores[False] + 0.2


def test_the_config_switches_each_step() -> None:
    image, _ = _with_patch()
    config = KMeansConfig(size=128, field_of_view=False, hair_size=0)
    assert "patches" in prepared_features(image, config)[0].artefacts
    off = KMeansConfig(size=128, field_of_view=False, hair_size=0, patches=False)
    assert off.artefact_steps == ("rulers", "dark_corners", "ink")
    assert "patches" not in prepared_features(image, off)[0].artefacts
    assert prepared_features(image, off)[0].valid.all()
