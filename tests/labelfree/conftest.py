"""Tiny synthetic pictures for the label-free tests."""

from __future__ import annotations

import numpy as np


def dermoscopy_like(
    size: tuple[int, int] = (48, 64), vignette: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A brown disc (the lesion) on pink skin inside a dark circular vignette, as ``(3, H, W)`` uint8, and the
    disc's mask ``(H, W)``."""
    h, w = size
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:h, :w]
    lesion = (rows - h * 0.5) ** 2 + (cols - w * 0.45) ** 2 <= (min(h, w) * 0.22) ** 2
    image = np.empty((3, h, w), dtype=np.float64)
    for c, (skin, brown) in enumerate(zip((225, 180, 170), (110, 70, 50), strict=True)):
        image[c] = np.where(lesion, brown, skin)
    if vignette:
        radius = np.hypot(rows - (h - 1) / 2, cols - (w - 1) / 2) / (min(h, w) / 2)
        image *= np.clip(1.0 - (radius - 1.05) * 3.0, 0.08, 1.0)[None]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), lesion
