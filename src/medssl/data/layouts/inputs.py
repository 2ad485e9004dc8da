"""The inputs of prediction and segmentation: image files, DICOM series folders, or case folders."""

from __future__ import annotations

from pathlib import Path

from medssl.data.io import IMAGE_SUFFIXES, is_dicom_dir, is_image_path, stem
from medssl.data.layouts.case_folders import _channel_name, _split_case_folder
from medssl.data.layouts.index import Case
from medssl.data.layouts.pairing import _image_entries, _rel, _sorted_cases, _sub_dirs
from medssl.errors import MedsslError


def discover_inputs(path: str | Path) -> list[Path]:
    """The images to predict on: a file, a DICOM series folder, or the images in a folder.

    Args:
        path: an image file, a DICOM series folder, or a folder of images / DICOM series folders; for a dataset
            root, its ``images/`` and ``imagesTs/`` sub-folders are searched too.

    Returns:
        Sorted image paths (files and DICOM series folders).

    Raises:
        MedsslError: ``path`` is missing, unsupported, or holds no image.
    """
    p = Path(path)
    if not p.exists():
        raise MedsslError(f"{p} does not exist")
    if p.is_file() or is_dicom_dir(p):
        if not is_image_path(p):
            raise MedsslError(f"{p} is not a supported image (supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folder)")
        return [p]
    found = _image_entries(p)
    for sub in ("images", "imagesTs"):
        found += _image_entries(p / sub)
    if not found:
        folders = _input_case_folders(p)
        if folders:
            raise MedsslError(
                f"{p} holds one folder per case ({len(folders)} case folder(s), e.g. {_rel(folders[0], p)} with "
                f"{', '.join(f.name for f in _split_case_folder(folders[0])[0])}): `medssl predict` reads each "
                "case's files as the channels of one input; commands that take single images need an image file"
            )
        raise MedsslError(
            f"no image found in {p} (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series folders, also in "
            "its images/ and imagesTs/ sub-folders)"
        )
    return sorted(found)


def _is_input_case_folder(folder: Path) -> bool:
    """A case folder for prediction: channel images beside a label or brain/field-of-view mask (BraTS)."""
    if not folder.is_dir() or is_dicom_dir(folder):
        return False
    images, labels, fovs = _split_case_folder(folder)
    return bool(images) and len(labels) <= 1 and bool(labels or fovs)


def _input_case_folders(root: Path) -> list[Path]:
    """The case folders under ``root`` (without images of its own): its sub-folders, or theirs (split folders)."""
    if _image_entries(root):
        return []
    subs = _sub_dirs(root)
    direct = [p for p in subs if _is_input_case_folder(p)]
    if direct:
        return direct
    return [p for sub in subs if not _image_entries(sub) for p in _sub_dirs(sub) if _is_input_case_folder(p)]


def discover_input_cases(path: str | Path) -> list[Case]:
    """The inputs to predict on, one case each: like ``discover_inputs``, but a folder of case folders (BraTS, see
    the case-folders layout; also split into ``train/``, ``test/``, ...) or one case folder gives one case per
    folder whose channel files (without the label and brain/field-of-view masks) form one multi-channel input.

    Args:
        path: an image file, a DICOM series folder, a folder of images, a case folder or a folder of them.

    Returns:
        Cases (``images`` only; ``label`` and ``fov`` are left out), sorted by ``case_id``; for single images the
        ``case_id`` is the file stem, for case folders the folder name.

    Raises:
        MedsslError: ``path`` is missing, unsupported, holds no image, or case folders differ in their channel
            files or share a name.
    """
    p = Path(path)
    if p.is_dir() and _is_input_case_folder(p):
        return [Case(p.name, tuple(_split_case_folder(p)[0]))]
    folders = _input_case_folders(p) if p.is_dir() and not is_dicom_dir(p) else []
    if not folders:
        return [Case(stem(x), (x,)) for x in discover_inputs(p)]
    cases: dict[str, Case] = {}
    channels: dict[tuple[str, ...], Path] = {}
    for folder in folders:
        images = _split_case_folder(folder)[0]
        channels.setdefault(tuple(_channel_name(x, folder.name) for x in images), folder)
        if folder.name in cases:
            raise MedsslError(f"two case folders are named {folder.name!r} in {p}: {_rel(folder, p)} and another")
        cases[folder.name] = Case(folder.name, tuple(images))
    if len(channels) > 1:
        shown = "; ".join(f"{_rel(f, p)}: {', '.join(names)}" for names, f in channels.items())
        raise MedsslError(f"the case folders in {p} hold different channel files ({shown}); give every case the same")
    return _sorted_cases(cases.values())
