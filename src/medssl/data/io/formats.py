"""The supported image formats: suffixes, file stems, DICOM series folders, and ITK's LPS world."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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


def _lps_ras(matrix: np.ndarray) -> np.ndarray:
    """Negate the first two world rows (LPS <-> RAS; the conversion is its own inverse)."""
    out = np.array(matrix, dtype=float, copy=True)
    out[: min(2, out.shape[0])] *= -1.0
    return out + 0.0  # turns -0.0 into 0.0
