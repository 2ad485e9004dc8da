"""``medssl data prepare`` and the store it writes: the same images as preprocessing in memory (within float16),
resumable and atomic, the same files whatever the workers, patches read alone, and pretraining on a store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

import medssl.data.check as check_module
from medssl import api
from medssl.config import PretrainConfig
from medssl.data.layouts import discover
from medssl.data.loading import load_checked_cases
from medssl.data.plan import compute_fingerprint, make_plan
from medssl.data.preprocess import preprocess_image
from medssl.data.sampling import PatchDataset
from medssl.data.store import StoredVolume, open_store
from medssl.data.store_prepare import prepare_store
from medssl.engine.pretraining import PretrainRecipe
from medssl.errors import MedsslError

SPACING = [2.0, 2.0, 2.0]
F16: dict[str, Any] = {"rtol": 1e-3, "atol": 1e-4}  # float16 keeps 11 significant bits: relative error <= 2**-11


def _volume(path: Path, shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    blob = np.exp(-sum((g - rng.uniform(-0.5, 0.5)) ** 2 for g in grid) * 4)
    img = (100 + 80 * blob + 5 * rng.standard_normal(shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.diag([1.5, 1.0, 2.0, 1.0])), path)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Four unlabelled NIfTI volumes of different shapes, 1.5 x 1 x 2 mm (resampled to 2 mm: every axis changes)."""
    root = tmp_path / "src"
    root.mkdir()
    for i, shape in enumerate([(20, 18, 16), (16, 22, 14), (18, 18, 18), (14, 20, 12)]):
        _volume(root / f"vol{i}.nii.gz", shape, i)
    return root


def _in_memory(src: Path) -> dict[str, np.ndarray]:
    """What ``medssl pretrain`` preprocesses in memory, per case."""
    index = discover(src)
    loaded = list(load_checked_cases(index, index.cases, images_only=True).loaded.values())
    plan = make_plan(compute_fingerprint(loaded, None), require_labels=False, target_spacing=SPACING)
    return {c.case_id: preprocess_image(c.image, c.meta, plan) for c in loaded}


def _prepare(src: Path, out: Path, **options: Any) -> Any:
    return prepare_store(src, out, spacing=SPACING, quiet=True, **options)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = check_module.read_image

    def counted(path: Any) -> Any:
        reads.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(check_module, "read_image", counted)
    return reads


def test_store_holds_the_in_memory_preprocessing_within_float16(src: Path, tmp_path: Path) -> None:
    report = _prepare(src, tmp_path / "store")
    store = open_store(tmp_path / "store")
    expected = _in_memory(src)
    assert report.written == list(expected) and list(store.cases) == list(expected)
    index = discover(src)
    loaded = list(load_checked_cases(index, index.cases, images_only=True).loaded.values())
    fingerprint = compute_fingerprint(loaded, None)
    plan = make_plan(fingerprint, require_labels=False, target_spacing=SPACING)
    assert store.plan == plan and store.fingerprint == fingerprint  # the same statistics of the same voxels
    for volume, (case_id, image) in zip(store.volumes(), expected.items(), strict=True):
        assert volume.shape == image.shape, case_id
        np.testing.assert_allclose(np.asarray(volume), image, **F16)
        assert np.load(volume.path).dtype == np.float16


def test_resume_skips_done_cases_and_redoes_missing_partial_and_killed_ones(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "store"
    real_save = np.save
    calls = []

    def killed_on_third(fh: Any, array: np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 3:
            fh.write(b"\x93NUMPY partial")  # the process dies in the middle of writing
            raise KeyboardInterrupt
        real_save(fh, array)

    monkeypatch.setattr(np, "save", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        _prepare(src, out)
    monkeypatch.setattr(np, "save", real_save)
    assert sorted(p.name for p in out.glob("*.npy")) == ["vol0.npy", "vol1.npy"]  # never a truncated vol2.npy
    assert list(open_store(out).cases) == ["vol0", "vol1"] and list(out.glob(".vol2.npy.*.tmp"))
    reads = _count_reads(monkeypatch)
    again = _prepare(src, out)
    assert again.written == ["vol2", "vol3"] and again.unchanged == ["vol0", "vol1"]
    assert sorted(reads) == ["vol2.nii.gz"] * 2 + ["vol3.nii.gz"] * 2  # checked, then preprocessed
    assert not list(out.glob("*.tmp"))
    before = {p.name: p.read_bytes() for p in out.glob("*.npy")}
    reads.clear()
    assert _prepare(src, out).written == [] and reads == []
    (out / "vol1.npy").unlink()
    (out / "vol3.npy").write_bytes(before["vol3.npy"][:100])  # partial (e.g. copied by hand)
    redone = _prepare(src, out)
    assert redone.written == ["vol1", "vol3"]
    assert {p.name: p.read_bytes() for p in out.glob("*.npy")} == before
    assert list(open_store(out).cases) == ["vol0", "vol1", "vol2", "vol3"]  # the source's order


def test_changed_or_removed_source_is_redone_or_dropped(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _prepare(src, out)
    _volume(src / "vol2.nii.gz", (18, 18, 18), seed=99)
    stat = (src / "vol2.nii.gz").stat()
    os.utime(src / "vol2.nii.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    (src / "vol3.nii.gz").unlink()
    report = _prepare(src, out)
    assert report.written == ["vol2"] and report.removed == ["vol3"] and not (out / "vol3.npy").exists()
    store = open_store(out)
    np.testing.assert_allclose(np.asarray(store.volumes(["vol2"])[0]), _in_memory(src)["vol2"], **F16)


def test_two_workers_write_the_same_store_as_one(src: Path, tmp_path: Path) -> None:
    _volume(src / "vol4.nii.gz", (28, 26, 24), seed=4)  # over 10,000 voxels: its intensity samples are drawn
    _prepare(src, tmp_path / "one", workers=1)
    _prepare(src, tmp_path / "two", workers=2)
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two")
    assert one.plan == two.plan and one.fingerprint == two.fingerprint
    assert {k: (v.file, v.shape) for k, v in one.cases.items()} == {k: (v.file, v.shape) for k, v in two.cases.items()}
    for entry in one.cases.values():
        assert (tmp_path / "one" / entry.file).read_bytes() == (tmp_path / "two" / entry.file).read_bytes()


def _open_files(path: Path) -> list[str]:
    maps = Path("/proc/self/maps").read_text()
    fds = [os.readlink(f) for f in Path("/proc/self/fd").iterdir() if f.is_symlink()]
    return [line for line in [*maps.splitlines(), *fds] if str(path) in line]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_lazy_volume_reads_the_patch_only_and_keeps_nothing_open(src: Path, tmp_path: Path) -> None:
    _prepare(src, tmp_path / "store")
    volume = open_store(tmp_path / "store").volumes()[0]
    whole = np.load(volume.path).astype(np.float32)
    patch = volume[:, 1:5, 2:9, 3]
    np.testing.assert_array_equal(patch, whole[:, 1:5, 2:9, 3])
    assert patch.dtype == np.float32 and volume.voxels_read == patch.size
    assert _open_files(volume.path) == []
    # a 3D patch and a 2D network's slice patch: the sampler indexes each volume once, for the patch alone
    for slice_axis, size in ((None, [6, 6, 6]), (0, [6, 6])):
        volumes = open_store(tmp_path / "store").volumes()
        sampler = PatchDataset(volumes, None, size, 4, foreground_fraction=0.0, slice_axis=slice_axis)
        for k in range(4):
            sampler[k]
        assert sum(v.voxels_read for v in volumes) == 4 * int(np.prod(size))
        assert all(_open_files(v.path) == [] for v in volumes)


@pytest.mark.parametrize(("slice_axis", "size"), [(None, [8, 8, 8]), (2, [8, 12]), (1, [10, 8])])
def test_patches_from_the_store_are_the_in_memory_patches(
    src: Path, tmp_path: Path, slice_axis: int | None, size: list[int]
) -> None:
    _prepare(src, tmp_path / "store")
    options: dict[str, Any] = {"foreground_fraction": 0.0, "slice_axis": slice_axis, "flip_axes": [0, 1], "seed": 3}
    memory = PatchDataset(list(_in_memory(src).values()), None, size, 12, **options)
    stored = PatchDataset(open_store(tmp_path / "store").volumes(), None, size, 12, **options)
    for k in range(12):
        a, b = memory[k]["image"], stored[k]["image"]
        assert a.shape == b.shape == (1, *size)
        torch.testing.assert_close(b, a, **F16)


def _recipe(data: Path, **cfg: Any) -> tuple[PretrainRecipe, PatchDataset, Any]:
    options: dict[str, Any] = {
        "method": "simclr",
        "max_steps": 2,
        "batch_size": 2,
        "patch_size": [8, 8, 8],
        "channels": [4, 8],
    }
    recipe = PretrainRecipe(data, PretrainConfig(**(options | cfg)), dims=3, seed=0, cases=None, skip_bad_cases=False)
    recipe.read(lambda items, what: items)
    plan, _ = recipe.make_plan()
    patches, _ = recipe.datasets(plan)
    return recipe, patches, plan


def test_pretraining_on_a_store_draws_the_in_memory_batch(src: Path, tmp_path: Path) -> None:
    _prepare(src, tmp_path / "store")
    _, memory, plan_memory = _recipe(src, target_spacing=SPACING)
    recipe, stored, plan_stored = _recipe(tmp_path / "store")
    assert plan_stored == plan_memory
    assert recipe.loaded == [] and all(isinstance(v, StoredVolume) for v in stored.images)
    batch = [torch.stack([p[k]["image"] for k in range(plan_memory.batch_size)]) for p in (memory, stored)]
    torch.testing.assert_close(batch[1], batch[0], **F16)
    with pytest.raises(MedsslError, match="spacing"):
        _recipe(tmp_path / "store", target_spacing=[1.0, 1.0, 1.0])
    run = api.pretrain(tmp_path / "store", tmp_path / "run", method="simclr", max_steps=2, batch_size=2, dims=3,
                       patch_size=[8, 8, 8], channels=[4, 8], quiet=True, accelerator="cpu")  # fmt: skip
    assert run.global_step == 2 and run.encoder is not None and run.encoder.is_file()


def test_bad_input_is_one_clear_error_and_skip_bad_cases_leaves_it_out(src: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsslError, match="empty"):
        _prepare(tmp_path / "empty", tmp_path / "s0")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(MedsslError, match="not a store"):
        _prepare(src, tmp_path / "other")
    with pytest.raises(MedsslError, match="--out"):
        _prepare(src, src / "store")
    (src / "vol9.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(MedsslError, match="vol9"):
        _prepare(src, tmp_path / "s1")
    assert not (tmp_path / "s1").exists()  # nothing written before every case is checked
    report = _prepare(src, tmp_path / "s1", skip_bad_cases=True)
    assert list(report.skipped) == ["vol9"] and report.cases == 4
    assert list(open_store(tmp_path / "s1").skipped) == ["vol9"]


def test_cli_prepares_a_store_and_refuses_a_foreign_folder_in_one_line(src: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medssl", "data", "prepare", str(src), "--spacing", "2,2,2", "--quiet", "--out"]
    done = subprocess.run([*cmd, str(tmp_path / "store")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "4 case(s); 4 written" in done.stdout and open_store(tmp_path / "store").plan.target_spacing == SPACING
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = subprocess.run([*cmd, str(tmp_path / "mine")], capture_output=True, text=True, env=env, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "not a store" in refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
