"""The pure parts of ``benchmarks/peers_dice.py``: the paired per-case difference to the baseline and the labels
of a Decathlon folder."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def pd(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("peers_dice")


def test_the_difference_is_paired_per_case_over_the_mean_of_structures(pd: ModuleType) -> None:
    base = {"a": {"lung": 0.9, "heart": 0.7}, "b": {"lung": 0.5, "heart": 0.5}}
    # Case a loses 0.2 on the heart (its mean: -0.1), case b gains 0.3 on both (+0.3): paired mean +0.1.
    other = {"a": {"lung": 0.9, "heart": 0.5}, "b": {"lung": 0.8, "heart": 0.8}, "c": {"lung": 1.0, "heart": 1.0}}
    rows = pd.summarize({"medssl-fp32": base, "monai-fp32": other}, {"medssl-fp32": 3.0, "monai-fp32": 2.0})
    assert rows["medssl-fp32"]["mean_dice"] == pytest.approx(0.65) and "diff_vs_baseline" not in rows["medssl-fp32"]
    assert rows["medssl-fp32"]["dice"] == pytest.approx({"lung": 0.7, "heart": 0.6})
    monai = rows["monai-fp32"]
    assert monai["diff_vs_baseline"] == pytest.approx(0.1)  # case c has no pair and is left out
    assert monai["wins"] == 0.5 and monai["cases"] == 3 and monai["train_seconds"] == 2.0
    same = pd.summarize({"medssl-fp32": base, "medssl-bf16": base}, {"medssl-fp32": 1.0, "medssl-bf16": 1.0})
    assert same["medssl-bf16"]["diff_vs_baseline"] == 0.0 and same["medssl-bf16"]["p_wilcoxon"] == 1.0


def test_labels_come_from_the_decathlon_json_without_background(pd: ModuleType, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    for folder in ("images", "masks/heart"):
        (masks / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / folder / "a.png")
    assert pd.labels_of(masks) is None  # a folder of masks: the sub-folders name the structures
    msd = tmp_path / "msd"
    for folder in ("imagesTr", "labelsTr"):
        (msd / folder).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), msd / folder / "a.nii.gz")
    (msd / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "Anterior": 1, "Post": 2}}))
    assert pd.labels_of(msd) == {1: "Anterior", 2: "Post"}  # nnU-Net's name -> value form
