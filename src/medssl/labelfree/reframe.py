"""Artefacts that change the framing of a dermoscopy picture: a wider field (``small``) and a crop through the
lesion (``border``). Both move the lesion mask exactly as the picture moves; ``medssl.labelfree.artefacts`` seeds
them and lists them with the others.

``small`` takes the picture's lighting off (``illumination``) and lets the picture fade into the padding where
its lighting falls: padding the picture as it is would leave its own dark corners beyond the round field of view
as a frame in the middle of the new picture (a picture in a picture), which no camera makes. Dark corners are the
``vignette`` artefact's part.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medssl.errors import MedsslError

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Field = npt.NDArray[np.float64]

_LIT = 0.8  # skin at >= 80 % of the brightest skin is well inside the field of view (it sets the padding's colour)
_RIM = (0.6, 0.9)  # a picture's pixels fade into the padding as its lighting falls from 0.9 to 0.6


def resize(array: npt.NDArray[Any], shape: tuple[int, int], order: int) -> npt.NDArray[Any]:
    """Resize the first two axes to ``shape``; linear with Gaussian anti-aliasing, rounded and clipped to 0..255
    in the array's type (order 1), or nearest (0)."""
    factors = [shape[0] / array.shape[0], shape[1] / array.shape[1]] + [1.0] * (array.ndim - 2)
    data = array.astype(np.float64) if order else array
    if order:
        sigma = [max(0.0, (1 / f - 1) / 2) for f in factors[:2]] + [0.0] * (array.ndim - 2)
        data = ndimage.gaussian_filter(data, sigma)
    out = ndimage.zoom(data, factors, order=order, grid_mode=True, mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(array.dtype) if order else out


def _skin_level(values: npt.NDArray[np.float64]) -> float:
    kept = values[~np.isnan(values)]
    # A window mostly of lesion says little of the lighting: left to be filled in from its neighbours.
    return float(np.median(kept)) if kept.size >= 0.25 * values.size else float("nan")


def illumination(image: Image, exclude: Mask) -> Field:
    """The picture's lighting: its brightness on skin as a share of the brightest skin, ``(H, W)`` in [0, 1].

    About 1 over an evenly lit field of view and falling towards 0 in dark corners beyond it. The median over
    windows of a sixth of the short side, with ``exclude`` (the lesion, widened by 3 % of the short side for its
    halo) left out, so thin hair, the lesion and its halo leave no trace and the edge of the field of view stays
    in place (a median keeps steps); computed on a grid of about 64 rows or columns and interpolated back. A window
    with under a quarter of skin is filled in from the known values around it (Gaussian-weighted), else the nearest.
    """
    h, w = exclude.shape
    halo = ndimage.binary_dilation(exclude, iterations=max(1, round(0.03 * min(h, w)))) if exclude.any() else exclude
    if halo.all():
        return np.ones((h, w))
    step = max(1, min(h, w) // 64)
    light = image.astype(np.float64).mean(axis=2)[::step, ::step]
    light[halo[::step, ::step]] = np.nan
    size = max(3, min(light.shape) // 6 | 1)
    field = ndimage.generic_filter(light, _skin_level, size=size, mode="nearest")
    holes = np.isnan(field)
    if holes.all():
        return np.ones((h, w))
    if holes.any():  # a Gaussian-weighted mean of the known values around a hole, else the nearest one
        known = np.where(holes, 0.0, field)
        weight = ndimage.gaussian_filter((~holes).astype(np.float64), size / 2)
        smooth = ndimage.gaussian_filter(known, size / 2) / np.maximum(weight, 1e-12)
        nearest = ndimage.distance_transform_edt(holes, return_distances=False, return_indices=True)
        field = np.where(~holes, field, np.where(weight > 1e-3, smooth, field[tuple(nearest)]))
    field = ndimage.zoom(field, (h / field.shape[0], w / field.shape[1]), order=1, grid_mode=True, mode="nearest")
    top = np.percentile(field, 95)
    return np.clip(field / top, 0, 1) if top > 0 else np.ones((h, w))


def small(image: Image, mask: Mask, rng: np.random.Generator, scale: float | None = None) -> tuple[Image, Mask]:
    """Shrink the lesion as a wider field would: pad the picture with skin and resize it back to its size.

    The picture's lighting (``illumination``) is taken off first, and the picture fades into the padding at its
    edges and where its lighting falls (its own dark rim beyond the field of view), so the result is an evenly lit
    wide field with no frame of dark corners around the lesion's old picture. The padding is skin of the evenly lit
    picture's colour (the median of its well-lit skin) with mild smooth texture and noise; the picture sits at a
    random place in it. Reflect-padding is not used: it would mirror a lesion near the edge into the padding,
    outside the mask.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask, padded with background and resized the same way (nearest).
        rng: the random generator.
        scale: the picture's side after the resize, as a share of its side before (None: 0.35 to 0.5); the
            lesion's area share shrinks by about ``scale ** 2``.

    Returns:
        The padded and resized picture and its mask.

    Raises:
        MedsslError: ``scale`` not in (0, 1].
    """
    scale = rng.uniform(0.35, 0.5) if scale is None else scale
    if not 0 < scale <= 1:
        raise MedsslError(f"small: scale must be in (0, 1], not {scale}")
    h, w = mask.shape
    big = (round(h / scale), round(w / scale))
    field = illumination(image, mask)
    even = image.astype(np.float64) / np.maximum(field, 0.05)[..., None]
    lit_skin = (field >= _LIT) & ~mask
    skin = np.median((even[lit_skin] if lit_skin.any() else even.reshape(-1, 3)), axis=0)
    canvas = skin + ndimage.gaussian_filter(rng.normal(0, 1, (*big, 3)), (8, 8, 0)) * 40 + rng.normal(0, 2.0, (*big, 3))
    top, left = int(rng.integers(big[0] - h + 1)), int(rng.integers(big[1] - w + 1))
    # The picture fades into the skin over 6 % of its short side at its edges, and where its own lighting fails.
    feather = max(1.0, 0.06 * min(h, w))
    r, c = np.arange(h), np.arange(w)
    inner = np.minimum(np.minimum(r, h - 1 - r)[:, None], np.minimum(c, w - 1 - c)[None])
    weight = np.clip((inner + 0.5) / feather, 0, 1) * np.clip((field - _RIM[0]) / (_RIM[1] - _RIM[0]), 0, 1)
    window = canvas[top : top + h, left : left + w]
    canvas[top : top + h, left : left + w] = weight[..., None] * even + (1 - weight[..., None]) * window
    padded_mask = np.zeros(big, dtype=bool)
    padded_mask[top : top + h, left : left + w] = mask
    return resize(canvas, (h, w), 1).astype(np.uint8), resize(padded_mask, (h, w), 0).astype(bool)


def border(image: Image, mask: Mask, rng: np.random.Generator, crop: float | None = None) -> tuple[Image, Mask]:
    """Cut the lesion with the image border: crop an off-centre window through the lesion and resize it back.

    Args:
        image: ``(H, W, 3)`` uint8 picture.
        mask: ``(H, W)`` lesion mask, non-empty; cropped and resized the same way (nearest).
        rng: the random generator.
        crop: the window's side as a share of the picture's (None: 0.55 to 0.8).

    Returns:
        The cropped picture, whose mask touches at least one image edge, and that mask.

    Raises:
        MedsslError: an empty mask, ``crop`` not in (0, 1), or a lesion that no window can cut.
    """
    if not mask.any():
        raise MedsslError("border: the mask is empty; give a picture with a lesion mask")
    crop = rng.uniform(0.55, 0.8) if crop is None else crop
    if not 0 < crop < 1:
        raise MedsslError(f"border: crop must be in (0, 1), not {crop}")
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    low, high = np.array([rows.min(), cols.min()]), np.array([rows.max(), cols.max()])
    for _ in range(20):  # a smaller window whenever none of this size can cut the lesion
        size = np.array([max(2, round(h * crop)), max(2, round(w * crop))])
        start = _cutting_window(low, high, size, np.array([h, w]), rng)
        if start is not None:
            window = mask[start[0] : start[0] + size[0], start[1] : start[1] + size[1]]
            picture = image[start[0] : start[0] + size[0], start[1] : start[1] + size[1]]
            return resize(picture, (h, w), 1), resize(window, (h, w), 0).astype(bool)
        crop *= 0.85
    raise MedsslError("border: no window cuts this lesion; give a lesion smaller than the picture")


def _cutting_window(
    low: npt.NDArray[np.int64],
    high: npt.NDArray[np.int64],
    size: npt.NDArray[np.int64],
    shape: npt.NDArray[np.int64],
    rng: np.random.Generator,
) -> npt.NDArray[np.int64] | None:
    """The top-left corner of a ``size`` window inside ``shape`` one of whose edges crosses the lesion's
    bounding box ``low..high`` strictly inside it (30-70 % across when it fits), or None when none fits."""
    for side in rng.permutation(4):
        axis, far = int(side) % 2, int(side) >= 2  # far: the window's bottom or right edge cuts the lesion
        # The window's start on this axis: it must fit in the picture, and its cutting edge cross the lesion.
        if far:
            first, last = max(size[axis] - 1, low[axis] + 1), min(shape[axis] - 1, high[axis] - 1)
        else:
            first, last = max(0, low[axis] + 1), min(shape[axis] - size[axis], high[axis] - 1)
        if first > last:
            continue
        inner = low[axis] + np.array([0.3, 0.7]) * (high[axis] - low[axis])
        a, b = max(first, inner[0]), min(last, inner[1])
        cut = rng.uniform(a, b) if a <= b else rng.uniform(first, last)
        start = np.zeros(2)
        start[axis] = cut - size[axis] + 1 if far else cut
        other = 1 - axis
        start[other] = (low[other] + high[other] - size[other]) / 2 + rng.uniform(-0.15, 0.15) * size[other]
        corner: npt.NDArray[np.int64] = np.clip(np.rint(start), 0, shape - size).astype(np.int64)
        return corner
    return None
