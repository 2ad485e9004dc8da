"""Bad data reaches no command: what ``medssl data check`` reports is refused by every command that reads data, with
the same line, or left out with ``--skip-bad-cases`` / ``--skip-bad-inputs`` and listed."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl import api
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from tests.conftest import TINY
from tests.test_cli import assert_clean_error, medssl

NAN_LINE = "imagesTr/vol_003.nii.gz: 4096 NaN or infinite value(s) in the image"
LABEL_LINE = "labelsTr/vol_002.nii.gz: label values {3} not declared in dataset.json (declared: {0, 1, 2})"
PRETRAIN = {"method": "simclr", "max_steps": 1, "batch_size": 2, "channels": [4, 8], "quiet": True}


def _affine(root: Path) -> np.ndarray:
    return np.asarray(nib.load(root / "imagesTr" / "vol_000.nii.gz").affine)


def _nan_image(root: Path, case: str = "vol_003") -> None:
    """Replace a case's image by an all-NaN volume (same geometry)."""
    nib.save(
        nib.Nifti1Image(np.full((16, 16, 16), np.nan, np.float32), _affine(root)), root / "imagesTr" / f"{case}.nii.gz"
    )


def _label_3(root: Path) -> None:
    """Give ``vol_002`` some voxels of label 3, which dataset.json does not declare."""
    path = root / "labelsTr" / "vol_002.nii.gz"
    label = np.asarray(nib.load(path).dataobj).copy()
    label[:2, :2, :2] = 3
    nib.save(nib.Nifti1Image(label, _affine(root)), path)


# ----------------------------------------------------------------------------------------------- training data


def test_finetune_refuses_a_nan_image_with_the_data_check_line(msd_3d: Path, tmp_path: Path) -> None:
    _nan_image(msd_3d)
    assert NAN_LINE in api.check_data(msd_3d).problems
    with pytest.raises(MedsslError) as err:
        api.finetune(msd_3d, tmp_path / "run", max_steps=2, quiet=True, **TINY)
    assert NAN_LINE in str(err.value) and "--skip-bad-cases" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_finetune_refuses_an_undeclared_label_with_the_data_check_line(msd_3d: Path, tmp_path: Path) -> None:
    _label_3(msd_3d)
    assert LABEL_LINE in api.check_data(msd_3d).problems
    with pytest.raises(MedsslError) as err:
        api.finetune(msd_3d, tmp_path / "run", max_steps=2, quiet=True, **TINY)
    assert LABEL_LINE in str(err.value)
    assert not (tmp_path / "run").exists()


def test_finetune_refuses_a_mask_value_most_masks_lack(paired_2d: Path, tmp_path: Path) -> None:
    """Without dataset.json the dataset-wide rule of `data check` (values of most masks) applies too."""
    path = paired_2d / "masks" / "case04.png"
    mask = np.asarray(Image.open(path)).copy()
    mask[:2, :2] = 7
    Image.fromarray(mask).save(path)
    line = next(p for p in api.check_data(paired_2d).problems if p.startswith("masks/case04.png"))
    with pytest.raises(MedsslError) as err:
        api.finetune(paired_2d, tmp_path / "run", max_steps=2, quiet=True, **TINY)
    assert line in str(err.value)


def test_finetune_skips_bad_cases_before_the_split(
    msd_3d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _nan_image(msd_3d)
    _label_3(msd_3d)
    run = tmp_path / "run"
    api.finetune(msd_3d, run, max_steps=2, quiet=True, skip_bad_cases=True, **TINY)
    split = json.loads((run / "split.json").read_text())
    every = {i for key in ("train", "train_labelled", "val", "test") for i in split[key]}
    assert every == {f"vol_{i:03d}" for i in (0, 1, 4, 5)}
    assert Plan.load(run / "plan.json").class_values == [0, 1, 2]  # no class 3 from the skipped mask
    skipped = json.loads((run / "command.json").read_text())["skipped_cases"]
    assert skipped == {"vol_002": [LABEL_LINE], "vol_003": [NAN_LINE]}
    err = capsys.readouterr().err
    assert "--skip-bad-cases: left out 2 case(s)" in err and "vol_002" in err and "vol_003" in err


def test_pretrain_refuses_a_nan_image_and_can_skip_it(msd_3d: Path, tmp_path: Path) -> None:
    _nan_image(msd_3d)
    with pytest.raises(MedsslError) as err:
        api.pretrain(msd_3d, tmp_path / "pre", accelerator="cpu", **PRETRAIN)  # type: ignore[arg-type]
    assert NAN_LINE in str(err.value)
    assert not (tmp_path / "pre").exists()
    _label_3(msd_3d)  # pretraining reads no label: an undeclared label value does not matter to it
    api.pretrain(msd_3d, tmp_path / "pre", accelerator="cpu", skip_bad_cases=True, **PRETRAIN)  # type: ignore[arg-type]
    command = json.loads((tmp_path / "pre" / "command.json").read_text())
    assert command["skipped_cases"] == {"vol_003": [NAN_LINE]}


def test_label_efficiency_refuses_bad_cases_before_anything(msd_3d: Path, tmp_path: Path) -> None:
    _label_3(msd_3d)
    with pytest.raises(MedsslError) as err:
        api.label_efficiency(msd_3d, tmp_path / "exp", methods=["random"], accelerator="cpu", quiet=True)
    assert LABEL_LINE in str(err.value)
    assert not (tmp_path / "exp").exists()


def test_cli_finetune_refuses_in_one_clean_error(msd_3d: Path, tmp_path: Path) -> None:
    _nan_image(msd_3d)
    proc = medssl("finetune", "--data", msd_3d, "--out", tmp_path / "run", "--max-steps", "1", "--quiet")
    assert_clean_error(proc, NAN_LINE)


# --------------------------------------------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 3D single-channel model from a 2-step fine-tuning on a tiny Decathlon folder, shared by the module."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "msd"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    rng = np.random.default_rng(2)
    grid = np.indices((16, 16, 16))
    for i in range(5):
        disc = ((grid - rng.uniform(6, 10, (3, 1, 1, 1))) ** 2).sum(0) <= 16
        img = (50 + 80 * disc + rng.normal(0, 8, disc.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(img, np.eye(4)), data / "imagesTr" / f"vol_{i}.nii.gz")
        nib.save(nib.Nifti1Image(disc.astype(np.uint8), np.eye(4)), data / "labelsTr" / f"vol_{i}.nii.gz")
    (data / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "disc"}, "modality": {"0": "MRI"}})
    )
    api.finetune(data, root / "run", max_steps=2, quiet=True, **TINY)
    yield root


def _inputs(trained: Path, folder: Path, *bad: str) -> Path:
    """A folder with one good volume (named first) and the bad inputs asked for."""
    folder.mkdir()
    shutil.copy(trained / "msd" / "imagesTr" / "vol_0.nii.gz", folder / "a_good.nii.gz")
    if "nan" in bad:
        nib.save(nib.Nifti1Image(np.full((16, 16, 16), np.nan, np.float32), np.eye(4)), folder / "b_nan.nii.gz")
    if "rgb" in bad:
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(folder / "c_rgb.png")
    if "text" in bad:
        (folder / "d_text.nii.gz").write_text("not an image")
    return folder


def test_predict_refuses_a_nan_volume(trained: Path, tmp_path: Path) -> None:
    inputs = _inputs(trained, tmp_path / "in", "nan")
    with pytest.raises(MedsslError) as err:
        api.predict(trained / "run", inputs, tmp_path / "pred", quiet=True)
    assert f"{inputs / 'b_nan.nii.gz'}: 4096 NaN or infinite value(s) in the image" in str(err.value)
    assert not (tmp_path / "pred").exists()


def test_predict_checks_every_input_before_writing(trained: Path, tmp_path: Path) -> None:
    """All the bad inputs are named at once, and nothing is written."""
    inputs = _inputs(trained, tmp_path / "in", "nan", "text")
    with pytest.raises(MedsslError) as err:
        api.predict(trained / "run", inputs, tmp_path / "pred", quiet=True)
    assert "2 of 3 input image(s)" in str(err.value)
    assert "b_nan.nii.gz" in str(err.value) and "d_text.nii.gz" in str(err.value)
    assert not (tmp_path / "pred").exists()


def test_predict_says_plainly_that_a_3d_model_needs_3d_images(trained: Path, tmp_path: Path) -> None:
    inputs = _inputs(trained, tmp_path / "in", "rgb")
    with pytest.raises(MedsslError) as err:
        api.predict(trained / "run", inputs / "c_rgb.png", tmp_path / "pred", quiet=True)
    message = str(err.value)
    assert "the model expects 3D single-channel images (trained on " in message
    assert f"{inputs / 'c_rgb.png'} is a 2D RGB image" in message
    assert "channel(s)" not in message


def test_predict_can_skip_bad_inputs_and_list_them(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _inputs(trained, tmp_path / "in", "nan", "rgb")
    written = api.predict(trained / "run", inputs, tmp_path / "pred", quiet=True, skip_bad_inputs=True)
    assert [p.name for p in written] == ["a_good.nii.gz"]
    err = capsys.readouterr().err
    assert "--skip-bad-inputs: left out 2 input(s)" in err and "b_nan.nii.gz" in err and "c_rgb.png" in err


def test_cli_predict_skip_flag(trained: Path, tmp_path: Path) -> None:
    inputs = _inputs(trained, tmp_path / "in", "nan")
    args = ("predict", "--model", trained / "run", "--input", inputs, "--quiet")
    assert_clean_error(medssl(*args, "--out", tmp_path / "p1"), "b_nan.nii.gz", "--skip-bad-inputs")
    proc = medssl(*args, "--out", tmp_path / "p2", "--skip-bad-inputs")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "p2").glob("*.nii.gz")) == ["a_good.nii.gz"]


# ------------------------------------------------------------------------------------------------- segmentation


def _pictures(folder: Path) -> Path:
    """A grey picture and a 2D NIfTI image holding NaN (named last)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / "a.png")
    image = rng.normal(100, 20, (24, 24)).astype(np.float32)
    image[:4] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "b_nan.nii.gz")
    return folder


def test_segment_refuses_a_nan_image_before_writing(tmp_path: Path) -> None:
    inputs = _pictures(tmp_path / "in")
    with pytest.raises(MedsslError) as err:
        api.segment(inputs, tmp_path / "seg", method="kmeans", quiet=True)
    assert f"{inputs / 'b_nan.nii.gz'}: 96 NaN or infinite value(s) in the image" in str(err.value)
    assert not (tmp_path / "seg").exists()


def test_segment_can_skip_bad_inputs(tmp_path: Path) -> None:
    inputs = _pictures(tmp_path / "in")
    result = api.segment(inputs, tmp_path / "seg", method="kmeans", quiet=True, skip_bad_inputs=True)
    assert [p.name for p in result.maps] == ["a.png"]
    run = json.loads((tmp_path / "seg" / "run.json").read_text())
    assert list(run["skipped"]) == [str(inputs / "b_nan.nii.gz")]
