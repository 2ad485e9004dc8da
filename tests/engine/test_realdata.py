"""Smoke tests of the whole pipeline on the real datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medssl import api
from medssl.data.io import read_image
from medssl.data.layouts import discover
from tests.conftest import TINY, real_dataset


@pytest.mark.realdata
def test_hippocampus_finetune_predict_evaluate(tmp_path: Path) -> None:
    data = real_dataset("hippocampus")
    run = tmp_path / "run"
    result = api.finetune(data, run, max_steps=3, quiet=True, label_fraction=0.05, **{**TINY, "channels": None})
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == 40 and set(result.test_summary) == {"Anterior", "Posterior"}
    case = split["test"][0]
    written = api.predict(run, data / "imagesTr" / f"{case}.nii.gz", tmp_path / "pred", quiet=True)
    pred, meta = read_image(written[0])
    image, image_meta = read_image(data / "imagesTr" / f"{case}.nii.gz")
    assert pred.shape[1:] == image.shape[1:]
    np.testing.assert_allclose(meta.affine(), image_meta.affine(), atol=1e-4)


@pytest.mark.realdata
def test_unlabelled_dicom_study() -> None:
    index = discover(real_dataset("dicom-mr-study"))
    assert index.layout == "unlabelled" and not index.has_labels and len(index.cases) == 5
    image, meta = read_image(index.cases[0].images[0])
    assert image.ndim == 4 and meta.physical and meta.format == "dicom"
