"""Reading and writing medical images with their geometry.

Every reader returns ``(array, ImageMeta)`` following the conventions of ``medssl.data.geometry``: a
channel-first array ``(C, *spatial)`` whose spatial axes are in the file's index order ``(i, j[, k])``, and a
meta whose world coordinates are RAS+ millimetres.

Formats:
- NIfTI (``.nii``, ``.nii.gz``) with nibabel. A 3D volume gives ``C=1``; a 4D ``(x, y, z, c)`` volume gives
  ``C=c``; a 2D NIfTI stays 2D. Scaled data (``scl_slope``) is returned as float32.
- A DICOM series folder, NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) with SimpleITK. Its
  ``(z, y, x)`` arrays are transposed to ``(x, y, z)``; its LPS world is converted to RAS (the first two world
  coordinates of the origin and rows 0 and 1 of the direction are negated) on read and back on write.
- 2D pictures (PNG, JPEG, BMP, TIFF, GIF, PPM/PGM) with Pillow. The spatial axes are (rows, columns) and the
  meta is ``ImageMeta.default(shape, physical=False)``. Grey (``L``) gives ``C=1``, 1-bit (``1``) gives 0/1,
  RGB gives ``C=3`` (alpha dropped), 16-bit PNG stays uint16 and palette images (``P``, e.g. GIF) give the
  palette INDEX, not a grey conversion. A multi-frame TIFF is read as a 3D stack ``(C, H, W, frames)``.

Floating-point data is returned as float32; integer data keeps the file's dtype.

Public API:
- ``read_image(path) -> (array, ImageMeta)``.
- ``read_label(path) -> (array, ImageMeta)``: a spatial int64 array (no channel axis). An RGB mask with equal
  channels is reduced to one channel; unequal channels or non-integer values raise ``MedsslError``.
- ``write_image(path, array, meta)``: writes ``(C, *spatial)`` or ``(*spatial)`` with ``meta``'s geometry; the
  format follows the suffix (``.nii``/``.nii.gz``, ``.nrrd``, ``.mha``, ``.png``, ``.tif``/``.tiff``,
  ``.bmp``, ``.jpg``/``.jpeg``). Integer arrays are written as integers, uint8 where they fit. PNG, BMP and
  JPEG take only uint8 (PNG also uint16) data. The write is atomic (a temporary file with the same suffix in
  the same folder, then ``os.replace``) and parent folders are created. A 2D image with several channels is
  refused for NIfTI (it would read back as a 3D volume); ``.mha``/``.nrrd`` keep it 2D.
- ``image_suffix(path)``: the recognised suffix in lower case (``".nii.gz"``, ``".png"``, ...) or ``""``
  (a DICOM folder, or an unsupported name).
- ``stem(path)``: the file name without that suffix (a folder: its name).
- ``is_image_path(path)``: whether the suffix is supported or the path is a DICOM series folder.
- ``is_dicom_dir(path)``: whether the path is a folder holding DICOM files.
- ``IMAGE_SUFFIXES``: the supported suffixes, longest first.

Every failure a user can cause (a missing, empty, corrupt, truncated or mis-named file, an unsupported suffix)
raises ``MedsslError`` with a message naming the file; library exceptions never escape. NaN values are not an
error here (``medssl.data.check`` reports them).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.geometry import ImageMeta
from medssl.errors import MedsslError

_NIFTI = (".nii.gz", ".nii")
_NIFTI_CODES = ("qform_code", "sform_code")  # header fields kept from reading to writing
_ITK = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
_PIL = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
    ".ppm": "ppm",
    ".pgm": "pgm",
}
IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted({*_NIFTI, *_ITK, *_PIL}, key=lambda s: (-len(s), s)))
WRITABLE_SUFFIXES: tuple[str, ...] = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".mha",
    ".png",
    ".tif",
    ".tiff",
    ".bmp",
    ".jpg",
    ".jpeg",
)

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Only this many suffix-less files are opened to look for the DICOM magic, so scanning large folders stays cheap.
_MAGIC_PROBES = 3


# ----------------------------------------------------------------------------------------------- path helpers


def image_suffix(path: str | Path) -> str:
    """The recognised image suffix of ``path`` in lower case, or ``""`` (DICOM folder, unsupported name).

    Args:
        path: a file or folder path.

    Returns:
        The longest matching entry of ``IMAGE_SUFFIXES``, e.g. ``".nii.gz"``, or ``""``.
    """
    p = Path(path)
    if p.is_dir():
        return ""
    name = p.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s) and len(name) > len(s)), "")


def stem(path: str | Path) -> str:
    """File name without its recognised image suffix (a folder, e.g. a DICOM series: its name).

    Args:
        path: a file or folder path.

    Returns:
        ``"case_001"`` for ``".../case_001.nii.gz"``; ``Path.stem`` for an unrecognised file suffix.
    """
    p = Path(path)
    if p.is_dir():
        return p.name
    suffix = image_suffix(p)
    return p.name[: len(p.name) - len(suffix)] if suffix else p.stem


def is_dicom_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding DICOM files (``.dcm``/``.ima``, or suffix-less with the DICM magic).

    Args:
        path: a folder path.

    Returns:
        True for a DICOM series folder.
    """
    p = Path(path)
    if not p.is_dir():
        return False
    probes = 0
    with os.scandir(p) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file() or entry.name.upper() == "DICOMDIR":
                continue
            low = entry.name.lower()
            if low.endswith(_DICOM_SUFFIXES):
                return True
            if "." not in low and probes < _MAGIC_PROBES:
                probes += 1
                if _has_dicom_magic(Path(entry.path)):
                    return True
    return False


def _has_dicom_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` has a supported image suffix or is a DICOM series folder.

    Args:
        path: a file or folder path (a file need not exist).

    Returns:
        True when ``read_image`` can be tried on it.
    """
    p = Path(path)
    if p.is_dir():
        return is_dicom_dir(p)
    return image_suffix(p) != ""


def _format_of(path: Path) -> str:
    """Short format name for ``path``, raising ``MedsslError`` for an unsupported one."""
    if path.is_dir():
        if is_dicom_dir(path):
            return "dicom"
        raise MedsslError(f"{path} is a folder without DICOM files; expected an image file or a DICOM series folder")
    suffix = image_suffix(path)
    if suffix in _NIFTI:
        return "nifti"
    if suffix in _ITK:
        return _ITK[suffix]
    if suffix in _PIL:
        return _PIL[suffix]
    if path.name.lower().endswith(_DICOM_SUFFIXES):
        raise MedsslError(f"{path} is a single DICOM file; pass the folder holding the whole series instead")
    raise MedsslError(f"{path}: unsupported image format (supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folder)")


# ----------------------------------------------------------------------------------------------------- reading


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


def _lps_ras(matrix: np.ndarray) -> np.ndarray:
    """Negate the first two world rows (LPS <-> RAS; the conversion is its own inverse)."""
    out = np.array(matrix, dtype=float, copy=True)
    out[: min(2, out.shape[0])] *= -1.0
    return out + 0.0  # turns -0.0 into 0.0


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


# ----------------------------------------------------------------------------------------------------- writing


def write_image(path: str | Path, array: Any, meta: ImageMeta) -> None:
    """Write an image or label map with ``meta``'s geometry; the format follows the suffix.

    Args:
        path: destination, one of ``WRITABLE_SUFFIXES``; parent folders are created.
        array: ``(C, *spatial)`` or ``(*spatial)`` with ``len(spatial) == meta.ndim`` (numpy or CPU tensor).
        meta: geometry to store (ignored for pictures, which have none).

    Raises:
        MedsslError: unsupported suffix, array/meta dimension mismatch, or a dtype the format cannot hold.
    """
    p = Path(path)
    suffix = next((s for s in WRITABLE_SUFFIXES if p.name.lower().endswith(s)), "")
    if not suffix:
        raise MedsslError(f"{p}: cannot write this format (writable: {', '.join(WRITABLE_SUFFIXES)})")
    data = _channel_first(np.asarray(array), meta, p)
    if suffix in _NIFTI:
        writer: Callable[[Path, np.ndarray, ImageMeta], None] = _write_nifti
    elif suffix in _ITK:
        writer = _write_itk
    else:
        writer = _write_picture
    p.parent.mkdir(parents=True, exist_ok=True)
    # A fresh hidden name rather than mkstemp, so the file gets the usual permissions (mkstemp makes it 0600).
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:12]}{suffix}"
    try:
        writer(tmp, data, meta)
        os.replace(tmp, p)
    except Exception as exc:  # our refusals and library failures alike are reported against the destination
        raise MedsslError(f"cannot write {p}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _channel_first(array: np.ndarray, meta: ImageMeta, path: Path) -> np.ndarray:
    if array.ndim == meta.ndim:
        return array[None]
    if array.ndim == meta.ndim + 1:
        return array
    raise MedsslError(
        f"cannot write {path}: array of shape {array.shape} does not match the {meta.ndim}D geometry "
        "(expected (C, *spatial) or (*spatial))"
    )


def _storage_dtype(data: np.ndarray) -> np.ndarray:
    """Booleans and small non-negative integers as uint8, 64-bit integers narrowed when lossless, floats 32-bit."""
    if data.dtype.kind == "b":
        return data.astype(np.uint8)
    if data.dtype.kind in "iu":
        if data.size == 0:
            return data.astype(np.uint8)
        lo, hi = int(data.min()), int(data.max())
        # uint8 whenever it fits; otherwise keep 8/16/32-bit dtypes and narrow only 64-bit ones
        candidates = (np.uint8, np.int16, np.uint16, np.int32) if data.dtype.itemsize == 8 else (np.uint8,)
        for dtype in candidates:
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return data.astype(dtype)
        return data
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    raise MedsslError(f"arrays of dtype {data.dtype} cannot be stored")


def _write_nifti(tmp: Path, data: np.ndarray, meta: ImageMeta) -> None:
    import nibabel as nib

    if meta.ndim == 2 and data.shape[0] > 1:  # (x, y, c) would read back as a 3D volume
        raise MedsslError("a 2D image with several channels cannot be stored as NIfTI; use .mha, .nrrd or .tif")
    data = _storage_dtype(data)
    vol = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    affine = np.eye(4)
    a = meta.affine()
    n = meta.ndim
    affine[:n, :n], affine[:n, 3] = a[:n, :n], a[:n, n]
    img = nib.Nifti1Image(vol, affine)
    img.header.set_data_dtype(vol.dtype)
    # Same rigid transform in qform and sform, so every reader (ITK prefers qform) sees one geometry; the codes
    # (which space it maps to) are the input's, 1 (scanner) for images that came from elsewhere.
    qform_code, sform_code = _nifti_codes(meta)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(tmp))


def _nifti_codes(meta: ImageMeta) -> tuple[int, int]:
    """``(qform_code, sform_code)`` to write: those ``meta`` was read with where valid and not both 0 (a file
    without geometry; ours has one), else 1 (scanner)."""
    codes = []
    for key in _NIFTI_CODES:
        text = meta.extra.get(key, "")
        codes.append(int(text) if text.isdigit() and int(text) <= 4 else 1)
    return (codes[0], codes[1]) if any(codes) else (1, 1)


def _write_itk(tmp: Path, data: np.ndarray, meta: ImageMeta) -> None:
    import SimpleITK as sitk

    data = _storage_dtype(data)
    n = meta.ndim
    if data.shape[0] == 1:
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data[0])), isVector=False)
    else:  # (c, x, y, z) -> (z, y, x, c)
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (*range(n, 0, -1), 0))), isVector=True)
    img.SetSpacing([float(s) for s in meta.spacing])
    img.SetOrigin([float(o) for o in _lps_ras(np.asarray(meta.origin, dtype=float))])
    img.SetDirection([float(v) for v in _lps_ras(np.asarray(meta.direction, dtype=float)).ravel()])
    sitk.WriteImage(img, str(tmp), True)


def _write_picture(tmp: Path, data: np.ndarray, meta: ImageMeta) -> None:
    from PIL import Image

    if meta.ndim != 2:
        raise MedsslError(f"a {meta.ndim}D image cannot be stored as a picture; use .nii.gz, .nrrd or .mha")
    fmt = _PIL[image_suffix(tmp)]
    data = _storage_dtype(data)
    channels = data.shape[0]
    if channels not in (1, 3, 4):
        raise MedsslError(f"{channels} channels cannot be stored as a {fmt.upper()} picture (1, 3 or 4 channels)")
    allowed = {"png": ("uint8", "uint16"), "tiff": ("uint8", "uint16", "int32", "float32")}.get(fmt, ("uint8",))
    if data.dtype.name not in allowed or (channels > 1 and data.dtype != np.uint8):
        raise MedsslError(
            f"{data.dtype} data with {channels} channel(s) cannot be stored as {fmt.upper()} "
            f"(allowed: {', '.join(allowed)}; colour only as uint8); use .tif or .nii.gz, or convert the array"
        )
    if channels == 4 and fmt in ("jpeg", "bmp"):
        raise MedsslError(f"an alpha channel cannot be stored as {fmt.upper()}")
    pil = Image.fromarray(data[0] if channels == 1 else np.ascontiguousarray(np.moveaxis(data, 0, -1)))
    options: dict[str, Any] = {"quality": 95} if fmt == "jpeg" else {}
    pil.save(tmp, format=fmt.upper(), **options)
