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


# An oblique series (tilted about 10.8 degrees about the left-right axis, 6.5 mm slices) and an axis-aligned one;
# in both folders the files are not in slice order.
@pytest.mark.realdata
@pytest.mark.parametrize("series", ["11-T1post-18670", "11_HCropVolume"])
def test_dicom_series_geometry_matches_the_files(series: str) -> None:
    import pydicom

    folder = real_dataset("dicom-mr-study") / series
    slices = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    orientation = np.asarray(slices[0].ImageOrientationPatient, dtype=float)
    row, column = orientation[:3], orientation[3:]  # directions of increasing column and row index (LPS)
    normal = np.cross(row, column)
    slices.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in slices])
    steps = np.diff(positions @ normal)
    assert np.ptp(steps) < 1e-4 and steps[0] > 0  # evenly spaced slices
    between_rows, between_columns = (float(v) for v in slices[0].PixelSpacing)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])

    image, meta = read_image(folder)
    n = len(slices)
    # Array axes: (column index, row index, slice), as SimpleITK's (z, y, x) transposed.
    assert image.shape == (1, int(slices[0].Columns), int(slices[0].Rows), n)
    np.testing.assert_allclose(meta.spacing, (between_columns, between_rows, steps.mean()), rtol=1e-6)
    np.testing.assert_allclose(meta.origin, lps_to_ras @ positions[0], atol=1e-4)
    np.testing.assert_allclose(np.asarray(meta.direction), lps_to_ras @ np.stack([row, column, normal], 1), atol=1e-6)
    # The affine puts every slice where the file says, in RAS+.
    first_voxels = np.stack([np.zeros(n), np.zeros(n), np.arange(n), np.ones(n)])
    np.testing.assert_allclose((meta.affine() @ first_voxels)[:3].T, positions @ lps_to_ras, atol=1e-3)
    # Slice k of the array is the k-th file in position order, with voxel (i, j) = pixel (row j, column i).
    for k in range(n):
        np.testing.assert_array_equal(image[0, :, :, k], slices[k].pixel_array.T)
