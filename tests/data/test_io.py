"""Reading and writing every supported format: arrays, geometry (checked against SimpleITK/pydicom) and errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medssl.data.geometry import ImageMeta
from medssl.data.io import (
    IMAGE_SUFFIXES,
    image_suffix,
    is_dicom_dir,
    is_image_path,
    read_image,
    read_label,
    stem,
    write_image,
)
from medssl.errors import MedsslError


def _rotation(ax: float, az: float) -> np.ndarray:
    """Rotation about x by ``ax`` then about z by ``az`` (radians)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def _oblique_meta(shape: tuple[int, int, int] = (5, 6, 7)) -> ImageMeta:
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.2, 0.5) @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [-10.5, 20.25, 5.0]
    return ImageMeta.from_affine(affine, shape)


def _assert_same_geometry(a: ImageMeta, b: ImageMeta, atol: float = 1e-4) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


def _volume(shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# ------------------------------------------------------------------------------------------------ suffixes


def test_suffix_helpers(tmp_path: Path) -> None:
    assert list(IMAGE_SUFFIXES) == sorted(IMAGE_SUFFIXES, key=len, reverse=True)
    assert image_suffix("a/case.nii.gz") == ".nii.gz"
    assert image_suffix("A.PNG") == ".png"
    assert image_suffix("x.tar.gz") == ""
    assert stem("dir/case.v1.nii.gz") == "case.v1"
    assert stem("IMG.JPEG") == "IMG"
    assert is_image_path("x.mha") and not is_image_path("x.txt") and not is_image_path("x.dcm")
    series = tmp_path / "series1"
    series.mkdir()
    (series / "0001.dcm").write_bytes(b"x")
    assert is_dicom_dir(series) and is_image_path(series)
    assert image_suffix(series) == "" and stem(series) == "series1"
    assert not is_image_path(tmp_path / "nothing_here")


# -------------------------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_with_rotation(tmp_path: Path, suffix: str) -> None:
    meta = _oblique_meta()
    data = _volume((1, *meta.shape))
    path = tmp_path / f"img{suffix}"
    write_image(path, data, meta)
    arr, back = read_image(path)
    assert arr.dtype == np.float32 and arr.shape == data.shape
    np.testing.assert_array_equal(arr, data)
    _assert_same_geometry(back, meta)
    assert back.format == "nifti" and back.physical and back.source == str(path)


def test_nifti_multichannel_and_label_dtype(tmp_path: Path) -> None:
    meta = _oblique_meta((4, 3, 2))
    data = _volume((2, 4, 3, 2), "float64")
    write_image(tmp_path / "mc.nii.gz", data, meta)
    arr, _ = read_image(tmp_path / "mc.nii.gz")
    assert arr.shape == (2, 4, 3, 2) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, data, rtol=1e-6)

    labels = np.random.default_rng(1).integers(0, 3, size=(4, 3, 2)).astype(np.int64)
    write_image(tmp_path / "lab.nii.gz", labels, meta)
    assert nib.load(str(tmp_path / "lab.nii.gz")).get_data_dtype() == np.uint8  # stored compactly
    lab, _ = read_label(tmp_path / "lab.nii.gz")
    assert lab.dtype == np.int64
    np.testing.assert_array_equal(lab, labels)


def test_nifti_2d_round_trip(tmp_path: Path) -> None:
    meta = ImageMeta((0.5, 0.7), (3.0, -4.0), ((1.0, 0.0), (0.0, 1.0)), (6, 5))
    data = np.arange(30, dtype=np.int16).reshape(6, 5) - 7
    write_image(tmp_path / "slice.nii.gz", data, meta)
    arr, back = read_image(tmp_path / "slice.nii.gz")
    assert arr.shape == (1, 6, 5) and arr.dtype == np.int16
    np.testing.assert_array_equal(arr[0], data)
    _assert_same_geometry(back, meta)


def test_nifti_written_by_nibabel_matches_its_affine(tmp_path: Path) -> None:
    meta = _oblique_meta()
    path = tmp_path / "nib.nii.gz"
    nib.save(nib.Nifti1Image(_volume(meta.shape), meta.affine()), str(path))
    _, back = read_image(path)
    np.testing.assert_allclose(back.affine(), nib.load(str(path)).affine, atol=1e-5)


def test_our_nifti_gives_same_world_positions_in_simpleitk(tmp_path: Path) -> None:
    """LPS/RAS consistency checked against an independent library: SimpleITK reports LPS world points."""
    meta = _oblique_meta()
    data = _volume((1, *meta.shape))
    path = tmp_path / "world.nii.gz"
    write_image(path, data, meta)
    img = sitk.ReadImage(str(path))
    for index in [(0, 0, 0), (4, 1, 6), (2, 5, 3)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(index))
        ras = lps * [-1, -1, 1]
        np.testing.assert_allclose(ras, (meta.affine() @ [*index, 1])[:3], atol=1e-4)
        assert img.GetPixel(*index) == pytest.approx(float(data[(0, *index)]))


def test_nan_is_not_a_read_error(tmp_path: Path) -> None:
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    write_image(tmp_path / "nan.nii.gz", data, ImageMeta.default((3, 3, 3), physical=True))
    arr, _ = read_image(tmp_path / "nan.nii.gz")
    assert np.isnan(arr[0, 1, 1, 1])


# --------------------------------------------------------------------------------------- SimpleITK formats


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip(tmp_path: Path, suffix: str) -> None:
    meta = _oblique_meta()
    data = _volume((1, *meta.shape))
    write_image(tmp_path / f"v{suffix}", data, meta)
    arr, back = read_image(tmp_path / f"v{suffix}")
    np.testing.assert_array_equal(arr, data)
    _assert_same_geometry(back, meta, atol=1e-6)
    assert back.format == {".nrrd": "nrrd", ".mha": "mha"}[suffix]


def test_itk_2d_colour_round_trip(tmp_path: Path) -> None:
    data = _picture((3, 5, 4))
    meta = ImageMeta((0.5, 0.25), (1.0, 2.0), ((0.0, 1.0), (1.0, 0.0)), (5, 4))
    write_image(tmp_path / "c.mha", data, meta)
    arr, back = read_image(tmp_path / "c.mha")
    np.testing.assert_array_equal(arr, data)
    _assert_same_geometry(back, meta, atol=1e-9)


def test_itk_vector_round_trip(tmp_path: Path) -> None:
    meta = _oblique_meta((4, 3, 2))
    data = np.random.default_rng(2).integers(0, 1000, size=(3, 4, 3, 2)).astype(np.uint16)
    write_image(tmp_path / "rgb.mha", data, meta)
    arr, back = read_image(tmp_path / "rgb.mha")
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, data)
    _assert_same_geometry(back, meta, atol=1e-6)


def test_mha_written_by_simpleitk_reads_in_ras(tmp_path: Path) -> None:
    vol = _volume((7, 6, 5))  # SimpleITK order (z, y, x)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.9, 1.1, 2.0))
    img.SetOrigin((12.0, -7.5, 30.0))
    img.SetDirection(tuple(_rotation(-0.3, 0.4).ravel()))
    sitk.WriteImage(img, str(tmp_path / "itk.mha"))
    arr, meta = read_image(tmp_path / "itk.mha")
    assert arr.shape == (1, 5, 6, 7)
    for index in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        ras = np.array(img.TransformIndexToPhysicalPoint(index)) * [-1, -1, 1]
        np.testing.assert_allclose((meta.affine() @ [*index, 1])[:3], ras, atol=1e-6)
        assert arr[(0, *index)] == img.GetPixel(*index)


def _write_dicom_series(
    folder: Path, vol_zyx: np.ndarray, spacing: tuple[float, ...], origin_lps: tuple[float, ...]
) -> sitk.Image:
    """Write one DICOM file per slice with SimpleITK (oblique orientation), as a scanner would."""
    img = sitk.GetImageFromArray(vol_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin_lps)
    img.SetDirection(tuple(_rotation(0.3, -0.2).ravel()))
    d = img.GetDirection()
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid, study_uid = "1.2.826.0.1.3680043.2.1125.1.1", "1.2.826.0.1.3680043.2.1125.1.2"
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{k:04d}.dcm"))
        writer.Execute(s)
    return img


def test_dicom_series_folder(tmp_path: Path) -> None:
    import pydicom

    vol = np.random.default_rng(3).integers(0, 2000, size=(4, 6, 5)).astype(np.int16)
    img = _write_dicom_series(tmp_path / "series", vol, (0.7, 0.8, 3.0), (-20.0, 15.0, 40.0))
    arr, meta = read_image(tmp_path / "series")
    assert meta.format == "dicom" and meta.extra["modality"] == "MR"
    assert arr.shape == (1, 5, 6, 4)
    np.testing.assert_array_equal(arr[0], np.transpose(vol))
    np.testing.assert_allclose(meta.spacing, (0.7, 0.8, 3.0), atol=1e-4)
    # Independent check of the world position of slice 2's first voxel against the file's own DICOM tags.
    ds = pydicom.dcmread(tmp_path / "series" / "0002.dcm")
    ras = np.array([float(v) for v in ds.ImagePositionPatient]) * [-1, -1, 1]
    np.testing.assert_allclose((meta.affine() @ [0, 0, 2, 1])[:3], ras, atol=1e-4)
    ras_itk = np.array(img.TransformIndexToPhysicalPoint((3, 2, 1))) * [-1, -1, 1]
    np.testing.assert_allclose((meta.affine() @ [3, 2, 1, 1])[:3], ras_itk, atol=1e-4)


def test_dicom_errors(tmp_path: Path) -> None:
    single = tmp_path / "one.dcm"
    single.write_bytes(b"not dicom")
    with pytest.raises(MedsslError, match=r"one\.dcm"):
        read_image(single)
    folder = tmp_path / "broken_series"
    folder.mkdir()
    (folder / "0001.dcm").write_bytes(b"garbage" * 50)
    with pytest.raises(MedsslError, match="broken_series"):
        read_image(folder)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(MedsslError, match="plain"):
        read_image(plain)


# ------------------------------------------------------------------------------------------------ pictures


def _picture(shape: tuple[int, ...], dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    hi = 65535 if dtype == "uint16" else 255
    return np.random.default_rng(seed).integers(0, hi + 1, size=shape).astype(dtype)


@pytest.mark.parametrize(
    ("suffix", "shape", "dtype"),
    [
        (".png", (1, 9, 7), "uint8"),
        (".png", (3, 9, 7), "uint8"),
        (".png", (1, 9, 7), "uint16"),
        (".bmp", (1, 9, 7), "uint8"),
        (".bmp", (3, 9, 7), "uint8"),
        (".tif", (1, 9, 7), "uint16"),
        (".tiff", (3, 9, 7), "uint8"),
    ],
)
def test_picture_round_trip(tmp_path: Path, suffix: str, shape: tuple[int, ...], dtype: str) -> None:
    data = _picture(shape, dtype)
    path = tmp_path / f"pic{suffix}"
    write_image(path, data, ImageMeta.default(shape[1:]))
    arr, meta = read_image(path)
    assert arr.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(arr, data)
    assert meta == ImageMeta.default((9, 7), str(path), meta.format, physical=False)
    assert not meta.physical and meta.shape == (9, 7)


def test_png_rows_are_the_first_axis(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 10, 20]], np.uint8)).save(tmp_path / "row.png")  # 1 row, 3 columns
    arr, meta = read_image(tmp_path / "row.png")
    assert arr.shape == (1, 1, 3) and meta.shape == (1, 3)
    assert arr[0, 0].tolist() == [0, 10, 20]


def test_tiff_float_and_multiframe(tmp_path: Path) -> None:
    data = _volume((1, 5, 4))
    write_image(tmp_path / "f.tif", data, ImageMeta.default((5, 4)))
    arr, _ = read_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(arr, data)
    frames = [Image.fromarray(_picture((5, 4), seed=s)) for s in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    stack, meta = read_image(tmp_path / "stack.tif")
    assert stack.shape == (1, 5, 4, 3) and meta.shape == (5, 4, 3)
    np.testing.assert_array_equal(stack[0, :, :, 2], np.asarray(frames[2]))


def test_jpeg_is_approximately_preserved(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:32, 0:40]
    data = np.stack([(xx * 6) % 256, (yy * 7) % 256, np.full_like(xx, 128)]).astype(np.uint8)
    write_image(tmp_path / "smooth.jpg", data, ImageMeta.default((32, 40)))
    arr, meta = read_image(tmp_path / "smooth.jpg")
    assert arr.shape == data.shape and arr.dtype == np.uint8 and meta.format == "jpeg"
    assert np.abs(arr.astype(int) - data).mean() < 6


def test_gif_palette_gives_indices(tmp_path: Path) -> None:
    """Like DRIVE's 2nd_manual: indices 0/1 whose palette colours are near-black and near-white."""
    idx = np.zeros((6, 5), np.uint8)
    idx[2:4, 1:3] = 1
    im = Image.frombytes("P", (5, 6), idx.tobytes())
    im.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
    im.save(tmp_path / "vessels.gif")
    arr, meta = read_image(tmp_path / "vessels.gif")
    assert meta.format == "gif" and arr.shape == (1, 6, 5)
    np.testing.assert_array_equal(arr[0], idx)
    lab, _ = read_label(tmp_path / "vessels.gif")
    assert set(np.unique(lab)) == {0, 1}


def test_ppm_pgm_rgba_and_bilevel(tmp_path: Path) -> None:
    rgb = _picture((4, 3, 3))
    Image.fromarray(rgb).save(tmp_path / "c.ppm")
    arr, _ = read_image(tmp_path / "c.ppm")
    np.testing.assert_array_equal(arr, np.moveaxis(rgb, 2, 0))
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.pgm")
    assert read_image(tmp_path / "g.pgm")[0].shape == (1, 4, 3)
    rgba = _picture((4, 3, 4))
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    arr, _ = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(arr, np.moveaxis(rgba[:, :, :3], 2, 0))
    Image.fromarray(rgb[:, :, 0] > 127).save(tmp_path / "bits.png")
    arr, _ = read_image(tmp_path / "bits.png")
    np.testing.assert_array_equal(arr[0], (rgb[:, :, 0] > 127).astype(np.uint8))


# --------------------------------------------------------------------------------------------- read_label


def test_read_label_channels_and_values(tmp_path: Path) -> None:
    grey = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb_equal.png")
    lab, meta = read_label(tmp_path / "rgb_equal.png")
    assert lab.dtype == np.int64 and lab.shape == meta.shape == (2, 2)
    np.testing.assert_array_equal(lab, grey)  # values kept as stored
    Image.fromarray(np.stack([grey, grey[::-1], grey], axis=-1)).save(tmp_path / "colour.png")
    with pytest.raises(MedsslError, match=r"colour\.png"):
        read_label(tmp_path / "colour.png")
    write_image(tmp_path / "soft.nii.gz", np.full((2, 2, 2), 0.5, np.float32), ImageMeta.default((2, 2, 2)))
    with pytest.raises(MedsslError, match=r"soft\.nii\.gz.*non-integer"):
        read_label(tmp_path / "soft.nii.gz")


# ------------------------------------------------------------------------------------------------- errors


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match=r"missing\.nii\.gz.*does not exist"):
        read_image(tmp_path / "missing.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(MedsslError, match=r"empty\.nii\.gz.*empty"):
        read_image(tmp_path / "empty.nii.gz")
    (tmp_path / "notes.nii.gz").write_text("this is a text file, not an image\n")
    with pytest.raises(MedsslError, match=r"notes\.nii\.gz"):
        read_image(tmp_path / "notes.nii.gz")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(MedsslError, match=r"notes\.png"):
        read_image(tmp_path / "notes.png")
    (tmp_path / "notes.nrrd").write_text("hello")
    with pytest.raises(MedsslError, match=r"notes\.nrrd"):
        read_image(tmp_path / "notes.nrrd")
    (tmp_path / "data.xyz").write_bytes(b"1234")
    with pytest.raises(MedsslError, match=r"data\.xyz.*unsupported"):
        read_image(tmp_path / "data.xyz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut{suffix}"
    write_image(path, _volume((20, 20, 20)), ImageMeta.default((20, 20, 20), physical=True))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MedsslError, match=f"cut{suffix}".replace(".", r"\.")):
        read_image(path)
    path.write_bytes(raw[:200])  # not even a whole header
    with pytest.raises(MedsslError, match="cut"):
        read_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_picture((64, 64))).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MedsslError, match=r"cut\.png"):
        read_image(path)


# ------------------------------------------------------------------------------------------------ writing


def test_write_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "mask.png"
    meta = ImageMeta.default((4, 4))
    write_image(target, np.ones((4, 4), np.int64), meta)
    assert read_label(target)[0].sum() == 16
    with pytest.raises(MedsslError, match=r"mask\.png"):
        write_image(target, np.full((4, 4), 0.5), meta)  # float data cannot go to PNG
    assert read_label(target)[0].sum() == 16  # the previous file is intact
    assert [p.name for p in target.parent.iterdir()] == ["mask.png"]  # no temporary file left


def test_write_errors(tmp_path: Path) -> None:
    meta3 = ImageMeta.default((2, 2, 2), physical=True)
    with pytest.raises(MedsslError, match=r"out\.xyz"):
        write_image(tmp_path / "out.xyz", np.zeros((2, 2, 2)), meta3)
    with pytest.raises(MedsslError, match="3D"):
        write_image(tmp_path / "vol.png", np.zeros((2, 2, 2), np.uint8), meta3)
    with pytest.raises(MedsslError, match=r"bad\.nii\.gz"):
        write_image(tmp_path / "bad.nii.gz", np.zeros((2, 2)), meta3)
    with pytest.raises(MedsslError, match=r"rgb\.nii\.gz.*several channels"):
        write_image(tmp_path / "rgb.nii.gz", np.zeros((3, 2, 2), np.uint8), ImageMeta.default((2, 2)))
    with pytest.raises(MedsslError, match="PNG"):
        write_image(tmp_path / "neg.png", np.full((2, 2), -1), ImageMeta.default((2, 2)))
