"""NIfTI qform/sform codes (which space the affine maps to) survive a read and a write."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, write_image


def _affine() -> np.ndarray:
    a = np.diag([1.5, 1.0, 2.0, 1.0])
    a[:3, 3] = [-10.0, 5.0, 20.0]
    return a


def _codes(path: Path) -> tuple[int, int]:
    header = nib.load(str(path)).header
    return int(header["qform_code"]), int(header["sform_code"])


@pytest.mark.parametrize(("qform_code", "sform_code"), [(1, 2), (2, 2), (0, 2), (1, 4), (1, 0)])
def test_codes_are_kept_on_a_round_trip(tmp_path: Path, qform_code: int, sform_code: int) -> None:
    img = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), _affine())
    img.set_qform(_affine(), code=qform_code)
    img.set_sform(_affine(), code=sform_code)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    array, meta = read_image(tmp_path / "in.nii.gz")
    write_image(tmp_path / "out.nii.gz", array, meta)
    assert _codes(tmp_path / "out.nii.gz") == (qform_code, sform_code)
    back = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(back.affine, _affine())
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(img.dataobj))


def test_a_resampled_meta_keeps_the_codes(tmp_path: Path) -> None:
    """Predictions are written with the input's meta, possibly reshaped (``with_shape``)."""
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), _affine())
    img.set_sform(_affine(), code=2)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    _, meta = read_image(tmp_path / "in.nii.gz")
    write_image(tmp_path / "out.nii.gz", np.zeros((3, 4, 5), np.uint8), meta.with_shape((3, 4, 5)))
    assert _codes(tmp_path / "out.nii.gz")[1] == 2


def test_images_from_elsewhere_are_written_as_scanner_space(tmp_path: Path) -> None:
    """A meta that was not read from NIfTI (or whose file had no geometry) gets code 1 in both fields."""
    write_image(tmp_path / "a.nii.gz", np.zeros((3, 4, 5), np.uint8), ImageMeta.from_affine(_affine(), (3, 4, 5)))
    assert _codes(tmp_path / "a.nii.gz") == (1, 1)
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.uint8), _affine())
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "none.nii.gz"))
    array, meta = read_image(tmp_path / "none.nii.gz")
    write_image(tmp_path / "b.nii.gz", array, meta)
    assert _codes(tmp_path / "b.nii.gz") == (1, 1)
