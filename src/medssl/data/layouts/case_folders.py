"""The case-folders layout: one folder per case with its channel images and one label file (BraTS)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from medssl.data.io import is_dicom_dir, stem
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _image_entries, _rel, _sorted_cases, _sub_dirs

# Files of a case folder (stem, case folder name removed): a label, a brain/field-of-view mask.
_LABEL_FILE = re.compile(
    r"^(?:.*[_-])?(?:seg|segmentation|label|labels|gt|truth|ground[_-]?truth|otmulticlass)$", re.IGNORECASE
)
_FOV_FILE = re.compile(r"^(?:.*[_-])?(?:brain[_-]?mask|fov|roi)$", re.IGNORECASE)


def _channel_name(path: Path, case_id: str) -> str:
    """A case folder file's stem without a leading ``<case_id>_`` (BraTS 2018: ``<case>_flair``)."""
    name = stem(path)
    return name[len(case_id) + 1 :] if name.startswith(case_id) and len(name) > len(case_id) + 1 else name


def _split_case_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(channel images, label-named files, fov-named files) of one case folder; channels by channel name."""
    files = _image_entries(folder)
    labels = [p for p in files if _LABEL_FILE.match(_channel_name(p, folder.name))]
    fovs = [p for p in files if p not in labels and _FOV_FILE.match(_channel_name(p, folder.name))]
    images = sorted(
        (p for p in files if p not in labels and p not in fovs), key=lambda p: _channel_name(p, folder.name)
    )
    return images, labels, fovs


def _is_case_folder(folder: Path) -> bool:
    """A folder holding channel images and exactly one label-named file (BraTS)."""
    if not folder.is_dir() or is_dicom_dir(folder):
        return False
    images, labels, _ = _split_case_folder(folder)
    return bool(images) and len(labels) == 1


def _discover_case_folders(root: Path, require_label: bool = True) -> DatasetIndex:
    problems: list[str] = []
    found: list[tuple[Path, list[Path], Path | None, Path | None]] = []
    for folder in _sub_dirs(root):
        images, labels, fovs = _split_case_folder(folder)
        if not images or (require_label and len(labels) != 1) or len(labels) > 1:
            what = "no label file" if not labels else f"{len(labels)} label files" if len(labels) > 1 else ""
            problems.append(
                f"{_rel(folder, root)}: not a case folder ({what or 'no image'}; expected channel images and one "
                "label file named like seg, label or OTMultiClass) (left out)"
            )
            continue
        found.append((folder, images, labels[0] if labels else None, fovs[0] if fovs else None))
    names = Counter(tuple(_channel_name(p, f.name) for p in imgs) for f, imgs, _, _ in found)
    channels = list(max(names.items(), key=lambda kv: (kv[1], kv[0]))[0]) if names else []
    cases = []
    for folder, images, label, fov in found:
        have = [_channel_name(p, folder.name) for p in images]
        if have != channels:
            problems.append(
                f"{_rel(folder, root)}: channel files {', '.join(have)} differ from most cases' "
                f"{', '.join(channels)} (left out)"
            )
            continue
        cases.append(Case(folder.name, tuple(images), label, fov=fov))
    notes = [f"channels (one file each, in this order): {', '.join(channels)}"] if channels else []
    fov_names = sorted({_channel_name(c.fov, c.case_id) for c in cases if c.fov})
    if fov_names:
        notes.append(f"brain/field-of-view masks ({', '.join(fov_names)}): not used as labels or images")
    return DatasetIndex(
        root=root, layout="case-folders", cases=_sorted_cases(cases), channels=channels, problems=problems, notes=notes
    )
