"""Merging partially labelled dataset folders into one paired-multilabel training set (``medssl.data.merge``)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medssl.cli import app
from medssl.data.check import check_dataset
from medssl.data.io import read_image, read_label
from medssl.data.layouts import discover
from medssl.data.merge import RUN_SUFFIX, merge_datasets, merged_for_run, structure_key
from medssl.errors import MedsslError
from tests.conftest import TINY


def _multilabel_2d(root: Path, structures: list[str], ids: list[str], seed: int = 0) -> Path:
    """``images/`` + ``masks/<structure>/`` PNGs: a noisy picture and one random 0/255 box per structure."""
    rng = np.random.default_rng(seed)
    for case in ids:
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(root / "images" / f"{case}.png")
        for name in structures:
            mask = np.zeros((24, 24), np.uint8)
            y, x = rng.integers(0, 12, size=2)
            mask[y : y + 10, x : x + 8] = 255
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / name / f"{case}.png")
    return root


def _multilabel_3d(root: Path, structures: list[str], ids: list[str]) -> Path:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    rng = np.random.default_rng(3)
    for case in ids:
        (root / "images").mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(rng.normal(size=(12, 12, 8)).astype(np.float32), affine), root / "images" / f"{case}.nii.gz"
        )
        for name in structures:
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            mask = (rng.random((12, 12, 8)) > 0.7).astype(np.uint8)
            nib.save(nib.Nifti1Image(mask, affine), root / "masks" / name / f"{case}.nii.gz")
    return root


def test_two_folders_give_the_union_of_structures_each_case_annotating_its_own(tmp_path: Path) -> None:
    lungs = _multilabel_2d(tmp_path / "lungs", ["left_lung", "right_lung"], ["l0", "l1", "l2"])
    heart = _multilabel_2d(tmp_path / "heart", ["heart"], ["h0", "h1", "h2"], seed=1)
    index = merge_datasets([lungs, heart], tmp_path / "merged", quiet=True)
    assert index.layout == "paired-multilabel" and index.partially_annotated
    assert index.structures == ["heart", "left_lung", "right_lung"]
    again = discover(tmp_path / "merged")
    annotated = {c.case_id: c.annotated for c in again.cases}
    assert annotated == {
        **dict.fromkeys(["l0", "l1", "l2"], ("left_lung", "right_lung")),
        **dict.fromkeys(["h0", "h1", "h2"], ("heart",)),
    }
    assert json.loads((tmp_path / "merged" / "annotations.json").read_text())["h1"] == ["heart"]
    h1 = next(c for c in again.cases if c.case_id == "h1")
    assert set(h1.structures or {}) == {"heart"}
    merged, _ = read_label(h1.structures["heart"])  # type: ignore[index]
    assert np.array_equal(merged, read_label(heart / "masks" / "heart" / "h1.png")[0])
    assert np.array_equal(read_image(h1.images[0])[0], read_image(heart / "images" / "h1.png")[0])
    assert check_dataset(tmp_path / "merged") == []
    assert not list(tmp_path.glob("merged.tmp-*"))


def test_a_source_labelling_every_structure_is_fully_annotated(tmp_path: Path) -> None:
    both = _multilabel_2d(tmp_path / "both", ["heart", "lungs"], ["b0", "b1"])
    heart = _multilabel_2d(tmp_path / "heart", ["heart"], ["h0"], seed=1)
    index = merge_datasets([both, heart], tmp_path / "merged", quiet=True)
    assert {c.case_id: c.annotated for c in index.cases} == {"b0": None, "b1": None, "h0": ("heart",)}
    assert json.loads((tmp_path / "merged" / "annotations.json").read_text()) == {"h0": ["heart"]}


def test_a_partially_labelled_source_keeps_its_declaration(tmp_path: Path) -> None:
    chest = _multilabel_2d(tmp_path / "chest", ["heart", "lungs"], ["c0", "c1"])
    (chest / "masks" / "heart" / "c1.png").unlink()
    (chest / "annotations.json").write_text(json.dumps({"c1": ["lungs"]}))
    clavicles = _multilabel_2d(tmp_path / "clavicles", ["clavicles"], ["k0"])
    index = merge_datasets([chest, clavicles], tmp_path / "merged", quiet=True)
    assert {c.case_id: c.annotated for c in index.cases} == {
        "c0": ("heart", "lungs"),
        "c1": ("lungs",),
        "k0": ("clavicles",),
    }


def test_a_label_map_becomes_binary_masks_with_its_geometry(tmp_path: Path, msd_3d: Path) -> None:
    other = _multilabel_3d(tmp_path / "fronts", ["Front"], ["f0", "f1"])
    index = merge_datasets([msd_3d, other], tmp_path / "merged", quiet=True)
    assert index.structures == ["back", "front"]
    assert {c.case_id: c.annotated for c in index.cases if c.case_id.startswith("f")} == {
        "f0": ("front",),
        "f1": ("front",),
    }
    case = next(c for c in index.cases if c.case_id == "vol_002")
    assert case.annotated is None and set(case.structures or {}) == {"back", "front"}
    label, label_meta = read_label(msd_3d / "labelsTr" / "vol_002.nii.gz")
    for value, name in ((1, "front"), (2, "back")):
        mask, meta = read_label(case.structures[name])  # type: ignore[index]
        assert np.array_equal(mask, (label == value).astype(np.int64)) and mask.any()
        assert np.allclose(meta.affine(), label_meta.affine())
        assert meta.spacing == pytest.approx(label_meta.spacing) and meta.origin == pytest.approx(label_meta.origin)
    assert check_dataset(tmp_path / "merged") == []


def test_channel_files_become_one_multi_channel_image(tmp_path: Path) -> None:
    root = tmp_path / "nnunet"
    affine = np.diag([1.2, 1.0, 3.0, 1.0])
    rng = np.random.default_rng(2)
    for case in ("p0", "p1"):
        for c in range(2):
            (root / "imagesTr").mkdir(parents=True, exist_ok=True)
            volume = rng.normal(size=(10, 10, 6)).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, affine), root / "imagesTr" / f"{case}_{c:04d}.nii.gz")
        (root / "labelsTr").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.ones((10, 10, 6), np.uint8), affine), root / "labelsTr" / f"{case}.nii.gz")
    meta = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    index = merge_datasets([root], tmp_path / "merged", quiet=True)
    image, image_meta = read_image(index.cases[1].images[0])
    channels = [read_image(root / "imagesTr" / f"p1_{c:04d}.nii.gz")[0][0] for c in range(2)]
    assert np.array_equal(image, np.stack(channels)) and np.allclose(image_meta.affine(), affine)


def test_structure_names_are_matched_after_normalising(tmp_path: Path) -> None:
    assert structure_key("Left Lung") == structure_key("left-lung") == structure_key("left_lung") == "left_lung"
    a = _multilabel_2d(tmp_path / "a", ["Left Lung"], ["a0"])
    b = _multilabel_2d(tmp_path / "b", ["left_lung", "Heart"], ["b0"])
    index = merge_datasets([a, b], tmp_path / "merged", quiet=True)
    assert index.structures == ["heart", "left_lung"]
    assert {c.case_id: c.annotated for c in index.cases} == {"a0": ("left_lung",), "b0": None}


def test_label_maps_without_names_are_refused_until_declared(tmp_path: Path, paired_2d: Path) -> None:
    other = _multilabel_2d(tmp_path / "other", ["heart"], ["h0"])
    with pytest.raises(MedsslError, match=r"do not name their structures; declare them in .*dataset\.json"):
        merge_datasets([paired_2d, other], tmp_path / "merged", quiet=True)
    (paired_2d / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "Disc"}}))
    index = merge_datasets([paired_2d, other], tmp_path / "merged", quiet=True)
    case = next(c for c in index.cases if c.case_id == "case03")
    mask = read_label(case.structures["disc"])[0]  # type: ignore[index]
    assert np.array_equal(mask > 0, read_label(paired_2d / "masks" / "case03.png")[0] > 0)  # the 0/255 mask


def test_shared_case_ids_are_prefixed_with_the_folder_name(tmp_path: Path) -> None:
    lungs = _multilabel_2d(tmp_path / "lungs", ["lungs"], ["c0", "c1"])
    heart = _multilabel_2d(tmp_path / "heart", ["heart"], ["c1", "c2"], seed=1)
    index = merge_datasets([lungs, heart], tmp_path / "merged", quiet=True)
    assert [c.case_id for c in index.cases] == ["c0", "c2", "heart_c1", "lungs_c1"]
    heart_c1 = next(c for c in index.cases if c.case_id == "heart_c1")
    assert (
        heart_c1.annotated == ("heart",)
        and read_image(heart_c1.images[0])[0].tobytes() == read_image(heart / "images" / "c1.png")[0].tobytes()
    )
    same_name = _multilabel_2d(tmp_path / "x" / "lungs", ["heart"], ["c1"])
    with pytest.raises(MedsslError, match="'lungs_c1'.*rename one of the folders"):
        merge_datasets([lungs, same_name], tmp_path / "other", quiet=True)


def test_2d_with_3d_is_refused_naming_the_folders(tmp_path: Path, msd_3d: Path) -> None:
    flat = _multilabel_2d(tmp_path / "flat", ["front"], ["p0"])
    with pytest.raises(MedsslError, match=rf"2D and 3D.*{msd_3d} \(3D\).*{flat} \(2D\)"):
        merge_datasets([msd_3d, flat], tmp_path / "merged", quiet=True)
    assert not (tmp_path / "merged").exists()


def test_different_channel_counts_are_refused(tmp_path: Path) -> None:
    grey = _multilabel_2d(tmp_path / "grey", ["heart"], ["g0"])
    rgb = _multilabel_2d(tmp_path / "rgb", ["heart"], ["r0"])
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(rgb / "images" / "r0.png")
    with pytest.raises(MedsslError, match=r"different channel counts.*grey \(1 channel.*rgb \(3 channel"):
        merge_datasets([grey, rgb], tmp_path / "merged", quiet=True)


def test_an_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    a = _multilabel_2d(tmp_path / "a", ["heart"], ["a0"])
    b = _multilabel_2d(tmp_path / "b", ["lungs"], ["b0"])
    out = tmp_path / "merged"
    merge_datasets([a], out, quiet=True)
    with pytest.raises(MedsslError, match="already exists.*--overwrite"):
        merge_datasets([a, b], out, quiet=True)
    assert discover(out).structures == ["heart"]
    assert merge_datasets([a, b], out, overwrite=True, quiet=True).structures == ["heart", "lungs"]
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    with pytest.raises(MedsslError, match="not written by `medssl data merge`"):
        merge_datasets([a, b], mine, overwrite=True, quiet=True)
    assert (mine / "notes").is_dir()


def test_a_failed_merge_leaves_nothing_half_written(tmp_path: Path, msd_3d: Path) -> None:
    label = msd_3d / "labelsTr" / "vol_004.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.full(img.shape, 7, np.uint8), img.affine), label)  # 7 is not declared
    with pytest.raises(MedsslError, match="vol_004.nii.gz: label value.*7 not declared"):
        merge_datasets([msd_3d], tmp_path / "merged", quiet=True)
    assert list(tmp_path.iterdir()) == [msd_3d]


def test_cli_data_merge_prints_structures_per_folder(tmp_path: Path) -> None:
    lungs = _multilabel_2d(tmp_path / "lungs", ["Lungs"], ["l0", "l1"])
    heart = _multilabel_2d(tmp_path / "heart", ["heart"], ["h0"])
    args = ["data", "merge", str(lungs), str(heart), "--out", str(tmp_path / "m"), "--quiet"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "3 case(s), 3 annotating only some structures" in result.output
    rows = {r[0]: r[1:] for line in result.output.splitlines() if (r := line.replace("│", " ").split())}
    assert rows["heart"] == ["-", "1"] and rows["lungs"] == ["2", "-"]
    assert "'Lungs' -> 'lungs'" in result.output
    again = CliRunner().invoke(app, args)
    assert isinstance(again.exception, MedsslError) and "--overwrite" in str(again.exception)


def _two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Five cases annotating inner and outer, four annotating outer only."""
    grid = np.mgrid[:32, :32]
    rng = np.random.default_rng(0)
    for folder, structures, n in (("both", ["inner", "outer"], 5), ("outer_only", ["Outer"], 4)):
        for k in range(n):
            cy, cx = rng.uniform(12, 20, size=2)
            r2 = (grid[0] - cy) ** 2 + (grid[1] - cx) ** 2
            masks = {"inner": r2 <= 25, "outer": r2 <= 100, "Outer": r2 <= 100}
            img = np.clip(50 + 80 * masks["outer"] + 80 * masks["inner"] + rng.normal(0, 10, (32, 32)), 0, 255)
            for sub, arr in [("images", img), *((f"masks/{s}", masks[s] * 255) for s in structures)]:
                (tmp_path / folder / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.astype(np.uint8)).save(tmp_path / folder / sub / f"{folder[0]}{k}.png")
    return tmp_path / "both", tmp_path / "outer_only"


def test_finetune_on_two_folders_trains_dodnet_on_the_merged_data(tmp_path: Path) -> None:
    both, outer = _two_folders(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    run = tmp_path / "run"
    args = ["finetune", "--data", str(both), "--data", str(outer), "--out", str(run), "--max-steps", "2"]
    args += ["--config", str(config), "--set", "system=dodnet", "--set", "head_channels=4", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    merged = tmp_path / f"run{RUN_SUFFIX}"
    command = json.loads((run / "command.json").read_text())
    assert Path(command["data"]) == merged
    assert yaml.safe_load((run / "config.yaml").read_text())["system"] == "dodnet"
    assert discover(merged).partially_annotated
    assert merged_for_run([both, outer], run) == merged  # the same folders: reused as it is
    with pytest.raises(MedsslError, match="merged from other folders.*--overwrite"):
        merged_for_run([outer, both], run)
    (outer / "images" / "o0.png").rename(outer / "images" / "o9.png")  # the folder changed since
    (outer / "masks" / "Outer" / "o0.png").rename(outer / "masks" / "Outer" / "o9.png")
    with pytest.raises(MedsslError, match="whose files changed since; pass --overwrite"):
        merged_for_run([both, outer], run)
    assert merged_for_run([both, outer], run, overwrite=True, quiet=True) == merged
    assert "o9" in {c.case_id for c in discover(merged).cases}
