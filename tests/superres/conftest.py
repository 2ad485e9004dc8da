"""Tiny synthetic MR-like volumes for the super-resolution workflow tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

# A few seconds per run: a 1-group, 1-block trunk of width 4, 8-pixel patches, 2 patches a step.
TINY_SR: dict[str, Any] = {
    "width": 4,
    "groups": 1,
    "blocks": 1,
    "descriptors": 2,
    "patch_size": 8,
    "batch_size": 2,
    "val_interval": 2,
    "max_val_slices": 3,
    "quiet": True,
    "accelerator": "cpu",
}


def head(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """An ellipsoid 'head' with a brighter inner blob and noise on a dark background, float32."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = sum((g / r) ** 2 for g, r in zip(grid, (0.8, 0.7, 0.9), strict=True))
    blob = sum((g - c) ** 2 for g, c in zip(grid, rng.uniform(-0.2, 0.2, 3), strict=True)) < 0.1
    image = 300.0 * (radius < 1) + 200.0 * blob + rng.normal(0, 10, shape)
    return np.clip(image, 0, None).astype(np.float32)


@pytest.fixture
def volumes(tmp_path: Path) -> Path:
    """Five 24 x 24 x 6 NIfTI volumes, 1 x 1 x 3 mm (axis 2 is the thick one), in a flat folder."""
    root = tmp_path / "volumes"
    root.mkdir()
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    for i in range(5):
        nib.save(nib.Nifti1Image(head((24, 24, 6), rng), affine), root / f"vol{i}.nii.gz")
    return root
