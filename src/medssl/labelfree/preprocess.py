"""From an input picture to the working-size features that the label-free methods cluster.

Steps (each can be switched off): intensities to [0, 1]; resize to the working size; colour space (CIELAB
for colour pictures, whose distances follow perceived colour differences, or plain RGB); the field of view of
a dermoscope or fundus camera (the dark, vignetted ring around a circular view is excluded, since its dark
pixels otherwise join the darkest cluster); on colour pictures, the artefacts of ``medssl.labelfree.detectors``
(calibration patches, rulers and dark corners excluded like the field of view, ink strokes inpainted); thin
dark hair removed by a morphological black-hat and filled from the closing; Gaussian smoothing. Outside the
clustered pixels the features are set to their mean inside, so that the excluded pixels produce no edges.

Arrays are ``(C, H, W)`` (channel-first, as ``medssl.data.io.read_image`` returns 2D pictures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from scipy import ndimage

from medssl.errors import MedsslError
from medssl.labelfree.detectors import dark_corner_mask, ink_mask, inpaint_nearest, patch_mask, ruler_mask

COLOUR_SPACES = ("lab", "rgb")
#: The artefact steps of colour pictures, in the order they run (each a ``LabelFreeConfig`` switch).
ARTEFACT_STEPS = ("patches", "rulers", "dark_corners", "ink")
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

# sRGB (D65) to XYZ, and the D65 white point, for the CIELAB conversion.
_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.9505, 1.0, 1.089])
# Field of view: radial profile bin width (in half short sides) and the least darkening (L*) that counts as a
# vignette; the field ends where the profile has lost this share of the drop from skin to the dark corners
# (0.1: with 0.2 a darkening rim inside the field still joined the lesion; k-means Dice on the first 40 PH2
# images 0.910 against 0.902).
_RING_BIN = 0.05
_MIN_DROP = 20.0
_DROP_SHARE = 0.1
# A field of view that would leave less than ``_MIN_FIELD`` of the picture must be dark beyond its edge: the
# median there must have lost ``_OUTSIDE_DROP`` of the drop (a dermoscope's small circle in a black frame has;
# a zoomed, off-centre shot whose skin darkens gently to one side has not).
_MIN_FIELD = 0.4
_OUTSIDE_DROP = 0.5
# The field's edge must be where the light falls: in at least ``_EDGE_SECTORS`` of 16 sectors around the centre
# the median lightness drops by ``_EDGE_DROP`` (L*) from a band just inside the edge to one just beyond it (each
# ``_EDGE_BAND`` half short sides wide). A dark lesion cut by a border lowers the profile's outer rings as a
# vignette does, but the circle then crosses the lesion and the skin without a drop (first 40 PH2 images: every
# vignette, clean or added, drops in >= 0.31 of the sectors; the circles that cut lesions, <= 0.12).
_EDGE_SECTORS = 0.25
_EDGE_DROP = 5.0
_EDGE_BAND = 0.15
# Artefacts: the least share of the field of view that their exclusion must leave.
_MIN_LEFT = 0.25
# Hair: black-hat depth (L* units) above which a pixel is taken as hair.
_HAIR_DEPTH = 10.0


@dataclass
class PreparedImage:
    """Working-size features of one picture.

    Attributes:
        features: ``(F, h, w)`` float32 features (CIELAB in its own units, RGB in [0, 100], grey in [0, 100]);
            outside ``valid`` they hold their mean inside it.
        luminance: ``(h, w)`` lightness in [0, 100] (CIELAB L*, or the grey value), before hair removal.
        valid: ``(h, w)`` pixels that are clustered: the field of view (all True when none was found or detection
            is off) less the excluded artefacts.
        hair: ``(h, w)`` pixels replaced by the hair removal.
        input_shape: ``(H, W)`` of the input picture.
        artefacts: per artefact step that found something (``patches``, ``rulers``, ``dark_corners``: excluded
            from ``valid``; ``ink``: inpainted), its ``(h, w)`` mask.
    """

    features: FloatArray
    luminance: FloatArray
    valid: BoolArray
    hair: BoolArray
    input_shape: tuple[int, int]
    artefacts: dict[str, BoolArray] = field(default_factory=dict)


def to_unit_range(image: npt.NDArray[np.generic]) -> FloatArray:
    """Intensities of ``(C, H, W)`` to [0, 1]: uint8 by 255; other types by their 0.5-99.5 percentiles."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    values = image.astype(np.float32)
    lo, hi = np.percentile(values, [0.5, 99.5])
    return np.clip((values - lo) / max(float(hi - lo), 1e-8), 0.0, 1.0).astype(np.float32)


def rgb_to_lab(rgb: FloatArray) -> FloatArray:
    """CIELAB (D65) of sRGB values in [0, 1].

    Args:
        rgb: ``(3, H, W)`` sRGB.

    Returns:
        ``(3, H, W)``: L* in [0, 100], a* and b* roughly in [-100, 100].
    """
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.einsum("ij,jhw->ihw", _RGB_TO_XYZ, linear) / _WHITE[:, None, None]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])
    return lab.astype(np.float32)


def resize_image(image: FloatArray, size: int) -> FloatArray:
    """``(C, H, W) -> (C, size, size)``, bilinear with antialiasing."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].numpy()


def field_of_view(luminance: FloatArray, input_shape: tuple[int, int]) -> BoolArray:
    """The lit disc of a circular field of view centred in the picture, found from the radial profile.

    The median lightness of each ring around the centre (radius measured in the input's pixels, so the disc
    stays round after resizing to a square) is flat or gently varying over the skin and drops towards the dark
    corners. When the drop exceeds ``_MIN_DROP``, the field ends at the first ring (outside the brightest ring
    within 1.2 half short sides) that has lost ``_DROP_SHARE`` of it. A field that would keep less than
    ``_MIN_FIELD`` of the picture is kept only when the median beyond it has lost ``_OUTSIDE_DROP`` of the drop:
    a zoomed, off-centre shot (skin darkening to one side, a dark lesion cut by a border) is not a vignette. Nor
    is a field whose edge the light does not fall across (``_edge_drop_share``): a circle through a lesion cut by
    a border and the skin beside it. A lesion covering most of a ring lowers its median only where it covers more
    than half of the ring.

    Args:
        luminance: ``(h, w)`` lightness in [0, 100] at the working size.
        input_shape: ``(H, W)`` of the input, for the aspect ratio.

    Returns:
        ``(h, w)`` boolean field of view; all True without a vignette.
    """
    h, w = luminance.shape
    rows = (np.arange(h) - (h - 1) / 2) * input_shape[0] / h
    cols = (np.arange(w) - (w - 1) / 2) * input_shape[1] / w
    radius = np.hypot(rows[:, None], cols[None, :]) / (min(input_shape) / 2)
    ring = (radius / _RING_BIN).astype(np.int64)
    n_rings = int(ring.max()) + 1
    counts = np.bincount(ring.ravel(), minlength=n_rings)
    profile = np.full(n_rings, np.nan)
    for r in np.flatnonzero(counts >= 20):
        profile[r] = np.median(luminance[ring == r])
    centre = profile[: int(1.2 / _RING_BIN) + 1]
    if np.all(np.isnan(centre)):
        return np.ones((h, w), dtype=bool)
    brightest = int(np.nanargmax(centre))
    outer = profile[~np.isnan(profile)][-3:]
    drop = float(profile[brightest] - outer.min())
    if drop < _MIN_DROP:
        return np.ones((h, w), dtype=bool)
    threshold = profile[brightest] - _DROP_SHARE * drop
    beyond = [r for r in range(brightest, n_rings) if not np.isnan(profile[r]) and profile[r] < threshold]
    if not beyond:
        return np.ones((h, w), dtype=bool)
    field = ring < beyond[0]
    if field.mean() < _MIN_FIELD and np.median(luminance[~field]) > profile[brightest] - _OUTSIDE_DROP * drop:
        return np.ones((h, w), dtype=bool)
    angle = np.arctan2(rows[:, None], cols[None, :])
    if _edge_drop_share(luminance, radius, angle, beyond[0] * _RING_BIN) < _EDGE_SECTORS:
        return np.ones((h, w), dtype=bool)
    return field


def _edge_drop_share(luminance: FloatArray, radius: FloatArray, angle: FloatArray, edge: float) -> float:
    """The share of 16 sectors around the centre (of those with pixels on both sides) whose median lightness
    falls by ``_EDGE_DROP`` from just inside the radius ``edge`` to just beyond it."""
    sector = np.minimum(((angle + np.pi) / (2 * np.pi) * 16).astype(np.int64), 15)
    inner = (radius >= edge - _EDGE_BAND) & (radius < edge)
    outer = (radius >= edge) & (radius < edge + _EDGE_BAND)
    drops = []
    for s in range(16):
        before, after = luminance[inner & (sector == s)], luminance[outer & (sector == s)]
        if before.size >= 10 and after.size >= 10:
            drops.append(float(np.median(before) - np.median(after)))
    return float(np.mean(np.array(drops) > _EDGE_DROP)) if drops else 0.0


def hair_mask(luminance: FloatArray, size: int) -> BoolArray:
    """Thin dark structures (hair): a black-hat (closing with a round footprint minus the image) deeper than
    ``_HAIR_DEPTH``, dilated by one pixel.

    Args:
        luminance: ``(h, w)`` lightness in [0, 100].
        size: closing window in pixels (wider than a hair, narrower than a lesion).

    Returns:
        ``(h, w)`` boolean hair mask.
    """
    closed = ndimage.grey_closing(luminance, footprint=disc(size))
    return ndimage.binary_dilation(closed - luminance > _HAIR_DEPTH)


def disc(size: int) -> BoolArray:
    """A round ``size x size`` footprint (a square one would also catch the rim of round lesions)."""
    centre = (size - 1) / 2
    rows, cols = np.mgrid[:size, :size]
    return np.hypot(rows - centre, cols - centre) <= size / 2


def prepare_image(
    image: npt.NDArray[np.generic],
    *,
    size: int = 256,
    colour_space: str = "lab",
    detect_field_of_view: bool = True,
    hair_size: int = 9,
    smooth_sigma: float = 0.0,
    artefact_steps: tuple[str, ...] = ARTEFACT_STEPS,
) -> PreparedImage:
    """Working-size features of a 2D picture.

    Args:
        image: ``(C, H, W)`` with ``C`` 1 (grey) or 3 (RGB); any numeric dtype.
        size: working size (the picture is resized to ``size x size``).
        colour_space: ``"lab"`` or ``"rgb"`` for colour pictures (grey pictures give one channel either way).
        detect_field_of_view: exclude the dark ring of a circular field of view (``field_of_view``).
        hair_size: black-hat window for hair removal in working-size pixels; 0 turns it off (do so for thin
            dark targets such as vessels).
        smooth_sigma: Gaussian smoothing of the features in working-size pixels (0: none).
        artefact_steps: the artefact steps (of ``ARTEFACT_STEPS``) to run on colour pictures.

    Returns:
        The ``PreparedImage``.

    Raises:
        MedsslError: not a 2D picture with 1 or 3 channels, an unknown colour space or artefact step.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise MedsslError(
            f"label-free segmentation takes 2D pictures with 1 or 3 channels, got an array of shape {image.shape}"
        )
    if colour_space not in COLOUR_SPACES:
        raise MedsslError(f"unknown colour space {colour_space!r}; choose one of {', '.join(COLOUR_SPACES)}")
    if unknown := sorted(set(artefact_steps) - set(ARTEFACT_STEPS)):
        raise MedsslError(f"unknown artefact step(s) {', '.join(unknown)}; choose from {', '.join(ARTEFACT_STEPS)}")
    input_shape = (int(image.shape[1]), int(image.shape[2]))
    small = resize_image(to_unit_range(image), size)
    is_lab = small.shape[0] == 3 and colour_space == "lab"
    if is_lab:
        features = rgb_to_lab(np.clip(small, 0.0, 1.0))
        luminance = features[0].copy()
    else:
        features = small * 100.0
        luminance = features.mean(axis=0)
    valid = field_of_view(luminance, input_shape) if detect_field_of_view else np.ones(luminance.shape, bool)
    artefacts: dict[str, BoolArray] = {}
    if small.shape[0] == 3 and artefact_steps:
        artefacts = find_artefacts(features if is_lab else rgb_to_lab(np.clip(small, 0.0, 1.0)), valid, artefact_steps)
        features, valid = _apply_artefacts(features, valid, artefacts)
    hair = hair_mask(luminance, hair_size) & valid if hair_size > 1 else np.zeros(luminance.shape, bool)
    if hair.any():
        # Lightness (every channel of RGB or grey) from the closing, i.e. the skin around the hair; CIELAB's
        # colour channels from a median of the same window.
        closed = 1 if is_lab else features.shape[0]
        filled = np.stack(
            [ndimage.grey_closing(c, footprint=disc(hair_size)) for c in features[:closed]]
            + [ndimage.median_filter(c, footprint=disc(hair_size)) for c in features[closed:]]
        )
        features = np.where(hair[None], filled, features)
    if smooth_sigma > 0:
        features = np.stack([ndimage.gaussian_filter(c, smooth_sigma) for c in features])
    mean = features[:, valid].mean(axis=1)
    features = np.where(valid[None], features, mean[:, None, None]).astype(np.float32)
    return PreparedImage(features, luminance.astype(np.float32), valid, hair, input_shape, artefacts)


def _apply_artefacts(
    features: FloatArray, valid: BoolArray, artefacts: dict[str, BoolArray]
) -> tuple[FloatArray, BoolArray]:
    """Exclude the patches, rulers and dark corners from ``valid`` (unless that would leave under
    ``_MIN_LEFT`` of the field of view: then the detection is taken as wrong and nothing is excluded) and inpaint
    the ink strokes from the nearest kept pixel."""
    kept = valid.copy()
    for name in ("patches", "rulers", "dark_corners"):
        if name in artefacts:
            kept &= ~artefacts[name]
    if kept.sum() >= _MIN_LEFT * valid.sum():
        valid = kept
    if "ink" in artefacts:
        features = inpaint_nearest(features, artefacts["ink"] | ~valid)
    return features, valid


def find_artefacts(lab: FloatArray, valid: BoolArray, steps: tuple[str, ...] = ARTEFACT_STEPS) -> dict[str, BoolArray]:
    """Run the artefact ``steps`` on a working-size CIELAB picture, each on the pixels the earlier ones left.

    Args:
        lab: ``(3, h, w)`` CIELAB.
        valid: ``(h, w)`` field of view.
        steps: names from ``ARTEFACT_STEPS``.

    Returns:
        Step name -> ``(h, w)`` mask, for the steps that found something.
    """
    detectors = {
        "patches": lambda left: patch_mask(lab, left),
        "rulers": lambda left: ruler_mask(lab[0], left),
        "dark_corners": lambda left: dark_corner_mask(lab[0], left),
        "ink": lambda left: ink_mask(lab, left),
    }
    found: dict[str, BoolArray] = {}
    left = valid.copy()
    for name in ARTEFACT_STEPS:
        if name in steps:
            mask = detectors[name](left)
            if mask.any():
                found[name] = mask
                left &= ~mask
    return found


def image_lightness(image: npt.NDArray[np.generic]) -> FloatArray:
    """Lightness in [0, 100] of a ``(C, H, W)`` picture at its own size: CIELAB L* for RGB, else the grey value.

    Raises:
        MedsslError: not a picture with 1 or 3 channels.
    """
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise MedsslError(f"expected a 2D picture with 1 or 3 channels, got an array of shape {image.shape}")
    unit = to_unit_range(image)
    return rgb_to_lab(unit)[0] if unit.shape[0] == 3 else unit[0] * 100.0
