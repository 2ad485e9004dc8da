"""Writing images and label maps (``write_image``) atomically, with their geometry, in the suffix's format."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.geometry import ImageMeta
from medssl.data.io.formats import _ITK, _NIFTI, _NIFTI_CODES, _PIL, WRITABLE_SUFFIXES, _lps_ras, image_suffix
from medssl.errors import MedsslError


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
