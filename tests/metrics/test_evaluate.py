"""Folder evaluation on tiny PNG and NIfTI folders written directly with Pillow/nibabel."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.errors import MedsslError
from medssl.evaluation import evaluate_folders, write_evaluation
from medssl.metrics import evaluate_arrays
from tests.metrics.test_surface import reference_hausdorff, reference_nsd

SPACING = (2.0, 0.5, 3.0)  # NIfTI voxel size: row steps cost 2 mm, column steps 0.5 mm, slices 3 mm


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def save_nifti(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def square_2d() -> np.ndarray:
    truth = np.zeros((10, 9), dtype=np.uint8)
    truth[2:6, 2:6] = 1
    return truth


def block_3d() -> np.ndarray:
    truth = np.zeros((8, 8, 4), dtype=np.uint8)
    truth[2:6, 2:6, 1:3] = 1  # two slices thick: every voxel is a surface voxel
    return truth


@pytest.fixture
def png_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Case a: label 1 shifted one row. Case b: label 1 exact, label 2 only in truth, label 3 only in pred."""
    truth_a = square_2d()
    save_png(tmp_path / "truth" / "a.png", truth_a)
    save_png(tmp_path / "pred" / "a.png", np.roll(truth_a, 1, axis=0))
    truth_b = square_2d()
    pred_b = truth_b.copy()
    truth_b[7:9, 6:8] = 2
    pred_b[0:2, 7:9] = 3
    save_png(tmp_path / "truth" / "b.png", truth_b)
    save_png(tmp_path / "pred" / "b.png", pred_b)
    return tmp_path / "pred", tmp_path / "truth"


def test_png_label_maps_hand_computed(png_folders: tuple[Path, Path]) -> None:
    result = evaluate_folders(*png_folders)
    rows = {(r["case"], r["label"]): r for r in result["cases"]}
    assert list(rows) == [("a", "1"), ("b", "1"), ("b", "2"), ("b", "3")]
    # Shifted 4x4 square: overlap 12 of 16 + 16, 8 disagreeing voxels, every surface voxel within 1 px.
    assert rows["a", "1"] == pytest.approx(
        {"case": "a", "label": "1", "dice": 0.75, "hd95": 1.0, "hd": 1.0, "nsd": 1.0, "xor": 0.5}
    )
    assert rows["b", "1"] == pytest.approx(
        {"case": "b", "label": "1", "dice": 1.0, "hd95": 0.0, "hd": 0.0, "nsd": 1.0, "xor": 0.0}
    )
    assert rows["b", "2"] == {"case": "b", "label": "2", "dice": 0.0, "hd95": None, "hd": None, "nsd": 0.0, "xor": 1.0}
    assert rows["b", "3"] == {"case": "b", "label": "3", "dice": 0.0, "hd95": None, "hd": None, "nsd": 0.0, "xor": None}
    summary = result["summary"]
    assert summary["1"] == pytest.approx(
        {
            "n_cases": 2,
            "dice": 0.875,
            "hd95": 0.5,
            "hd": 0.5,
            "nsd": 1.0,
            "xor": 0.25,
            "n_undefined_dice": 0,
            "n_undefined_hd95": 0,
            "n_undefined_hd": 0,
            "n_undefined_nsd": 0,
            "n_undefined_xor": 0,
        }
    )
    assert summary["2"]["hd"] is None
    assert summary["2"]["n_undefined_hd"] == 1
    assert summary["3"]["xor"] is None
    assert summary["3"]["n_undefined_xor"] == 1
    assert result["settings"]["layout"] == "label_map"
    assert result["settings"]["units"] == {"a": "px", "b": "px"}


def test_png_spacing_aware_stays_in_pixels(png_folders: tuple[Path, Path]) -> None:
    plain = evaluate_folders(*png_folders)
    aware = evaluate_folders(*png_folders, spacing_aware=True)
    assert aware["cases"] == plain["cases"]
    assert aware["settings"]["units"] == {"a": "px", "b": "px"}


def test_label_names_select_and_rename(png_folders: tuple[Path, Path]) -> None:
    result = evaluate_folders(*png_folders, labels={1: "liver", 2: "spleen"})
    keys = [(r["case"], r["label"]) for r in result["cases"]]
    assert keys == [("a", "liver"), ("a", "spleen"), ("b", "liver"), ("b", "spleen")]
    absent = result["cases"][1]  # spleen is in neither map of case a: both-empty rules
    assert absent == {"case": "a", "label": "spleen", "dice": 1.0, "hd95": 0.0, "hd": 0.0, "nsd": 1.0, "xor": None}
    assert set(result["summary"]) == {"liver", "spleen"}


def test_nifti_mm_versus_px(tmp_path: Path) -> None:
    truth = block_3d()
    save_nifti(tmp_path / "truth" / "c1.nii.gz", truth)
    save_nifti(tmp_path / "pred" / "c1.nii", np.roll(truth, 1, axis=0))  # stems match across suffixes
    mm = evaluate_folders(tmp_path / "pred", tmp_path / "truth", spacing_aware=True, tolerance=1.0)
    px = evaluate_folders(tmp_path / "pred", tmp_path / "truth", spacing_aware=False, tolerance=1.0)
    # 8 of 32 voxels per side sit one row (2 mm, 1 px) from the other surface, the rest on it.
    (row_mm,) = mm["cases"]
    (row_px,) = px["cases"]
    assert row_mm == pytest.approx(
        {"case": "c1", "label": "1", "dice": 0.75, "hd95": 2.0, "hd": 2.0, "nsd": 0.75, "xor": 0.5}
    )
    assert row_px == pytest.approx(
        {"case": "c1", "label": "1", "dice": 0.75, "hd95": 1.0, "hd": 1.0, "nsd": 1.0, "xor": 0.5}
    )
    assert mm["settings"]["units"] == {"c1": "mm"}
    assert px["settings"]["units"] == {"c1": "px"}


def test_nifti_random_labels_match_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shape = (9, 8, 6)
    truth = rng.integers(0, 3, size=shape)
    pred = np.where(rng.random(shape) < 0.7, truth, rng.integers(0, 3, size=shape))
    save_nifti(tmp_path / "truth" / "r.nii.gz", truth)
    save_nifti(tmp_path / "pred" / "r.nii.gz", pred)
    tolerance = 1.77  # not a reachable distance on this grid
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth", spacing_aware=True, tolerance=tolerance)
    assert [r["label"] for r in result["cases"]] == ["1", "2"]
    for row in result["cases"]:
        p, t = pred == int(row["label"]), truth == int(row["label"])
        assert row["hd"] == pytest.approx(reference_hausdorff(p, t, SPACING, 100.0), rel=1e-12)
        assert row["hd95"] == pytest.approx(reference_hausdorff(p, t, SPACING, 95.0), rel=1e-12)
        assert row["nsd"] == pytest.approx(reference_nsd(p, t, SPACING, tolerance), rel=1e-12)
        assert row["dice"] == pytest.approx(2 * np.sum(p & t) / (p.sum() + t.sum()))


def test_multi_label_subfolders(tmp_path: Path) -> None:
    heart = square_2d() * 255
    lung = np.zeros_like(heart)
    lung[6:9, 1:4] = 255
    for case in ("a", "b"):
        save_png(tmp_path / "truth" / "heart" / f"{case}.png", heart)
        save_png(tmp_path / "truth" / "left_lung" / f"{case}.png", lung)
        save_png(tmp_path / "pred" / "heart" / f"{case}.png", heart)
        save_png(tmp_path / "pred" / "left_lung" / f"{case}.png", np.zeros_like(lung))
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    keys = [(r["case"], r["label"]) for r in result["cases"]]
    assert keys == [("a", "heart"), ("a", "left_lung"), ("b", "heart"), ("b", "left_lung")]
    assert result["summary"]["heart"]["dice"] == 1.0
    assert result["summary"]["left_lung"]["dice"] == 0.0
    assert result["summary"]["left_lung"]["n_undefined_hd95"] == 2
    assert result["settings"]["layout"] == "multi_label"


def test_multi_label_missing_structure_folder(tmp_path: Path) -> None:
    save_png(tmp_path / "truth" / "heart" / "a.png", square_2d())
    save_png(tmp_path / "truth" / "liver" / "a.png", square_2d())
    save_png(tmp_path / "pred" / "heart" / "a.png", square_2d())
    with pytest.raises(MedsslError, match="liver"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    save_png(tmp_path / "pred" / "liver" / "a.png", square_2d())
    save_png(tmp_path / "pred" / "a.png", square_2d())  # a stray label map beside the structure folders
    with pytest.raises(MedsslError, match=r"a\.png"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")


def test_missing_prediction_is_reported_not_scored(png_folders: tuple[Path, Path]) -> None:
    """A reference without prediction is left unscored and named (issue 14: it used to refuse the folder)."""
    pred_dir, truth_dir = png_folders
    (pred_dir / "b.png").unlink()
    result = evaluate_folders(pred_dir, truth_dir)
    assert {row["case"] for row in result["cases"]} == {"a"}
    assert result["settings"]["unused_references"] == ["b.png"]
    assert any("b.png" in w for w in result["warnings"])


def test_unmatched_prediction_is_an_error(png_folders: tuple[Path, Path]) -> None:
    pred_dir, truth_dir = png_folders
    save_png(pred_dir / "zz.png", square_2d())
    with pytest.raises(MedsslError, match=r"zz\.png"):
        evaluate_folders(pred_dir, truth_dir)


def test_shape_mismatch_names_both_files(png_folders: tuple[Path, Path]) -> None:
    pred_dir, truth_dir = png_folders
    save_png(pred_dir / "a.png", np.zeros((5, 5)))
    with pytest.raises(MedsslError, match=r"a\.png.*a\.png"):
        evaluate_folders(pred_dir, truth_dir)


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsslError, match="not found"):
        evaluate_folders(tmp_path / "nope", tmp_path / "empty")
    with pytest.raises(MedsslError, match="no label images"):
        evaluate_folders(tmp_path / "empty", tmp_path / "empty")


def test_write_evaluation_json_and_csv(png_folders: tuple[Path, Path], tmp_path: Path) -> None:
    result = evaluate_folders(*png_folders)
    json_path, csv_path = write_evaluation(result, tmp_path / "out" / "eval.json")
    assert csv_path == tmp_path / "out" / "eval.csv"
    text = json_path.read_text()
    assert "NaN" not in text
    assert "Infinity" not in text
    assert json.loads(text) == result  # None -> null round-trips, all values plain
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["label"]) for r in rows] == [("a", "1"), ("b", "1"), ("b", "2"), ("b", "3")]
    assert rows[2]["hd95"] == ""
    assert float(rows[0]["dice"]) == 0.75
    with pytest.raises(MedsslError, match="json"):
        write_evaluation(result, tmp_path / "eval.txt")


def test_evaluate_arrays_direct() -> None:
    truth = np.zeros((6, 6), dtype=np.int64)
    truth[1:3, 1:3] = 4
    pred = truth.copy()
    metrics = evaluate_arrays(pred, truth, spacing=(1.0, 2.0), labels={4: "tumour"}, tolerance=0.5)
    assert metrics == {"tumour": {"dice": 1.0, "hd95": 0.0, "hd": 0.0, "nsd": 1.0, "xor": 0.0}}
    assert list(evaluate_arrays(pred, truth)) == ["4"]
    with pytest.raises(MedsslError, match="shape"):
        evaluate_arrays(pred, truth[:5])
