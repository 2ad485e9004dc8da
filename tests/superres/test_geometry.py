"""``medssl superres apply`` keeps every voxel at its place in the world: LR voxel centres land on HR index
``s j + (s - 1) / 2``, a bright blob's world centroid does not move, with axis-aligned and oblique directions."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image
from medssl.superres import apply, super_resolved_meta
from medssl.superres.system import build, denormalise, intensity_window, normalise


def _rotation(angle: float) -> np.ndarray:
    """A rotation about an oblique axis (1, 2, 3): no direction cosine is 0 or 1."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # type: ignore[no-any-return]


DIRECTIONS = {"axis-aligned": np.eye(3), "oblique": _rotation(0.5)}


def _affine(direction: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)[None, :]
    affine[:3, 3] = origin
    return affine


def _bicubic_run(folder: Path, scale: int) -> Path:
    """A run folder whose network is exactly bicubic upsampling (``input_skip`` with a zero tail convolution):
    any displacement of the output is then the geometry's, not the network's."""
    options = {"width": 4, "groups": 1, "blocks": 1, "input_skip": True}
    system = build("edsr", scale, options)
    torch.nn.init.zeros_(system.network.tail.weight)
    torch.nn.init.zeros_(system.network.tail.bias)
    folder.mkdir(parents=True)
    torch.save(system.network.state_dict(), folder / "network.pt")
    model = {"system": "edsr", "scale": scale, "mode": "bicubic", "axis": "auto", "channel": 0}
    (folder / "model.json").write_text(json.dumps({**model, "system_options": options}))
    return folder


def _blob(shape: tuple[int, int, int], centre: tuple[float, float, float], sigma: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return (10.0 + 1000.0 * np.exp(-r2 / (2 * sigma**2))).astype(np.float32)


def _world_centroid(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World position of the centroid of the intensities above the background (the first moment, which bicubic
    interpolation keeps for a smooth blob away from the border)."""
    weights = array - 10.0
    index = np.array([(g * weights).sum() for g in np.indices(array.shape)]) / weights.sum()
    return affine[:3, :3] @ index + affine[:3, 3]  # type: ignore[no-any-return]


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_lr_voxel_centres_land_on_their_hr_index_and_a_blob_stays_put(name: str, scale: int, tmp_path: Path) -> None:
    direction = DIRECTIONS[name]
    spacing = (4.0, 1.2, 1.0)  # axis 0 is the thick one: the slicing axis, in-plane axes 1 and 2
    affine = _affine(direction, spacing, (-31.0, 12.5, 7.0))
    image = _blob((6, 20, 22), (2.6, 9.3, 11.7), 2.5)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "lr.nii.gz")
    written = apply(_bicubic_run(tmp_path / "run", scale), tmp_path / "lr.nii.gz", tmp_path / "out", quiet=True)
    out, meta = read_image(written[0])
    assert out.shape[1:] == (6, 20 * scale, 22 * scale)
    np.testing.assert_allclose(meta.spacing, (4.0, 1.2 / scale, 1.0 / scale), rtol=1e-5)
    hr_affine = meta.affine()
    # every LR voxel centre, mapped to the output's continuous index, is at s j + (s - 1) / 2 in-plane, j across
    j = np.array([[0, 0, 0], [5, 19, 21], [3, 7, 2]], dtype=float)
    world = (affine[:3, :3] @ j.T).T + affine[:3, 3]
    index = np.linalg.solve(hr_affine[:3, :3], (world - hr_affine[:3, 3]).T).T
    expected = j * np.array([1, scale, scale]) + np.array([0, (scale - 1) / 2, (scale - 1) / 2])
    np.testing.assert_allclose(index, expected, atol=1e-4)
    # an intensity feature: the blob's world centroid moves by far less than the half-voxel error checked for
    # (against the input as the model sees it: clipped at its foreground's 99.5th percentile)
    seen = denormalise(normalise(image), intensity_window(image))
    shift = np.linalg.norm(_world_centroid(out[0], hr_affine) - _world_centroid(seen, affine))
    assert shift < 0.02, shift


def test_meta_equals_the_lr_affine_composed_with_the_index_map() -> None:
    """An independent derivation: HR index i is LR index (i - (s - 1) / 2) / s in-plane, so A_HR = A_LR @ T."""
    scale, axis = 4, 1
    affine = _affine(_rotation(1.1), (0.9, 5.0, 1.1), (3.0, -4.0, 2.0))
    meta = ImageMeta.from_affine(affine, (10, 4, 12))
    t = np.eye(4)
    for a in (0, 2):
        t[a, a], t[a, 3] = 1 / scale, -(scale - 1) / (2 * scale)
    hr = super_resolved_meta(meta, scale, axis)
    np.testing.assert_allclose(hr.affine(), affine @ t, atol=1e-9)
    assert hr.shape == (40, 4, 48)


def test_a_2d_picture_is_refused_in_one_line(tmp_path: Path) -> None:
    from PIL import Image

    from medssl.errors import MedsslError

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "slice.png")
    with pytest.raises(MedsslError, match="2D image: this model super-resolves the slices of 3D volumes"):
        apply(_bicubic_run(tmp_path / "run", 2), tmp_path / "slice.png", tmp_path / "out", quiet=True)
