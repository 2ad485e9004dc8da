"""Reading images (``read_image``) and label maps (``read_label``) as channel-first arrays with their geometry."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.geometry import ImageMeta
from medssl.data.io.formats import _NIFTI_CODES, _format_of, _lps_ras
from medssl.errors import MedsslError


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any library error raised while reading ``path`` into a ``MedsslError`` naming the file."""
    try:
        yield
    except MedsslError:
        raise
    except Exception as exc:  # nibabel, Pillow, SimpleITK and zlib raise many unrelated types
        raise MedsslError(f"cannot read {path}: corrupt, truncated or not a {what} file ({_detail(exc)})") from exc


def _detail(exc: Exception) -> str:
    """The informative line of a library error (SimpleITK puts a source location first)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln.split("ERROR:", 1)[-1].strip() for ln in lines if "ERROR:" in ln]
    return errors[-1] if errors else " ".join(lines) or type(exc).__name__


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise MedsslError(f"{path} does not exist")
    if path.is_file() and path.stat().st_size == 0:
        raise MedsslError(f"{path} is empty (0 bytes)")


def _as_returned_dtype(array: np.ndarray) -> np.ndarray:
    """Floats as float32, booleans as uint8, integers unchanged (native byte order)."""
    if array.dtype.kind == "f" or array.dtype.kind == "c":
        return np.ascontiguousarray(array.real if array.dtype.kind == "c" else array, dtype=np.float32)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def read_image(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read an image file or DICOM series folder.

    Args:
        path: NIfTI, NRRD, MetaImage, picture file, or a DICOM series folder.

    Returns:
        ``(array, meta)``: channel-first ``(C, *spatial)`` array (float32 for floating-point data, the file's
        integer dtype otherwise) and its geometry (RAS+ world).

    Raises:
        MedsslError: missing, empty, unsupported, unreadable or corrupt input (the message names the file).
    """
    p = Path(path)
    _check_exists(p)
    fmt = _format_of(p)
    readers: dict[str, Callable[[Path, str], tuple[np.ndarray, ImageMeta]]] = {
        "nifti": _read_nifti,
        "dicom": _read_dicom,
        "nrrd": _read_itk,
        "mha": _read_itk,
    }
    reader = readers.get(fmt, _read_picture)
    array, meta = reader(p, fmt)
    return _as_returned_dtype(array), meta


def _read_nifti(path: Path, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    import nibabel as nib

    with _reading(path, "NIfTI"):
        img: Any = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        # which space the affine maps to (1 scanner, 2 aligned, 3 Talairach, 4 MNI): written back as read
        codes = {key: str(int(img.header[key])) for key in _NIFTI_CODES}
    if data.ndim == 5 and data.shape[3] == 1:  # (x, y, z, t=1, c): NIfTI's vector-image layout
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        lin = np.eye(3)
        lin[:2, :2], lin[:2, 2] = affine[:2, :2], affine[:2, 3]
        array, meta = data[None], ImageMeta.from_affine(lin, data.shape, str(path), fmt)
    elif data.ndim == 3:
        array, meta = data[None], ImageMeta.from_affine(affine, data.shape, str(path), fmt)
    elif data.ndim == 4:
        array, meta = np.moveaxis(data, 3, 0), ImageMeta.from_affine(affine, data.shape[:3], str(path), fmt)
    else:
        raise MedsslError(f"{path}: unsupported NIfTI with {data.ndim} dimensions {data.shape}; expected 2D, 3D or 4D")
    meta.extra.update(codes)
    return array, meta


def _meta_from_sitk(img: Any, shape: tuple[int, ...], path: Path, fmt: str) -> ImageMeta:
    """RAS meta of the first ``len(shape)`` axes of a SimpleITK image."""
    n = len(shape)
    dim = img.GetDimension()
    spacing = np.asarray(img.GetSpacing(), dtype=float)[:n]
    origin = _lps_ras(np.asarray(img.GetOrigin(), dtype=float)[:n])
    direction = _lps_ras(np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)[:n, :n])
    return ImageMeta(
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in origin),
        tuple(tuple(float(v) for v in row) for row in direction),
        tuple(int(s) for s in shape),
        str(path),
        fmt,
        True,
    )


def _array_from_sitk(img: Any, path: Path, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    """Channel-first ``(C, x, y[, z])`` array and meta of a SimpleITK image."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    dim = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() > 1:  # (z, y, x, c) -> (c, x, y, z)
        arr = np.transpose(arr, (arr.ndim - 1, *range(arr.ndim - 2, -1, -1)))
        return arr, _meta_from_sitk(img, arr.shape[1:], path, fmt)
    arr = np.transpose(arr)  # (z, y, x) -> (x, y, z)
    if dim == 4:  # a 4D scalar image: its last axis holds the channels
        arr = np.moveaxis(arr, 3, 0)
        return arr, _meta_from_sitk(img, arr.shape[1:], path, fmt)
    if dim > 4:
        raise MedsslError(f"{path}: unsupported {dim}D image; expected 2D, 3D or 4D")
    return arr[None], _meta_from_sitk(img, arr.shape, path, fmt)


def _read_itk(path: Path, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    import SimpleITK as sitk

    with _reading(path, fmt.upper() if fmt == "nrrd" else "MetaImage"):
        img = sitk.ReadImage(str(path))
        return _array_from_sitk(img, path, fmt)


def _read_dicom(path: Path, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    import SimpleITK as sitk

    with _reading(path, "DICOM series"):
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise MedsslError(f"{path}: no readable DICOM series found in this folder")
        if len(series) > 1:
            raise MedsslError(
                f"{path} holds {len(series)} DICOM series; put each series in its own folder "
                f"(series UIDs: {', '.join(series[:3])}{', ...' if len(series) > 3 else ''})"
            )
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
        reader.MetaDataDictionaryArrayUpdateOn()
        img = reader.Execute()
        arr, meta = _array_from_sitk(img, path, fmt)
        extra = {"series_uid": series[0]}
        if reader.HasMetaDataKey(0, "0008|0060"):
            extra["modality"] = reader.GetMetaData(0, "0008|0060").strip()
        meta.extra.update(extra)
        return arr, meta


def _read_picture(path: Path, fmt: str) -> tuple[np.ndarray, ImageMeta]:
    from PIL import Image

    with _reading(path, fmt.upper()), Image.open(path) as im:
        frames = getattr(im, "n_frames", 1) if fmt == "tiff" else 1
        planes = []
        for index in range(frames):
            im.seek(index)
            im.load()
            planes.append(_pil_planes(im, path))
        mode = im.mode
    if any(p.shape != planes[0].shape for p in planes):
        raise MedsslError(f"{path}: multi-frame TIFF whose frames differ in size or channels")
    arr = planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)
    meta = ImageMeta.default(arr.shape[1:], str(path), fmt, physical=False)
    meta.extra["mode"] = mode
    return arr, meta


def _pil_planes(im: Any, path: Path) -> np.ndarray:
    """``(C, H, W)`` array of one Pillow frame; palette images give their index, alpha is dropped."""
    mode = im.mode
    if mode in ("L", "P", "I", "F") or mode.startswith("I;16"):
        return np.asarray(im)[None]
    if mode == "1":
        return np.asarray(im, dtype=np.uint8)[None]
    if mode in ("LA", "La", "PA"):
        return np.asarray(im)[None, :, :, 0]
    if mode in ("RGB", "RGBA", "RGBa", "RGBX"):
        return np.moveaxis(np.asarray(im)[:, :, :3], 2, 0)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.moveaxis(np.asarray(im.convert("RGB")), 2, 0)
    raise MedsslError(f"{path}: unsupported picture mode {mode!r}")


def read_label(path: str | Path) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map: a spatial int64 array without channel axis.

    Args:
        path: any format ``read_image`` reads.

    Returns:
        ``(labels, meta)`` with ``labels.shape == meta.shape`` and dtype int64. Values are kept as stored
        (a 0/255 mask stays 0/255).

    Raises:
        MedsslError: what ``read_image`` raises, a multi-channel mask whose channels differ, or non-integer
            (or non-finite) values.
    """
    arr, meta = read_image(path)
    if arr.shape[0] > 1 and not all(np.array_equal(arr[0], arr[c]) for c in range(1, arr.shape[0])):
        raise MedsslError(
            f"{path}: a label map must have one channel, this one has {arr.shape[0]} channels that differ "
            "(a colour-coded mask? convert it to one integer value per structure)"
        )
    lab = arr[0]
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)):
            raise MedsslError(f"{path}: label map holds NaN or infinite values")
        if not np.array_equal(lab, np.round(lab)):
            raise MedsslError(
                f"{path}: label map holds non-integer values (e.g. {_first_fraction(lab)}); expected labels"
            )
    return lab.astype(np.int64), meta


def _first_fraction(values: np.ndarray) -> float:
    frac = values[values != np.round(values)]
    return float(frac.flat[0]) if frac.size else float("nan")
