"""The unlabelled layout: a folder of images or volumes (or DICOM series folders), one level deep."""

from __future__ import annotations

from pathlib import Path

from medssl.data.io import is_dicom_dir
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _by_stem, _image_entries, _sorted_cases, _visible


def _unlabelled_entries(root: Path) -> list[Path]:
    """Images in ``root`` (or only its ``images/``) and one level deep (a sub-folder's ``images/`` if present)."""
    if (root / "images").is_dir():
        return _image_entries(root / "images")
    found = _image_entries(root)
    for sub in _visible(root):
        if sub.is_dir() and not is_dicom_dir(sub):
            found += _image_entries(sub / "images" if (sub / "images").is_dir() else sub)
    return found


def _discover_unlabelled(root: Path) -> DatasetIndex:
    problems: list[str] = []
    images = _by_stem(_unlabelled_entries(root), root, problems, keep_first=True)
    cases = [Case(k, (p,)) for k, p in images.items()]
    return DatasetIndex(root=root, layout="unlabelled", cases=_sorted_cases(cases), problems=problems)
