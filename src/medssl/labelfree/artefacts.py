"""Seeded, realistic dermoscopy artefacts for stress-testing label-free segmentation (a robustness set).

Each artefact is a function ``(image, mask, rng, **params) -> (image, mask)`` on an RGB ``uint8`` picture
``(H, W, 3)`` and its binary lesion mask ``(H, W)``; it returns a new picture and the mask that stays right for
it (unchanged, or moved exactly as the picture was). ``corrupt(image, mask, kind, seed)`` draws every random
choice from a ``numpy.random.Generator`` seeded by (the image, the artefact, the seed), so the same call always
gives the same picture. What each imitates:

- ``patch``: the coloured calibration discs and squares that some dermatoscopes and clinics put in the frame
  (saturated colours, at the border or corners, clear of the lesion);
- ``ruler``: a millimetre ruler or scale bar along an image edge, with regular ticks and optional numbers;
- ``ink``: gentian-violet skin-marker strokes and dots drawn around a lesion before excision;
- ``vignette``: the dark corners beyond the round field of view of a contact dermatoscope;
- ``small``: a small lesion photographed with a wide field (a few percent of the image), made by padding the
  picture with skin and resizing it back;
- ``border``: a lesion cut by the image border (an off-centre or too-close shot), made by cropping.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medssl.errors import MedsslError
from medssl.labelfree.reframe import border, small

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Artefact = Callable[..., tuple[Image, Mask]]

# Saturated calibration colours (RGB): red, green, blue, yellow, cyan, magenta, white, black.
PATCH_COLOURS = ((220, 30, 30), (30, 170, 60), (30, 60, 210), (240, 220, 30), (30, 200, 220), (210, 40, 180),
                 (245, 245, 245), (20, 20, 20))  # fmt: skip
# Gentian violet and the blue of surgical skin markers.
INK_COLOURS = ((95, 40, 150), (70, 45, 170), (120, 50, 160), (50, 60, 170))
# 3x5 bitmaps of the digits, for ruler numbers.
_DIGITS = ("111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
           "111100111001111", "111100111101111", "111001001001001", "111101111101111", "111101111001111")  # fmt: skip


def _short(image: Image) -> int:
    return int(min(image.shape[:2]))


def _clear_of(mask: Mask, margin: float) -> Mask:
    """Pixels farther than ``margin`` pixels from every mask pixel (everything when the mask is empty)."""
    if not mask.any():
        return np.ones(mask.shape, dtype=bool)
    return np.asarray(ndimage.distance_transform_edt(~mask) > margin)


def _paint(image: Image, where: Mask, colour: npt.ArrayLike, alpha: float, rng: np.random.Generator) -> Image:
    """Blend ``colour`` (with mild noise, as a photographed surface has) into ``image`` at ``where``."""
    out = image.astype(np.float64)
    shade = np.asarray(colour, dtype=np.float64) + rng.normal(0.0, 4.0, (int(where.sum()), 3))
    out[where] = (1 - alpha) * out[where] + alpha * shade
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def patch(image: Image, mask: Mask, rng: np.random.Generator, count: int | None = None) -> tuple[Image, Mask]:
    """Coloured calibration discs and squares at the border or corners, never within a margin of the lesion.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask (unchanged; no patch pixel lies within 3 % of the short side of it).
        rng: the random generator.
        count: number of patches (None: 1 to 3); a patch that finds no room clear of the lesion is left out.

    Returns:
        The picture with the patches, and the mask.
    """
    short = _short(image)
    free = _clear_of(mask, 0.03 * short)
    rows, cols = np.mgrid[: image.shape[0], : image.shape[1]]
    out = image.copy()
    for _ in range(count if count is not None else int(rng.integers(1, 4))):
        size = rng.uniform(0.05, 0.15) * short
        disc = bool(rng.random() < 0.5)
        colour = PATCH_COLOURS[int(rng.integers(len(PATCH_COLOURS)))]
        for _attempt in range(30):
            # Centre within one patch size of an edge (or in a corner).
            r, c = rng.uniform(size / 2, np.array(image.shape[:2]) - size / 2)
            inset = size / 2 + rng.uniform(0, size / 2)
            if rng.random() < 0.5:
                r = inset if rng.random() < 0.5 else image.shape[0] - inset
            else:
                c = inset if rng.random() < 0.5 else image.shape[1] - inset
            if disc:
                shape = (rows - r) ** 2 + (cols - c) ** 2 <= (size / 2) ** 2
            else:
                shape = (np.abs(rows - r) <= size / 2) & (np.abs(cols - c) <= size / 2)
            if shape.any() and free[shape].all():
                out = _paint(out, shape, colour, 1.0, rng)
                break
    return out, mask.copy()


def ruler(
    image: Image, mask: Mask, rng: np.random.Generator, dark: bool | None = None, numbers: bool | None = None
) -> tuple[Image, Mask]:
    """A ruler bar along the image edge farthest from the lesion, with regular ticks (every fifth longer).

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask (unchanged; the bar and ticks are never painted over mask pixels).
        rng: the random generator.
        dark: dark bar with white ticks (None: drawn at random; False: white bar with dark ticks).
        numbers: write a number at every long tick (None: drawn at random).

    Returns:
        The picture with the ruler, and the mask.
    """
    dark = bool(rng.random() < 0.5) if dark is None else dark
    numbers = bool(rng.random() < 0.5) if numbers is None else numbers
    short = _short(image)
    thick = max(4, round(rng.uniform(0.05, 0.09) * short))
    # Work on a picture turned so that the ruler lies along its top edge; the edge with least lesion wins.
    edges = [np.rot90(mask, k) for k in range(4)]
    turn = min(range(4), key=lambda k: (int(edges[k][:thick].sum()), int(rng.integers(100))))
    img = np.rot90(image, turn).copy()
    bar = np.zeros(img.shape[:2], dtype=bool)
    bar[:thick] = True
    base, ink = ((35, 35, 35), (235, 235, 235)) if dark else ((235, 235, 230), (25, 25, 25))
    ticks = np.zeros_like(bar)
    step = max(3, round(rng.uniform(0.025, 0.04) * short))
    width = max(1, step // 5)
    start = int(rng.integers(step))
    for n, col in enumerate(range(start, img.shape[1] - width, step)):
        ticks[: thick * 3 // 4 if n % 5 == 0 else thick // 2, col : col + width] = True
        if numbers and n % 5 == 0 and n:
            _digits(ticks, str(n // 5), thick, col + 2 * width)
    free = ~edges[turn]
    img = _paint(img, bar & free, base, 0.95, rng)
    img = _paint(img, bar & ticks & free, ink, 1.0, rng)
    return np.ascontiguousarray(np.rot90(img, -turn)), mask.copy()


def _digits(canvas: Mask, text: str, thick: int, col: int) -> None:
    """Write ``text`` in the lower part of a ruler bar of height ``thick``, starting at column ``col``."""
    scale = max(1, thick // 10)
    top = thick - 6 * scale
    for digit in text:
        glyph = np.array([int(b) for b in _DIGITS[int(digit)]], dtype=bool).reshape(5, 3)
        glyph = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        bottom, right = top + glyph.shape[0], col + glyph.shape[1]
        if top < 0 or right > canvas.shape[1]:
            return
        canvas[top:bottom, col:right] |= glyph
        col = right + scale


def ink(image: Image, mask: Mask, rng: np.random.Generator, strokes: int | None = None) -> tuple[Image, Mask]:
    """Gentian-violet marker strokes (thin curves) and dots around the lesion, never on it.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask (unchanged; no ink within 2 % of the short side of it).
        rng: the random generator.
        strokes: number of strokes and dots (None: 2 to 5).

    Returns:
        The inked picture, and the mask.
    """
    short = _short(image)
    distance = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, short / 4)
    # Starting points: a ring around the lesion (the clinician marks its surroundings).
    ring = np.argwhere((distance > 0.04 * short) & (distance < 0.15 * short))
    if not len(ring):
        ring = np.argwhere(distance > 0.04 * short)
    canvas = np.zeros(mask.shape, dtype=bool)
    for _ in range(strokes if strokes is not None else int(rng.integers(2, 6))):
        if not len(ring):
            break
        start = ring[int(rng.integers(len(ring)))].astype(np.float64)
        if rng.random() < 0.3:
            canvas[tuple(np.clip(np.rint(start).astype(int), 0, np.array(mask.shape) - 1))] = True
            continue
        # A quadratic Bezier curve: a gently bent line of 10-30 % of the short side.
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.1, 0.3) * short
        end = start + length * np.array([np.sin(angle), np.cos(angle)])
        bend = (start + end) / 2 + rng.normal(0, 0.2 * length, 2)
        t = np.linspace(0, 1, int(length * 3))[:, None]
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        inside = np.all((points >= 0) & (points <= np.array(mask.shape) - 1), axis=1)
        idx = np.rint(points[inside]).astype(int)
        canvas[idx[:, 0], idx[:, 1]] = True
    radius = rng.uniform(0.004, 0.012) * short + 0.5
    strokes_mask = ndimage.distance_transform_edt(~canvas) <= radius if canvas.any() else canvas
    where = strokes_mask & (distance > 0.02 * short)
    colour = INK_COLOURS[int(rng.integers(len(INK_COLOURS)))]
    return _paint(image, where, colour, rng.uniform(0.6, 0.85), rng), mask.copy()


def vignette(image: Image, mask: Mask, rng: np.random.Generator, strength: float | None = None) -> tuple[Image, Mask]:
    """Dark corners beyond a circular field of view of random radius, centre and softness.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask (unchanged: the lesion is where it was, only darker if the ring reaches it).
        rng: the random generator.
        strength: darkening at the far corners, 0 (none) to 1 (black) (None: 0.5 to 0.95).

    Returns:
        The darkened picture, and the mask.
    """
    strength = rng.uniform(0.5, 0.95) if strength is None else strength
    if not 0 <= strength <= 1:
        raise MedsslError(f"vignette strength must be in [0, 1], not {strength}")
    h, w = mask.shape
    half_diagonal = np.hypot(h, w) / 2
    centre = np.array([h, w]) / 2 + rng.normal(0, 0.03 * min(h, w), 2)
    radius = rng.uniform(0.55, 0.8) * half_diagonal
    soft = rng.uniform(0.02, 0.1) * half_diagonal
    rows, cols = np.mgrid[:h, :w]
    beyond = (np.hypot(rows - centre[0], cols - centre[1]) - radius) / soft
    factor = 1 - strength * np.clip(beyond, 0, 1)
    out = image.astype(np.float64) * factor[..., None] + rng.normal(0, 2.0, image.shape) * (factor < 1)[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask.copy()


ARTEFACTS: dict[str, Artefact] = {
    "patch": patch,
    "ruler": ruler,
    "ink": ink,
    "vignette": vignette,
    "small": small,
    "border": border,
}


def artefact_rng(image: Image, kind: str, seed: int, key: str | None = None) -> np.random.Generator:
    """The generator for one (image, artefact, seed): the image is named by ``key`` or, without one, by a
    checksum of its pixels."""
    image_id = zlib.crc32(key.encode()) if key is not None else zlib.crc32(np.ascontiguousarray(image).tobytes())
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), image_id])


def corrupt(
    image: npt.ArrayLike, mask: npt.ArrayLike, kind: str, seed: int = 0, *, key: str | None = None, **params: Any
) -> tuple[Image, Mask]:
    """Add one artefact to a picture, reproducibly, and return the picture with the mask that fits it.

    Args:
        image: ``(H, W, 3)`` uint8 RGB picture.
        mask: ``(H, W)`` lesion mask (non-zero: lesion).
        kind: an artefact of ``ARTEFACTS``.
        seed: the seed (non-negative); with the image (or ``key``) and ``kind`` it fixes every random draw.
        key: a name for the image (e.g. its file stem) to seed by instead of its pixels.
        **params: the artefact's own parameters (e.g. ``scale`` for ``small``).

    Returns:
        The corrupted ``(H, W, 3)`` uint8 picture and its ``(H, W)`` boolean mask.

    Raises:
        MedsslError: an unknown artefact, a negative seed, or a picture or mask of the wrong shape or type.
    """
    if kind not in ARTEFACTS:
        raise MedsslError(f"unknown artefact {kind!r}; choose one of {', '.join(ARTEFACTS)}")
    if seed < 0:
        raise MedsslError(f"seed must not be negative, not {seed}")
    picture = np.asarray(image)
    lesion = np.asarray(mask)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise MedsslError(f"artefacts take (H, W, 3) uint8 RGB pictures, not {picture.dtype} {picture.shape}")
    if lesion.shape != picture.shape[:2]:
        raise MedsslError(f"mask shape {lesion.shape} does not match picture shape {picture.shape[:2]}")
    rng = artefact_rng(picture, kind, seed, key)
    return ARTEFACTS[kind](picture.copy(), lesion > 0, rng, **params)
