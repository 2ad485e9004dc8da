"""Detecting a dataset folder's layout and finding its cases (``discover``, ``scan_dataset``), split folders
merged; the files no case uses."""

from __future__ import annotations

import os
from pathlib import Path

from medssl.data.io import IMAGE_SUFFIXES, is_dicom_dir, is_image_path, stem
from medssl.data.layouts.case_folders import _discover_case_folders, _is_case_folder
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.msd import _discover_msd
from medssl.data.layouts.observers import _discover_observers, _observer_dirs, declared_raters
from medssl.data.layouts.paired import _discover_multilabel, _discover_paired, _structure_dirs
from medssl.data.layouts.pairing import _MAX_LISTED, _image_entries, _rel, _sorted_cases, _sub_dirs, _visible
from medssl.data.layouts.suffix import _discover_suffix, _mask_base
from medssl.data.layouts.unlabelled import _discover_unlabelled
from medssl.errors import MedsslError

_DOC_SUFFIXES = (".txt", ".md", ".rst", ".json", ".csv", ".tsv", ".pdf", ".xls", ".xlsx", ".html", ".yaml", ".yml")
_COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz")  # pixel data of .mhd / .nhdr headers


def _discover_split(root: Path) -> DatasetIndex:
    """Merge the labelled sub-folders of ``root`` (``training/`` + ``test/``); their problems name the part."""
    kinds = {sub: _kind(sub, nested=True) for sub in _sub_dirs(root)}
    parts = {sub.name: _DISCOVERERS[kind](sub) for sub, kind in kinds.items() if kind != "unlabelled"}
    layouts = sorted({index.layout for index in parts.values()})
    problems: list[str] = []
    if len(layouts) > 1:
        shown = ", ".join(f"{k}/: {v.layout}" for k, v in parts.items())
        problems.append(f"sub-folders have different layouts ({shown}); use one layout for all")
    channels = {tuple(index.channels or ()) for index in parts.values()}
    if len(channels) > 1:
        shown = "; ".join(f"{k}/: {', '.join(v.channels or [])}" for k, v in parts.items())
        problems.append(f"sub-folders have different channel files ({shown})")
    seen: dict[str, str] = {}
    cases: list[Case] = []
    counts = ", ".join(f"{k}/ ({len(v.cases)})" for k, v in parts.items())
    notes = [f"cases of the sub-folders together: {counts} (finetune splits them anew; to keep these parts, --split)"]
    where: dict[str, list[str]] = {}  # a note shared by every part is said once
    for name, index in parts.items():
        problems.extend(f"{name}/: {p}" for p in index.problems)
        for note in index.notes:
            where.setdefault(note, []).append(name)
    notes += [
        n if len(names) == len(parts) else f"{', '.join(f'{k}/' for k in names)}: {n}" for n, names in where.items()
    ]
    for name, index in parts.items():
        for case in index.cases:
            if case.case_id in seen:
                problems.append(
                    f"case {case.case_id!r} is in {seen[case.case_id]}/ and in {name}/ (left out of {name}/)"
                )
                continue
            seen[case.case_id] = name
            cases.append(case)
    first = next(iter(parts.values()))
    return DatasetIndex(
        root=root,
        layout=first.layout,
        cases=_sorted_cases(cases),
        labels=first.labels,
        structures=first.structures,
        observers=list(dict.fromkeys(o for i in parts.values() for o in i.observers or [])) or None,
        channels=first.channels,
        parts=list(parts),
        problems=problems,
        notes=notes,
    )


def _kind(root: Path, nested: bool = False) -> str:
    """The layout of ``root``, or ``"split"`` for labelled sub-folders (not looked for when ``nested``)."""
    if (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir() and declared_raters(root):
        return "observers"  # masks/<rater>/ folders, not structures
    if (root / "images").is_dir() and (root / "masks").is_dir():
        masks = root / "masks"
        if _image_entries(masks) or not _structure_dirs(masks):
            return "paired"
        return "paired-multilabel"
    if (root / "images").is_dir() and _observer_dirs(root):
        return "observers"
    direct = _image_entries(root)
    subs = _sub_dirs(root)
    if not direct and subs and 2 * sum(_is_case_folder(p) for p in subs) >= len(subs):
        return "case-folders"
    if any(p.is_file() and _mask_base(stem(p)) is not None for p in direct):
        return "suffix"
    if not nested and not direct and any(_kind(p, nested=True) != "unlabelled" for p in subs):
        return "split"
    return "unlabelled"


def detect_layout(root: Path) -> str:
    """The layout name of an existing, non-empty dataset folder (see the module documentation); for split
    folders, the layout of the labelled sub-folders."""
    kind = _kind(root)
    return _discover_split(root).layout if kind == "split" else kind


_DISCOVERERS = {
    "msd": _discover_msd,
    "paired": _discover_paired,
    "paired-multilabel": _discover_multilabel,
    "observers": _discover_observers,
    "case-folders": _discover_case_folders,
    "suffix": _discover_suffix,
    "split": _discover_split,
    "unlabelled": _discover_unlabelled,
}


def _unrecognised(index: DatasetIndex, max_depth: int = 4) -> list[Path]:
    """Files under ``index.root`` that no case uses and that are neither a supported image nor documentation."""
    root = index.root
    if not root.is_dir():
        return []
    used = {p for case in [*index.cases, *index.test_cases] for p in case.files()}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        depth = len(folder.relative_to(root).parts)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and depth < max_depth and not is_dicom_dir(folder / d)
        )
        for name in sorted(filenames):
            path = folder / name
            if name.startswith(".") or path in used or is_image_path(path):
                continue
            lower = name.lower()
            doc = next((s for s in _DOC_SUFFIXES if lower.endswith(s)), None)
            # "case.nii.txt" is an image name with a wrong ending, not documentation.
            if doc is not None and not any(lower[: -len(doc)].endswith(s) for s in IMAGE_SUFFIXES):
                continue
            if lower.endswith(_COMPANION_SUFFIXES):
                continue
            out.append(path)
    return sorted(out)


def scan_dataset(path: str | Path) -> DatasetIndex:
    """Like ``discover`` but returns an index without usable cases instead of raising (used by ``check``).

    Args:
        path: a dataset folder, image file or DICOM series folder.

    Returns:
        The dataset index, possibly with no case.

    Raises:
        MedsslError: ``path`` is missing, an empty folder, or an unsupported file.
    """
    root = Path(path)
    if not root.exists():
        raise MedsslError(f"{root} does not exist")
    if root.is_file() or is_dicom_dir(root):
        if not is_image_path(root):
            raise MedsslError(f"{root} is not a supported image (supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folder)")
        return DatasetIndex(root=root, layout="unlabelled", cases=[Case(stem(root), (root,))])
    if not _visible(root):
        raise MedsslError(f"{root} is an empty folder")
    index = _DISCOVERERS[_kind(root)](root)
    index.unrecognised = _unrecognised(index)
    return index


def discover(path: str | Path) -> DatasetIndex:
    """Find the cases of the dataset at ``path``.

    Args:
        path: a dataset folder (or a single image file / DICOM series folder).

    Returns:
        The dataset index; pairing problems are in ``problems`` and the unpaired images left out of ``cases``.

    Raises:
        MedsslError: ``path`` is missing, an empty folder, holds no supported image, or no usable case.
    """
    index = scan_dataset(path)
    if index.cases or index.test_cases:
        return index
    if not index.problems:
        raise MedsslError(
            f"{index.root} holds no supported image (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series "
            f"folders; detected layout {index.layout!r})"
        )
    shown = index.problems[:_MAX_LISTED]
    more = f"\n  ... and {len(index.problems) - len(shown)} more" if len(index.problems) > len(shown) else ""
    raise MedsslError(f"no usable case in {index.root} (layout {index.layout!r}):\n  " + "\n  ".join(shown) + more)


def unrecognised_warning(index: DatasetIndex) -> str | None:
    """One line naming the files of ``index.unrecognised`` (what ``medssl data check`` lists), or None."""
    if not index.unrecognised:
        return None
    names = [_rel(p, index.root) for p in index.unrecognised]
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"ignored {len(names)} file(s) that are not supported images: {', '.join(names[:_MAX_LISTED])}{more}"
