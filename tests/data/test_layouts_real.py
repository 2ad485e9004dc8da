"""The layouts of DRIVE, STARE and BraTS 2015 (issue 14): synthetic replicas always, the real folders in
``../shared/data`` when present; stray files; prediction inputs of one folder per case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl import api
from medssl.data.check import check_dataset_report
from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, read_label, write_image
from medssl.data.layouts import discover, discover_input_cases, discover_inputs, scan_dataset
from medssl.engine.finetune import labelled_index
from medssl.errors import MedsslError
from tests.conftest import TINY, real_dataset


def _picture(path: Path, array: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8))
    if palette:  # DRIVE's 2nd_manual: palette GIFs whose INDEX is 0/1 (a grey conversion would give 0/255)
        im = im.convert("P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.save(path)
    return path


def _vessels(seed: int, size: tuple[int, int] = (24, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, np.uint8)
    mask[:, rng.integers(4, size[1] - 4)] = 1
    mask[rng.integers(4, size[0] - 4), :] = 1
    return mask


def _drive(root: Path) -> Path:
    """DRIVE's layout: ``{training,test}/images/*.tif``, ``1st_manual/*.gif``, ``test/2nd_manual/``, ``mask/``."""
    for part, ids in (("training", (21, 22, 23)), ("test", (1, 2, 3))):
        for i in ids:
            vessels = _vessels(i)
            rgb = np.stack([60 + 120 * vessels] * 3, axis=-1)
            _picture(root / part / "images" / f"{i:02d}_{part}.tif", rgb)
            _picture(root / part / "1st_manual" / f"{i:02d}_manual1.gif", vessels * 255)
            _picture(root / part / "mask" / f"{i:02d}_{part}_mask.gif", np.full(vessels.shape, 255))
            if part == "test":
                _picture(root / part / "2nd_manual" / f"{i:02d}_manual2.gif", vessels, palette=True)
    return root


def _stare(root: Path) -> Path:
    """STARE's layout: ``images/``, ``labels-ah/``, ``labels-vk/``, ``fov/`` with equal stems."""
    for i in range(1, 5):
        vessels = _vessels(i)
        _picture(root / "images" / f"im{i:04d}.png", np.stack([60 + 120 * vessels] * 3, axis=-1))
        _picture(root / "labels-vk" / f"im{i:04d}.png", vessels * 255)
        _picture(root / "labels-ah" / f"im{i:04d}.png", vessels * 255)
        _picture(root / "fov" / f"im{i:04d}.png", np.full(vessels.shape, 255))
    return root


def _brats(root: Path, parts: dict[str, int] | None = None) -> Path:
    """BraTS 2015's layout: ``<part>/<case>/{Flair,T1c}_subtrMeanDivStd, OTMultiClass, brainmask .nii.gz``."""
    rng = np.random.default_rng(0)
    shape = (16, 16, 16)
    meta = ImageMeta.default(shape, physical=True)
    n = 0
    for part, count in (parts or {"train": 4, "test": 2}).items():
        for _ in range(count):
            case = root / part / f"brats_2013_pat{n:04d}_1"
            n += 1
            label = np.zeros(shape, np.uint8)
            lo = rng.integers(3, 7)
            label[lo : lo + 6, lo : lo + 6, lo : lo + 6] = 1
            label[lo + 2 : lo + 4, lo + 2 : lo + 4, lo + 2 : lo + 4] = 2
            for name, scale in (("Flair", 1.0), ("T1c", 2.0)):
                image = (scale * label + rng.normal(0, 0.2, shape)).astype(np.float32)
                write_image(case / f"{name}_subtrMeanDivStd.nii.gz", image, meta)
            write_image(case / "OTMultiClass.nii.gz", label, meta)
            write_image(case / "brainmask.nii.gz", np.ones(shape, np.uint8), meta)
            (case / "License_CC_BY_NC_SA_3.0.txt").write_text("licence")
    return root


# ------------------------------------------------------------------------------------------------ observers


def test_drive_layout_is_labelled_by_the_first_observer(tmp_path: Path) -> None:
    index = discover(_drive(tmp_path / "drive"))
    assert index.layout == "observers" and not index.problems and not index.unrecognised
    assert index.parts == ["test", "training"] and index.observers == ["1st_manual", "2nd_manual"]
    assert [c.case_id for c in index.cases] == [f"0{i}_test" for i in (1, 2, 3)] + [f"2{i}_training" for i in (1, 2, 3)]
    test, training = index.cases[0], index.cases[3]
    assert test.label == tmp_path / "drive/test/1st_manual/01_manual1.gif"
    assert test.fov == tmp_path / "drive/test/mask/01_test_mask.gif"
    assert test.observers is not None and set(test.observers) == {"1st_manual", "2nd_manual"}
    assert training.observers == {"1st_manual": tmp_path / "drive/training/1st_manual/21_manual1.gif"}
    # the palette GIF of the second observer reads as its index 0/1 (a grey conversion would give 0/255)
    assert Image.open(test.observers["2nd_manual"]).mode == "P"
    assert set(np.unique(read_label(test.observers["2nd_manual"])[0])) == {0, 1}


def test_drive_data_check_reports_the_layout_and_the_other_observer(tmp_path: Path) -> None:
    report = check_dataset_report(_drive(tmp_path / "drive"))
    assert report.ok, report.problems
    assert report.layout == "observers" and report.n_cases == 6
    text = "\n".join(report.notes)
    assert "1st_manual" in text and "2nd_manual" in text and "mask/" in text


def test_stare_layout_labels_ah_first_by_name(tmp_path: Path) -> None:
    index = discover(_stare(tmp_path / "stare"))
    assert index.layout == "observers" and not index.problems and len(index.cases) == 4
    assert index.observers == ["labels-ah", "labels-vk"]
    case = index.cases[0]
    assert case.label == tmp_path / "stare/labels-ah/im0001.png"
    assert case.fov == tmp_path / "stare/fov/im0001.png"
    assert case.images == (tmp_path / "stare/images/im0001.png",)


def test_observer_mask_without_image_is_a_problem(tmp_path: Path) -> None:
    root = _stare(tmp_path / "stare")
    _picture(root / "labels-ah" / "im0099.png", np.zeros((24, 24)))
    (root / "labels-ah" / "im0002.png").unlink()
    index = scan_dataset(root)
    assert any("im0099" in p for p in index.problems)
    assert any("im0002" in p for p in index.problems)  # no mask of the label's observer
    assert "im0002" not in [c.case_id for c in index.cases]


# --------------------------------------------------------------------------------------------- case folders


def test_brats_layout_one_folder_per_case(tmp_path: Path) -> None:
    root = _brats(tmp_path / "brats")
    index = discover(root)
    assert index.layout == "case-folders" and not index.problems and not index.unrecognised
    assert len(index.cases) == 6 and index.parts == ["test", "train"]
    assert index.channels == ["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"]
    case = next(c for c in index.cases if c.case_id == "brats_2013_pat0000_1")
    folder = root / "train" / "brats_2013_pat0000_1"
    assert case.images == (folder / "Flair_subtrMeanDivStd.nii.gz", folder / "T1c_subtrMeanDivStd.nii.gz")
    assert case.label == folder / "OTMultiClass.nii.gz" and case.fov == folder / "brainmask.nii.gz"
    report = check_dataset_report(root)
    assert report.ok and report.n_cases == 6, report.problems


def test_case_folder_with_other_channels_is_named(tmp_path: Path) -> None:
    root = _brats(tmp_path / "brats", {"train": 3})
    odd = root / "train" / "brats_2013_pat0001_1" / "T1c_subtrMeanDivStd.nii.gz"
    odd.rename(odd.with_name("T2_subtrMeanDivStd.nii.gz"))
    index = scan_dataset(root)
    assert len(index.cases) == 2
    assert any("brats_2013_pat0001_1" in p and "T2_subtrMeanDivStd" in p for p in index.problems)


def test_predict_inputs_of_one_folder_per_case(tmp_path: Path) -> None:
    root = _brats(tmp_path / "brats")
    cases = discover_input_cases(root)
    assert [c.case_id for c in cases] == [f"brats_2013_pat{i:04d}_1" for i in range(6)]
    assert all(len(c.images) == 2 and c.label is None for c in cases)
    one = discover_input_cases(root / "test" / "brats_2013_pat0004_1")
    assert len(one) == 1
    assert [p.name for p in one[0].images] == [f"{m}_subtrMeanDivStd.nii.gz" for m in ("Flair", "T1c")]
    with pytest.raises(MedsslError, match="one folder per case"):
        discover_inputs(root)


def test_finetune_and_predict_on_case_folders(tmp_path: Path) -> None:
    """Two channels from the case folders in training, the same two in prediction; outputs named by case."""
    root = _brats(tmp_path / "brats")
    run = tmp_path / "run"
    api.finetune(root, run, max_steps=2, quiet=True, accelerator="cpu", **{**TINY, "patch_size": [16, 16, 16]})
    written = api.predict(run, root / "test", tmp_path / "pred", quiet=True)
    assert sorted(p.name for p in written) == ["brats_2013_pat0004_1.nii.gz", "brats_2013_pat0005_1.nii.gz"]
    labels, _ = read_label(written[0])
    assert labels.shape == (16, 16, 16) and set(np.unique(labels)) <= {0, 1, 2}


# --------------------------------------------------------------------------------------------- stray files


def test_stray_files_are_listed_by_data_check(paired_2d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (paired_2d / "images" / "case.nii.txt").write_text("not an image")
    (paired_2d / "notes.xyz").write_text("?")
    (paired_2d / "README.txt").write_text("documentation is fine")
    report = check_dataset_report(paired_2d)
    stray = [p for p in report.problems if "not a supported image" in p]
    assert stray == ["not a supported image, ignored: images/case.nii.txt", "not a supported image, ignored: notes.xyz"]
    assert scan_dataset(paired_2d).unrecognised == [paired_2d / "images" / "case.nii.txt", paired_2d / "notes.xyz"]
    labelled_index(paired_2d)  # what finetune and the experiment discover with: a warning, not silence
    assert "images/case.nii.txt, notes.xyz" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_real_drive() -> None:
    index = discover(real_dataset("drive"))
    assert index.layout == "observers" and not index.problems and not index.unrecognised
    assert len(index.cases) == 40 and index.parts == ["test", "training"]
    test_cases = [c for c in index.cases if c.case_id.endswith("_test")]
    assert len(test_cases) == 20 and all(c.observers and len(c.observers) == 2 and c.fov for c in test_cases)
    case = test_cases[0]
    assert case.label is not None and case.label.parent.name == "1st_manual"
    image, _ = read_image(case.images[0])
    second, _ = read_label(case.observers["2nd_manual"])  # type: ignore[index]
    assert image.shape == (3, 584, 565) and second.shape == (584, 565) and set(np.unique(second)) == {0, 1}


@pytest.mark.realdata
def test_real_stare() -> None:
    index = discover(real_dataset("stare"))
    assert index.layout == "observers" and not index.problems and len(index.cases) == 20
    assert index.observers == ["labels-ah", "labels-vk"]
    assert all(c.fov is not None and c.observers and len(c.observers) == 2 for c in index.cases)


@pytest.mark.realdata
def test_real_brats2015() -> None:
    root = real_dataset("brats2015")
    index = discover(root)
    assert index.layout == "case-folders" and not index.problems and len(index.cases) == 6
    assert index.channels == ["Flair_subtrMeanDivStd", "T1c_subtrMeanDivStd"]
    assert all(c.label and c.label.name == "OTMultiClass.nii.gz" and c.fov for c in index.cases)
    assert len(discover_input_cases(root / "test")) == 2
