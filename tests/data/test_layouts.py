"""Dataset discovery for every layout, built synthetically, plus the real datasets when present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, read_label, write_image
from medssl.data.layouts import Case, discover, discover_inputs
from medssl.errors import MedsslError
from tests.conftest import real_dataset


def _png(path: Path, value: int = 0, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)
    return path


def _nii(path: Path, shape: tuple[int, ...] = (4, 4, 3), value: float = 1.0) -> Path:
    write_image(path, np.full(shape, value, np.float32), ImageMeta.default(shape[-3:], physical=True))
    return path


def _names(cases: list[Case]) -> list[str]:
    return [c.case_id for c in cases]


# ---------------------------------------------------------------------------------------------------- msd


def test_msd_layout(tmp_path: Path) -> None:
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for name in ("hip_001", "hip_002", "hip_003"):
        _nii(tmp_path / "imagesTr" / f"{name}.nii.gz")
    for name in ("hip_001", "hip_002", "hip_009"):
        _nii(tmp_path / "labelsTr" / f"{name}.nii.gz")
    (tmp_path / "imagesTr" / "._hip_001.nii.gz").write_bytes(b"macOS resource fork")  # as in the MSD tarballs
    _nii(tmp_path / "imagesTs" / "hip_100.nii.gz")
    index = discover(tmp_path)
    assert index.layout == "msd" and index.modality == "MRI"
    assert index.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert _names(index.cases) == ["hip_001", "hip_002"]
    assert index.cases[0].label == tmp_path / "labelsTr" / "hip_001.nii.gz"
    assert _names(index.test_cases) == ["hip_100"] and index.test_cases[0].label is None
    assert index.has_labels
    text = "\n".join(index.problems)
    assert "imagesTr/hip_003.nii.gz" in text and "labelsTr/hip_009.nii.gz" in text
    assert len(index.problems) == 2


def test_nnunet_v2_layout(tmp_path: Path) -> None:
    meta = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "tumour": 1, "whole": [1, 2]},
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for case in ("pat_001", "pat_002"):
        for ch in ("0000", "0001"):
            _nii(tmp_path / "imagesTr" / f"{case}_{ch}.nii.gz")
        _nii(tmp_path / "labelsTr" / f"{case}.nii.gz")
    _nii(tmp_path / "imagesTr" / "pat_003_0000.nii.gz")  # second channel missing
    _nii(tmp_path / "labelsTr" / "pat_003.nii.gz")
    index = discover(tmp_path)
    assert index.layout == "msd" and index.modality == "CT"
    assert index.labels == {0: "background", 1: "tumour", 2: "whole"}
    assert _names(index.cases) == ["pat_001", "pat_002"]
    assert [p.name for p in index.cases[0].images] == ["pat_001_0000.nii.gz", "pat_001_0001.nii.gz"]
    assert any("pat_003" in p and "_0001" in p for p in index.problems)


# ------------------------------------------------------------------------------------------------- paired


def test_paired_layout(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.png", "c.png", "e.png"):
        _png(tmp_path / "images" / name)
    for name in ("a.png", "b.png", "c_mask.png", "d.png"):
        _png(tmp_path / "masks" / name, 255)
    index = discover(tmp_path)
    assert index.layout == "paired" and index.labels is None and index.structures is None
    assert _names(index.cases) == ["a", "b", "c"]
    assert index.cases[0].images == (tmp_path / "images" / "a.jpg",)
    assert index.cases[2].label == tmp_path / "masks" / "c_mask.png"
    text = "\n".join(index.problems)
    assert "image without mask: images/e.png" in text and "mask without image: masks/d.png" in text


def test_paired_duplicate_stems_are_left_out(tmp_path: Path) -> None:
    for name in ("a.png", "a.jpg", "b.png"):
        _png(tmp_path / "images" / name)
    for name in ("a.png", "b.png"):
        _png(tmp_path / "masks" / name)
    index = discover(tmp_path)
    assert _names(index.cases) == ["b"]
    assert any("duplicate stem 'a'" in p and "images/a.jpg" in p and "images/a.png" in p for p in index.problems)


def test_paired_multilabel_layout(tmp_path: Path) -> None:
    for name in ("x1", "x2", "x3"):
        _png(tmp_path / "images" / f"{name}.png")
        _png(tmp_path / "masks" / "heart" / f"{name}.png", 255)
    _png(tmp_path / "masks" / "left_lung" / "x1.png", 255)
    _png(tmp_path / "masks" / "left_lung" / "x2.png", 255)
    index = discover(tmp_path)
    assert index.layout == "paired-multilabel"
    assert index.structures == ["heart", "left_lung"]
    assert _names(index.cases) == ["x1", "x2"] and index.cases[0].label is None
    assert index.cases[1].structures == {
        "heart": tmp_path / "masks" / "heart" / "x2.png",
        "left_lung": tmp_path / "masks" / "left_lung" / "x2.png",
    }
    assert index.has_labels
    assert any("images/x3.png" in p and "masks/left_lung" in p for p in index.problems)


def test_suffix_layout(tmp_path: Path) -> None:
    for name in ("x.tif", "x_mask.tif", "y.png", "y_seg.png", "z.png", "w_label.png"):
        _png(tmp_path / name)
    index = discover(tmp_path)
    assert index.layout == "suffix"
    assert _names(index.cases) == ["x", "y"]
    assert index.cases[0].images == (tmp_path / "x.tif",) and index.cases[0].label == tmp_path / "x_mask.tif"
    text = "\n".join(index.problems)
    assert "image without mask: z.png" in text and "mask without image: w_label.png" in text


# --------------------------------------------------------------------------------------------- unlabelled


def test_unlabelled_layout(tmp_path: Path) -> None:
    _png(tmp_path / "top.png")
    _nii(tmp_path / "sub" / "vol.nii.gz")
    _png(tmp_path / "sub" / "deeper" / "hidden_too_deep.png")
    series = tmp_path / "series_a"
    series.mkdir()
    (series / "0001.dcm").write_bytes(b"x")  # a DICOM series folder counts as one image
    (tmp_path / "README.txt").write_text("notes")
    index = discover(tmp_path)
    assert index.layout == "unlabelled" and not index.has_labels
    assert _names(index.cases) == ["series_a", "top", "vol"]
    assert index.cases[0].images == (series,)


def test_unlabelled_prefers_images_folders(tmp_path: Path) -> None:
    """STARE-like (images/ beside other folders) and DRIVE-like ({training,test}/images) layouts."""
    _png(tmp_path / "stare" / "images" / "im1.png")
    _png(tmp_path / "stare" / "labels-ah" / "im1.png")
    assert _names(discover(tmp_path / "stare").cases) == ["im1"]
    for split in ("training", "test"):
        _png(tmp_path / "drive" / split / "images" / f"01_{split}.tif")
        _png(tmp_path / "drive" / split / "1st_manual" / "01_manual1.gif")
    assert _names(discover(tmp_path / "drive").cases) == ["01_test", "01_training"]


def test_single_file_is_one_case(tmp_path: Path) -> None:
    index = discover(_png(tmp_path / "one.png"))
    assert index.layout == "unlabelled" and _names(index.cases) == ["one"]


# ------------------------------------------------------------------------------------------------- errors


def test_discover_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match=r"nowhere.*does not exist"):
        discover(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedsslError, match=r"empty.*empty folder"):
        discover(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    with pytest.raises(MedsslError, match=r"docs.*no supported image"):
        discover(tmp_path / "docs")
    _png(tmp_path / "nomasks" / "images" / "a.png")
    (tmp_path / "nomasks" / "masks").mkdir()
    with pytest.raises(MedsslError, match=r"(?s)no usable case.*images/a\.png"):
        discover(tmp_path / "nomasks")
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "dataset.json").write_text("{not json")
    _nii(tmp_path / "bad_json" / "imagesTr" / "a.nii.gz")
    with pytest.raises(MedsslError, match=r"dataset\.json"):
        discover(tmp_path / "bad_json")


def test_discover_inputs(tmp_path: Path) -> None:
    single = _png(tmp_path / "single.png")
    assert discover_inputs(single) == [single]
    series = tmp_path / "study" / "s1"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"x")
    assert discover_inputs(series) == [series]
    assert discover_inputs(tmp_path / "study") == [series]
    ds = tmp_path / "ds"
    _nii(ds / "imagesTr" / "a.nii.gz")
    _nii(ds / "imagesTs" / "b.nii.gz")
    (ds / "dataset.json").write_text("{}")
    assert discover_inputs(ds) == [ds / "imagesTs" / "b.nii.gz"]
    with pytest.raises(MedsslError, match="gone"):
        discover_inputs(tmp_path / "gone")
    (tmp_path / "void").mkdir()
    with pytest.raises(MedsslError, match="void"):
        discover_inputs(tmp_path / "void")
    (tmp_path / "note.txt").write_text("x")
    with pytest.raises(MedsslError, match=r"note\.txt"):
        discover_inputs(tmp_path / "note.txt")


# ---------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_jsrt_paired_multilabel() -> None:
    index = discover(real_dataset("jsrt"))
    assert index.layout == "paired-multilabel" and not index.problems
    assert index.structures == ["heart", "left_clavicle", "left_lung", "right_clavicle", "right_lung"]
    assert len(index.cases) == 200
    case = index.cases[0]
    image, meta = read_image(case.images[0])
    assert image.shape == (1, 256, 256) and image.dtype == np.uint8 and not meta.physical
    assert case.structures is not None
    mask, _ = read_label(case.structures["heart"])
    assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 255}


@pytest.mark.realdata
def test_real_ph2_paired() -> None:
    index = discover(real_dataset("ph2"))
    assert index.layout == "paired" and not index.problems and len(index.cases) == 200
    case = index.cases[0]
    assert case.label is not None
    image, _ = read_image(case.images[0])
    mask, _ = read_label(case.label)
    assert image.shape[0] == 3 and image.shape[1:] == mask.shape
    assert set(np.unique(mask)) <= {0, 255}


@pytest.mark.realdata
def test_real_hippocampus_msd() -> None:
    index = discover(real_dataset("hippocampus"))
    assert index.layout == "msd" and index.modality == "MRI" and not index.problems
    assert index.labels == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert len(index.cases) == 201
    case = index.cases[0]
    assert case.label is not None
    image, meta = read_image(case.images[0])
    label, label_meta = read_label(case.label)
    assert image.ndim == 4 and image.shape[1:] == label.shape and meta.physical
    np.testing.assert_allclose(meta.affine(), label_meta.affine(), atol=1e-4)
    assert set(np.unique(label)) <= {0, 1, 2}
