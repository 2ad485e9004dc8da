"""``evaluate`` checks its inputs before scoring (issue 14): cluster maps of ``medssl segment`` are refused with the
protocol to use, geometry differences are warned about, references without prediction are counted, and every
bad file is named before anything is scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl import api
from medssl.errors import MedsslError
from medssl.evaluation import evaluate_folders, write_evaluation


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _nii(path: Path, array: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return path


def _disc(size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2


@pytest.fixture
def lesions(tmp_path: Path) -> tuple[Path, Path]:
    """Dark discs on a bright background (``images/``) and their 0/255 masks (``truth/``), like PH2."""
    for i in range(3):
        disc = np.roll(_disc(), i, axis=1)
        _png(tmp_path / "images" / f"c{i}.png", np.where(disc, 50, 200) + i)
        _png(tmp_path / "truth" / f"c{i}.png", disc * 255)
    return tmp_path / "images", tmp_path / "truth"


def test_segment_output_without_protocol_is_refused(lesions: tuple[Path, Path], tmp_path: Path) -> None:
    images, truth = lesions
    api.segment(images, tmp_path / "clusters", method="kmeans", clusters=2, quiet=True)
    with pytest.raises(MedsslError, match="--protocol best-cluster"):
        api.evaluate(tmp_path / "clusters", truth)
    scored = api.evaluate(tmp_path / "clusters", truth, protocol="best-cluster")  # the protocol that fits
    assert scored["summary"]["255"]["dice"] > 0.9


def test_cluster_values_no_reference_holds_are_warned_about(lesions: tuple[Path, Path], tmp_path: Path) -> None:
    """Cluster maps copied without the segment folder's files: values 1, 2 against 0/255 truth get a hint."""
    _, truth = lesions
    for i in range(3):
        _png(tmp_path / "maps" / f"c{i}.png", np.roll(_disc(), i, axis=1) + 1)
    result = evaluate_folders(tmp_path / "maps", truth)
    assert any("[1, 2]" in w and "--protocol best-cluster" in w for w in result["warnings"])


def test_geometry_difference_is_warned_about(tmp_path: Path) -> None:
    block = np.zeros((8, 8, 8), np.uint8)
    block[2:6, 2:6, 2:6] = 1
    _nii(tmp_path / "truth" / "a.nii.gz", block)
    _nii(tmp_path / "pred" / "a.nii.gz", block, spacing=(2.0, 1.0, 1.0))
    _nii(tmp_path / "truth" / "b.nii.gz", block)
    _nii(tmp_path / "pred" / "b.nii.gz", block)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    assert len(result["warnings"]) == 1
    assert "a.nii.gz" in result["warnings"][0] and "spacing" in result["warnings"][0]
    assert result["summary"]["1"]["dice"] == 1.0


def test_a_few_predictions_against_all_references(lesions: tuple[Path, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, truth = lesions
    _png(tmp_path / "pred" / "c1.png", np.roll(_disc(), 1, axis=1) * 255)
    result = api.evaluate(tmp_path / "pred", truth)
    assert [row["case"] for row in result["cases"]] == ["c1"]
    assert result["summary"]["255"]["dice"] == 1.0
    assert result["settings"]["n_unused_references"] == 2
    assert result["settings"]["unused_references"] == ["c0.png", "c2.png"]
    assert "2 reference file(s)" in capsys.readouterr().err
    json_path, _ = write_evaluation(result, tmp_path / "eval.json")
    assert json.loads(json_path.read_text())["settings"]["n_unused_references"] == 2


def test_a_few_predictions_multi_label(tmp_path: Path) -> None:
    for structure in ("heart", "lung"):
        for case in ("a", "b"):
            _png(tmp_path / "truth" / structure / f"{case}.png", _disc() * 255)
        _png(tmp_path / "pred" / structure / "a.png", _disc() * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    assert {(r["case"], r["label"]) for r in result["cases"]} == {("a", "heart"), ("a", "lung")}
    assert result["settings"]["unused_references"] == ["heart/b.png", "lung/b.png"]


def test_prediction_without_reference_stays_an_error(lesions: tuple[Path, Path], tmp_path: Path) -> None:
    _, truth = lesions
    _png(tmp_path / "pred" / "zz.png", _disc() * 255)
    with pytest.raises(MedsslError, match=r"zz\.png"):
        evaluate_folders(tmp_path / "pred", truth)


def test_every_bad_file_is_named_before_scoring(lesions: tuple[Path, Path], tmp_path: Path) -> None:
    _, truth = lesions
    pred = tmp_path / "pred"
    shutil.copytree(truth, pred)
    _png(pred / "c0.png", np.zeros((5, 5)))  # shape mismatch
    (pred / "c1.png").write_bytes(b"not a png")  # unreadable
    with pytest.raises(MedsslError) as err:
        api.evaluate(pred, truth, out=tmp_path / "eval.json")
    message = str(err.value)
    assert "c0.png" in message and "c1.png" in message and "nothing scored" in message
    assert not (tmp_path / "eval.json").exists()


def test_non_finite_prediction_is_named(tmp_path: Path) -> None:
    block = np.zeros((6, 6, 6), np.float32)
    block[1:4, 1:4, 1:4] = 1
    _nii(tmp_path / "truth" / "a.nii.gz", block)
    bad = block.copy()
    bad[0, 0, 0] = np.nan
    _nii(tmp_path / "pred" / "a.nii.gz", bad)
    with pytest.raises(MedsslError, match=r"pred/a\.nii\.gz.*(NaN|non-finite|infinite)"):
        evaluate_folders(tmp_path / "pred", tmp_path / "truth")


def test_drive_names_pair_by_their_leading_number(tmp_path: Path) -> None:
    """Predictions named after DRIVE's images (``01_test``) against its truth (``01_manual1``)."""
    for i in (1, 2):
        _png(tmp_path / "truth" / f"{i:02d}_manual1.png", _disc() * 255)
        _png(tmp_path / "pred" / f"{i:02d}_test.png", _disc() * 255)
    result = evaluate_folders(tmp_path / "pred", tmp_path / "truth")
    assert [row["case"] for row in result["cases"]] == ["01_test", "02_test"]
    assert result["summary"]["255"]["dice"] == 1.0 and not result["warnings"]
