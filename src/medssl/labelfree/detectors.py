"""Detectors of the artefacts that dermoscopy from many devices carries, run before clustering.

Each detector works on the working-size picture (CIELAB ``(3, h, w)`` or its lightness ``(h, w)``) and returns a
boolean mask. What happens to the pixels is chosen per artefact (``medssl.labelfree.preprocess``):

- calibration patches and stickers (``patch_mask``): saturated, uniform, compact regions touching the image or
  field-of-view border, and anywhere, flat discs and rectangles of a saturated colour, black or white.
  **Excluded** (label 0, like the field of view): they are large and not skin, and filling them from their edge
  would invent a flat skin-coloured area that clusters as skin or as a lesion.
- rulers and scale marks (``ruler_mask``): a long straight high-contrast bar near an edge with periodic ticks,
  or periodic ticks alone (a white bar on light skin has too little contrast of its own) with the ruler's body
  beyond them.
  **Excluded**: bars are wide, lie at the edge where no lesion needs them, and filling them smears the edge.
- ink marks (``ink_mask``): purple or blue strokes (a hue rule in CIELAB). **Inpainted** from the nearest
  skin: strokes are thin and often drawn around or across the lesion, so excluding them would cut holes into
  the lesion or its surrounding skin that the lesion-choosing rule then reads as artefact contact.
- dark corners and vignettes beyond the centred field of view (``dark_corner_mask``): dark regions connected
  to an image corner and lying mostly outside the inscribed ellipse. **Excluded**, as the field of view: dark
  pixels otherwise join the darkest cluster, with the lesion.

Thresholds were set on synthetic pictures and the first 40 PH2 images (CIELAB units: L* in [0, 100]).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]

# Patches: chroma above which any hue is foreign to skin and lesions (PH2 lesions and skin stay under ~45), and
# above which a hue outside skin's red-to-yellow range is foreign; the skin hue range in degrees.
_PATCH_CHROMA = 55.0
_FOREIGN_CHROMA = 22.0
_SKIN_HUE = (-25.0, 105.0)
_PATCH_MIN_SHARE = 0.002  # of the picture
_PATCH_EXTENT = 0.45  # area over bounding-box area: compact (strokes and rings are far below)
_PATCH_STD = 10.0  # spread of L* inside: uniform
# Patches anywhere in the picture, coloured or black or white: printed flat (L* spread inside, one pixel in from
# the rim) and regular (a disc or a rectangle, ``regularity``).
# On the 200 PH2 pictures (an ad-hoc check), foreign-coloured, black or white regions reach 0.86 at most
# (flat ones 0.82).
_BLACK, _WHITE, _GREY_CHROMA = 15.0, 90.0, 10.0
_FLAT_STD = 2.5
_REGULAR = 0.92
_PATCH_MAX_SHARE = 0.1  # of the picture: larger flat regions are the picture itself (a white close-up)
# Rulers: top-hat window, contrast (L*), the outer band searched, least bar length (share of the side), the
# reach of the ticks beyond the bar, and the least number of ticks.
_RULER_WINDOW = 15
_RULER_WINDOW_SHARE = 0.12  # of the short side: bars up to about this thick are found
_RULER_DEPTH = 18.0
_RULER_BAND = 0.25
_RULER_LENGTH = 0.3
_TICK_REACH = 12
_MIN_TICKS = 5
_TICK_ROWS = 2  # rows that must show the ticks (a chance row of specks is one)
_MARK_ROWS = 3  # consecutive rows of ticks that make scale marks without a bar
_BODY_TOLERANCE = 4.0  # L*: rows of the ruler's body beyond its ticks match the colour between the ticks
_TICK_SPREAD = 0.35
# Ink: purple-to-blue hues (degrees) and least chroma; least stroke size (share of the picture).
_INK_HUE = (-165.0, -20.0)
_INK_CHROMA = 18.0
_INK_MIN_SHARE = 0.0005
# Dark corners: darker than this share of the median lightness inside, and this share of the region outside
# the inscribed ellipse.
_CORNER_DARK = 0.6
_CORNER_OUTSIDE = 0.6


def chroma_hue(lab: FloatArray) -> tuple[FloatArray, FloatArray]:
    """CIELAB chroma and hue angle (degrees in (-180, 180]) of a ``(3, h, w)`` picture."""
    return np.hypot(lab[1], lab[2]).astype(np.float32), np.degrees(np.arctan2(lab[2], lab[1])).astype(np.float32)


def _touches_edge(region: BoolArray, outside: BoolArray) -> bool:
    """Whether a region reaches within 2 pixels of the image edge or of ``outside`` pixels."""
    near = ndimage.binary_dilation(np.pad(outside, 2, constant_values=True), iterations=2)[2:-2, 2:-2]
    return bool((region & near).any())


def regularity(region: BoolArray) -> float:
    """How much a region looks drawn: the larger of its overlap (intersection over union) with its bounding box
    and with the ellipse of the box's proportions, centre and the region's area (1 for a rectangle or an
    axis-aligned disc, also when resized; the area, not the box, sets the ellipse, so a pixelated disc scores
    high too)."""
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return 0.0
    box = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = box.shape
    r, c = np.mgrid[:h, :w]
    scale = math.sqrt(float(box.sum()) / (math.pi * h * w / 4.0))
    ellipse = ((r - (h - 1) / 2) / (scale * h / 2)) ** 2 + ((c - (w - 1) / 2) / (scale * w / 2)) ** 2 <= 1.0
    on_ellipse = float((box & ellipse).sum()) / float((box | ellipse).sum())
    return max(float(box.mean()), on_ellipse)


def patch_mask(lab: FloatArray, valid: BoolArray) -> BoolArray:
    """Calibration patches and stickers: connected regions of foreign colour (chroma above ``_PATCH_CHROMA``, or
    above ``_FOREIGN_CHROMA`` with a hue outside skin's) that touch the image or field-of-view border, cover at
    least ``_PATCH_MIN_SHARE`` of the picture, are compact and uniform; and, anywhere in the field of view,
    regions of foreign colour or of black or white that are flat and regular (a disc or a rectangle,
    ``regularity``): a dark lesion core or a glare spot can be flat, but is not drawn.

    Args:
        lab: ``(3, h, w)`` CIELAB picture.
        valid: ``(h, w)`` field of view.

    Returns:
        ``(h, w)`` mask of the patches, grown by 2 pixels (their blurred rims).
    """
    chroma, hue = chroma_hue(lab)
    skin_hue = (hue >= _SKIN_HUE[0]) & (hue <= _SKIN_HUE[1])
    coloured = (chroma > _PATCH_CHROMA) | ((chroma > _FOREIGN_CHROMA) & ~skin_hue)
    grey = (chroma < _GREY_CHROMA) & ((lab[0] < _BLACK) | (lab[0] > _WHITE))
    found = np.zeros(valid.shape, dtype=bool)
    for candidates, at_border in ((coloured, True), (coloured | grey, False)):
        opened = ndimage.binary_opening(candidates & valid, iterations=2)  # thin strokes (ink) are not patches
        components, _ = ndimage.label(opened)
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            region = components == index
            if box is None or region.sum() < _PATCH_MIN_SHARE * region.size:
                continue
            if at_border:
                extent = float(region[box].mean())
                hit = extent >= _PATCH_EXTENT and float(lab[0][region].std()) <= _PATCH_STD
                hit = hit and _touches_edge(region, ~valid)
            else:
                core = ndimage.binary_erosion(region)
                hit = region.sum() <= _PATCH_MAX_SHARE * region.size and core.any()
                hit = hit and float(lab[0][core].std()) <= _FLAT_STD and regularity(region[box]) >= _REGULAR
            if hit:
                found |= region
    return ndimage.binary_dilation(found, iterations=2) & valid if found.any() else found


def ruler_mask(luminance: FloatArray, valid: BoolArray) -> BoolArray:
    """Rulers and scale marks: a straight bar (darker or brighter than a closing or opening of ``_RULER_WINDOW``
    pixels or ``_RULER_WINDOW_SHARE`` of the short side, whichever is larger) at least ``_RULER_LENGTH`` of the
    side long, parallel to and within ``_RULER_BAND`` of an image edge, with at least ``_MIN_TICKS`` regularly
    spaced ticks of either polarity in ``_TICK_ROWS`` of the rows next to or across it (a straight hair has none).

    Args:
        luminance: ``(h, w)`` lightness.
        valid: ``(h, w)`` field of view.

    Returns:
        ``(h, w)`` mask of the rulers (the rectangle spanned by each bar and its tick rows), grown by 1 pixel.
    """
    found = np.zeros(valid.shape, dtype=bool)
    if not valid.any():
        return found
    window = max(_RULER_WINDOW, 2 * round(_RULER_WINDOW_SHARE * min(valid.shape) / 2) + 1)
    # Outside the field of view and beyond the image edge the median inside: the dark rim is no bar, and a bar
    # lying on the image edge (as rulers do) is a valley or a ridge like one inside.
    median = np.float32(np.median(luminance[valid]))
    filled = np.pad(np.where(valid, luminance, median), window, constant_values=median)
    footprint = np.ones((window, window), dtype=bool)
    inner = (slice(window, -window), slice(window, -window))
    dark = ((ndimage.grey_closing(filled, footprint=footprint) - filled) > _RULER_DEPTH)[inner] & valid
    bright = ((filled - ndimage.grey_opening(filled, footprint=footprint)) > _RULER_DEPTH)[inner] & valid
    # Bars of one polarity at a time (the gaps between dark ticks are bright); ticks of either (a dark bar
    # carries bright ticks across it, a thin one dark ticks beside it).
    for bar, other in ((dark, bright), (bright, dark)):
        found |= _horizontal_rulers(bar, (bar, other)) | _horizontal_rulers(bar.T, (bar.T, other.T)).T
        # Scale marks without a bar of their own contrast (a white bar on light skin): the ticks alone.
        found |= _scale_marks(bar, luminance) | _scale_marks(bar.T, luminance.T).T
    return ndimage.binary_dilation(found) & valid if found.any() else found


def _horizontal_rulers(thin: BoolArray, tick_maps: tuple[BoolArray, ...]) -> BoolArray:
    """The horizontal bars among the ``thin`` contrast pixels that have regular ticks in ``tick_maps``
    (``ruler_mask``), each as the rectangle of its columns and of the rows from the bar to its tick rows."""
    h, w = thin.shape
    band = np.zeros_like(thin)
    edge = max(1, round(_RULER_BAND * h))
    band[:edge], band[h - edge :] = True, True
    bars = ndimage.binary_opening(thin & band, structure=np.ones((1, max(3, round(_RULER_LENGTH * w))), bool))
    components, n = ndimage.label(bars)
    found = np.zeros_like(thin)
    for index in range(1, n + 1):
        bar = components == index
        rows = np.flatnonzero(bar.any(axis=1))
        cols = np.flatnonzero(bar.any(axis=0))
        near = range(max(rows[0] - _TICK_REACH, 0), min(rows[-1] + _TICK_REACH + 1, h))
        along = slice(cols[0], cols[-1] + 1)
        grown = ndimage.binary_dilation(bar)
        tick_rows = [r for r in near if any(_regular_ticks(m[r, along] & ~grown[r, along]) for m in tick_maps)]
        if len(tick_rows) >= _TICK_ROWS:
            found[min(rows[0], tick_rows[0]) : max(rows[-1], tick_rows[-1]) + 1, along] = True
    return found


def _scale_marks(thin: BoolArray, luminance: FloatArray) -> BoolArray:
    """Rows within ``_RULER_BAND`` of the top or bottom edge whose ``thin`` pixels are regular ticks spanning at
    least ``_RULER_LENGTH`` of the side, in runs of ``_MARK_ROWS`` consecutive rows; each run as the rectangle of
    its rows and the columns its ticks span, grown away from the edge over the rows of the ticks' background
    colour (the ruler's body beyond its ticks, up to the run's height)."""
    h, w = thin.shape
    edge = max(1, round(_RULER_BAND * h))
    spans: dict[int, tuple[int, int]] = {}
    for r in (*range(edge), *range(max(h - edge, edge), h)):
        cols = np.flatnonzero(thin[r])
        if len(cols) and cols[-1] - cols[0] >= _RULER_LENGTH * w and _regular_ticks(thin[r, cols[0] : cols[-1] + 1]):
            spans[r] = (int(cols[0]), int(cols[-1]) + 1)
    marked = np.zeros(h, dtype=bool)
    marked[list(spans)] = True
    found = np.zeros_like(thin)
    for (rows,) in ndimage.find_objects(ndimage.label(marked)[0]):  # runs of consecutive rows
        run = range(rows.start, rows.stop)
        if len(run) < _MARK_ROWS:
            continue
        along = slice(min(spans[r][0] for r in run), max(spans[r][1] for r in run))
        top, bottom = run[0], run[-1] + 1
        body = luminance[top:bottom, along][~thin[top:bottom, along]]
        colour = float(np.median(body)) if body.size else 0.0
        step = 1 if top < h - bottom else -1  # away from the nearer edge
        for _ in range(len(run)):
            nxt = bottom if step > 0 else top - 1
            if not 0 <= nxt < h or abs(float(np.median(luminance[nxt, along])) - colour) > _BODY_TOLERANCE:
                break
            top, bottom = (top, bottom + 1) if step > 0 else (top - 1, bottom)
        found[top:bottom, along] = True
    return found


def _regular_ticks(profile: npt.NDArray[np.bool_]) -> bool:
    """Whether a profile along a bar holds at least ``_MIN_TICKS`` runs, narrow (under half the gap between
    them on average) and regularly spaced (gaps between run starts vary by less than ``_TICK_SPREAD`` of their
    mean)."""
    edges = np.diff(np.concatenate([[0], profile.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) < _MIN_TICKS:
        return False
    gaps = np.diff(starts)
    widths = stops - starts
    return bool(gaps.std() < _TICK_SPREAD * gaps.mean() and widths.mean() < 0.5 * gaps.mean())


def ink_mask(lab: FloatArray, valid: BoolArray) -> BoolArray:
    """Ink marks: purple-to-blue pixels (hue in ``_INK_HUE``, chroma above ``_INK_CHROMA``) in strokes of at least
    ``_INK_MIN_SHARE`` of the picture, grown by 1 pixel.

    Args:
        lab: ``(3, h, w)`` CIELAB picture.
        valid: ``(h, w)`` pixels to search.

    Returns:
        ``(h, w)`` mask of the strokes.
    """
    chroma, hue = chroma_hue(lab)
    ink = (hue >= _INK_HUE[0]) & (hue <= _INK_HUE[1]) & (chroma > _INK_CHROMA) & valid
    components, n = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ink
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    keep = sizes >= _INK_MIN_SHARE * ink.size
    keep[0] = False
    strokes = keep[components]
    return ndimage.binary_dilation(strokes) & valid if strokes.any() else strokes


def inpaint_nearest(features: FloatArray, holes: BoolArray) -> FloatArray:
    """``(F, h, w)`` features with the ``holes`` pixels taken from their nearest pixel outside the holes."""
    if not holes.any() or holes.all():
        return features
    _, (rows, cols) = ndimage.distance_transform_edt(holes, return_indices=True)
    return features[:, rows, cols]


def dark_corner_mask(luminance: FloatArray, valid: BoolArray) -> BoolArray:
    """Dark corners and off-centre vignettes: regions darker than ``_CORNER_DARK`` times the median lightness
    inside ``valid`` that contain an image corner and lie mostly (``_CORNER_OUTSIDE``) outside the ellipse
    inscribed in the picture; a lesion touching one border lies mostly inside it and is kept.

    Args:
        luminance: ``(h, w)`` lightness.
        valid: ``(h, w)`` field of view (what the field-of-view step already removed is not searched).

    Returns:
        ``(h, w)`` mask of the dark corners.
    """
    h, w = luminance.shape
    if not valid.any():
        return np.zeros_like(valid)
    dark = (luminance < _CORNER_DARK * float(np.median(luminance[valid]))) & valid
    components, _ = ndimage.label(dark, structure=np.ones((3, 3), dtype=bool))
    rows, cols = np.mgrid[:h, :w]
    outside = np.hypot((rows - (h - 1) / 2) / (h / 2), (cols - (w - 1) / 2) / (w / 2)) > 1.0
    corners = components[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]]
    found = np.zeros_like(valid)
    for index in set(corners[corners > 0].tolist()):
        region = components == index
        if float(outside[region].mean()) >= _CORNER_OUTSIDE:
            found |= region
    return ndimage.binary_dilation(found, iterations=2) & valid if found.any() else found
