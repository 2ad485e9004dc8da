"""Tiny synthetic datasets shared by the engine and CLI tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Settings that make a fine-tuning run take seconds: a 2-scale U-Net, tiny patches and batches.
TINY = {"channels": [4, 8], "batch_size": 2, "val_interval": 2, "max_val_cases": 2, "overlay_cases": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP hand-offs, which dominate the run time on a busy 2-core machine;
    a fixed seed makes every test repeatable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def real_dataset(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with a message saying where the data was looked for."""
    path = REAL_DATA / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} not found: real-data tests need the shared datasets at {path}")
    return path


def _disc(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    centre = [rng.uniform(s * 0.35, s * 0.65) for s in shape]
    radius = min(shape) * rng.uniform(0.2, 0.3)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2  # type: ignore[no-any-return]


@pytest.fixture
def paired_2d(tmp_path: Path) -> Path:
    """``images/`` + ``masks/`` PNGs: a bright noisy disc (mask 255) on a dark background."""
    root = tmp_path / "paired"
    rng = np.random.default_rng(0)
    for i in range(10):
        mask = _disc((32, 32), rng)
        img = np.clip(60 + 120 * mask + rng.normal(0, 15, mask.shape), 0, 255).astype(np.uint8)
        for sub, arr in (("images", img), ("masks", mask.astype(np.uint8) * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"case{i:02d}.png")
    return root


MSD_AFFINE = np.array([[1.5 * np.cos(0.3), -np.sin(0.3), 0, -10], [1.5 * np.sin(0.3), np.cos(0.3), 0, 5],
                       [0, 0, 2.0, 20], [0, 0, 0, 1]])  # fmt: skip


def write_msd_3d(root: Path, n: int = 6) -> Path:
    """A Decathlon folder of ``n`` 16^3 NIfTI volumes with an oblique 1.5 x 1 x 2 mm affine and labels 1, 2."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    entries = []
    for i in range(n):
        disc = _disc((16, 16, 16), rng)
        label = disc.astype(np.uint8)
        label[disc & (np.arange(16)[:, None, None] >= 8)] = 2
        img = (50 + 80 * disc + 40 * (label == 2) + rng.normal(0, 8, disc.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, MSD_AFFINE), root / "imagesTr" / f"vol_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(label, MSD_AFFINE), root / "labelsTr" / f"vol_{i:03d}.nii.gz")
        entries.append({"image": f"./imagesTr/vol_{i:03d}.nii.gz", "label": f"./labelsTr/vol_{i:03d}.nii.gz"})
    labels = {"0": "background", "1": "front", "2": "back"}
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "MRI"}, "labels": labels, "training": entries}))
    return root


@pytest.fixture
def msd_3d(tmp_path: Path) -> Path:
    """``write_msd_3d``: six volumes."""
    return write_msd_3d(tmp_path / "msd")
