"""The 3D option of ``medssl superres``: degradation along all three axes, 3D patches drawn from the training
volumes only, a tiny 3D run, and whole-volume applying with every voxel kept at its place in the world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medssl.cli import app
from medssl.data.io import read_image
from medssl.errors import MedsslError
from medssl.superres import ValidationPatches, VolumePatchSampler, apply, degrade, make_pair, super_resolve_volume
from medssl.superres.system import SuperResolution, build, denormalise, intensity_window, normalise
from medssl.superres.workflow import SuperResRecipe, config_from
from tests.superres.conftest import head
from tests.superres.test_geometry import DIRECTIONS, _affine, _blob, _world_centroid

MODES = ("bicubic", "kspace")
TINY_3D: dict[str, Any] = {"width": 4, "groups": 1, "blocks": 1, "descriptors": 2}


@pytest.fixture
def cubes(tmp_path: Path) -> Path:
    """Five 16^3 NIfTI head volumes, 1 mm isotropic."""
    root = tmp_path / "cubes"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        nib.save(nib.Nifti1Image(head((16, 16, 16), rng), np.eye(4)), root / f"cube{i}.nii.gz")
    return root


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [2, 3])
def test_3d_degradation_shape_constant_and_block_centres(mode: str, scale: int) -> None:
    shape = (12 * scale + 1, 12 * scale, 12 * scale + scale - 1)  # cropped to a multiple of the scale first
    lr, hr = make_pair(np.full(shape, 2.5, dtype=np.float32), scale, mode)  # type: ignore[arg-type]
    assert hr.shape == (12 * scale,) * 3 and lr.shape == (12,) * 3
    np.testing.assert_allclose(lr, 2.5, atol=1e-5)
    # a smooth, band-limited product of sinusoids, different along each axis: lr[j] = f(s j + (s - 1) / 2)
    n = 12 * scale
    waves = [lambda x, k=k: np.cos(2 * np.pi * k * x / n + 0.3 * k) for k in (1, 2, 1)]
    grid = np.meshgrid(*[np.arange(n, dtype=float)] * 3, indexing="ij")
    volume = waves[0](grid[0]) * waves[1](grid[1]) * waves[2](grid[2])
    centres = np.meshgrid(*[scale * np.arange(12) + (scale - 1) / 2.0] * 3, indexing="ij")
    expected = waves[0](centres[0]) * waves[1](centres[1]) * waves[2](centres[2])
    inner = (slice(2, -2),) * 3  # bicubic renormalises its weights at the border
    got = degrade(volume, scale, mode)  # type: ignore[arg-type]
    np.testing.assert_allclose(got[inner], expected[inner], atol=0.03 if mode == "bicubic" else 1e-9)


def test_sampler_pairs_are_aligned_cuts_of_the_whole_degraded_volume() -> None:
    rng = np.random.default_rng(0)
    volumes = [head((16, 18, 20), rng), head((18, 16, 16), rng)]
    sampler = VolumePatchSampler(volumes, 2, patch_size=8, seed=3, samples=6)
    for i in range(6):
        lr, hr = sampler[i]
        assert lr.shape == (1, 4, 4, 4) and hr.shape == (1, 8, 8, 8)
        # the HR patch's position in its volume gives the LR patch's: origin / scale in the whole LR volume
        k = sampler.kept[sampler.order[i % 2]]
        hits = _positions(hr[0].numpy(), sampler.high[k])
        assert hits and all(o % 2 == 0 for o in hits[0])
        box = tuple(slice(o // 2, o // 2 + 4) for o in hits[0])
        np.testing.assert_array_equal(lr[0].numpy(), sampler.low[k][box])
    np.testing.assert_array_equal(sampler.low[0], degrade(sampler.high[0], 2))
    with pytest.raises(MedsslError, match="patch_size"):
        VolumePatchSampler(volumes, 2, patch_size=24)


def _positions(patch: np.ndarray, volume: np.ndarray) -> list[tuple[int, ...]]:
    """Every origin at which ``patch`` is an exact cut of ``volume``."""
    p = patch.shape
    ranges = [range(n - m + 1) for n, m in zip(volume.shape, p, strict=True)]
    return [
        (a, b, c)
        for a in ranges[0]
        for b in ranges[1]
        for c in ranges[2]
        if np.array_equal(volume[a : a + p[0], b : b + p[1], c : c + p[2]], patch)
    ]


def test_training_patches_never_come_from_validation_or_test_volumes(cubes: Path) -> None:
    cfg = config_from({"dims": 3, "val_fraction": 0.2, "test_fraction": 0.2, "patch_size": 8, "batch_size": 2})
    recipe = SuperResRecipe(cubes, cfg, seed=0, skip_bad_cases=False)
    recipe.read(lambda items, what: items)
    split = recipe.split
    assert len(split.train) == 3 and len(split.val) == 1 and len(split.test) == 1
    sides = {side: [recipe.volumes[i] for i in getattr(split, side)] for side in ("train", "val", "test")}
    train, val = recipe.datasets(recipe.make_plan()[0])
    assert recipe.make_plan()[0].spatial_dims == 3
    for index in range(12):
        hr = train[index]["high_res"][0].numpy()
        assert hr.shape == (8, 8, 8)
        found = {side: any(_positions(hr, v) for v in volumes) for side, volumes in sides.items()}
        assert found == {"train": True, "val": False, "test": False}, index
    assert isinstance(val, ValidationPatches) and len(val) > 0
    for item in [val[i] for i in range(len(val))]:
        assert item["image"].shape == (1, 4, 4, 4)
        assert any(_positions(item["high_res"][0].numpy(), v) for v in sides["val"])


def _zero_tail(system: SuperResolution) -> None:
    """With ``input_skip``, the network is then exactly trilinear upsampling."""
    with torch.no_grad():
        for parameter in system.network.tail.parameters():
            parameter.zero_()


def test_tiles_meet_without_seams() -> None:
    system = build("edsr", 2, {**TINY_3D, "input_skip": True}, spatial_dims=3)  # trilinear + a tiny trunk
    _zero_tail(system)
    volume = np.random.default_rng(0).random((7, 9, 6)).astype(np.float32)
    whole = super_resolve_volume(system.eval().predict, volume, 2, tile=64)
    tiled = super_resolve_volume(system.predict, volume, 2, tile=3, margin=2)
    assert whole.shape == (14, 18, 12)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_tiny_3d_run_then_apply_keeps_world_positions(name: str, cubes: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in {**TINY_3D, "patch_size": 8, "batch_size": 2, "val_interval": 2}.items()]
    trained = _cli(
        "superres", "train", "--data", str(cubes), "--out", str(run), "--dims", "3", "--system", "seran",
        "--max-steps", "3", "--quiet", "--accelerator", "cpu", *[a for s in sets for a in ("--set", s)],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    model = json.loads((run / "model.json").read_text())
    result = json.loads((run / "result.json").read_text())
    assert model["dims"] == 3 and result["global_step"] == 3 and np.isfinite(result["best_val_psnr"])
    assert result["validation_curve"]["monitor"] == "val_psnr"  # the plateau stop's, on 3D validation patches
    spacing = (1.5, 0.9, 2.0)
    affine = _affine(DIRECTIONS[name], spacing, (-31.0, 12.5, 7.0))
    nib.save(nib.Nifti1Image(_blob((10, 12, 7), (4.6, 5.3, 3.2), 2.0), affine), tmp_path / "lr.nii.gz")
    written = apply(run, tmp_path / "lr.nii.gz", tmp_path / "out", tile=4, quiet=True)
    out, meta = read_image(written[0])
    assert out.shape[1:] == (20, 24, 14) and np.isfinite(out).all()
    np.testing.assert_allclose(meta.spacing, np.array(spacing) / 2, rtol=1e-5)
    _assert_lr_centres_land_on_block_centres(affine, meta.affine(), 2)
    with pytest.raises(MedsslError, match="3D model"):
        apply(run, tmp_path / "lr.nii.gz", tmp_path / "out2", axis=0, quiet=True)


def _assert_lr_centres_land_on_block_centres(affine: np.ndarray, hr_affine: np.ndarray, scale: int) -> None:
    j = np.array([[0, 0, 0], [9, 11, 6], [3, 7, 2]], dtype=float)
    world = (affine[:3, :3] @ j.T).T + affine[:3, 3]
    index = np.linalg.solve(hr_affine[:3, :3], (world - hr_affine[:3, 3]).T).T
    np.testing.assert_allclose(index, scale * j + (scale - 1) / 2, atol=1e-4)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_a_3d_blob_keeps_its_world_centroid(name: str, tmp_path: Path) -> None:
    """A 3D run whose network is exactly trilinear upsampling (``input_skip``, zero tail): any displacement of the
    output is the geometry's."""
    scale, options = 2, {**TINY_3D, "input_skip": True}
    system = build("edsr", scale, options, spatial_dims=3)
    _zero_tail(system)
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(system.network.state_dict(), folder / "network.pt")
    info = {"system": "edsr", "scale": scale, "dims": 3, "axis": "auto", "channel": 0, "system_options": options}
    (folder / "model.json").write_text(json.dumps(info))
    affine = _affine(DIRECTIONS[name], (1.5, 0.9, 2.0), (4.0, -2.0, 9.0))
    image = _blob((14, 16, 12), (6.6, 7.3, 5.4), 2.2)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "lr.nii.gz")
    written = apply(folder, tmp_path / "lr.nii.gz", tmp_path / "out", tile=5, quiet=True)
    out, meta = read_image(written[0])
    _assert_lr_centres_land_on_block_centres(affine, meta.affine(), scale)
    seen = denormalise(normalise(image), intensity_window(image))
    shift = np.linalg.norm(_world_centroid(out[0], meta.affine()) - _world_centroid(seen, affine))
    assert shift < 0.02, shift


def test_bad_dims_is_refused() -> None:
    with pytest.raises(MedsslError, match="dims"):
        config_from({"dims": 4})
