"""The paired layouts: ``images/`` + ``masks/`` (one label map per image) or ``masks/<structure>/``."""

from __future__ import annotations

from pathlib import Path

from medssl.data.io import is_dicom_dir
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _by_stem, _image_entries, _match_masks, _rel, _sorted_cases, _visible


def _discover_paired(root: Path) -> DatasetIndex:
    problems: list[str] = []
    images = _by_stem(_image_entries(root / "images"), root, problems)
    masks = _by_stem(_image_entries(root / "masks"), root, problems)
    if not masks:
        problems.append("masks/ holds no mask files")
    pairs = _match_masks(images, masks, root, "masks/", problems)
    cases = [Case(k, (images[k],), pairs[k]) for k in pairs]
    return DatasetIndex(root=root, layout="paired", cases=_sorted_cases(cases), problems=problems)


def _structure_dirs(masks_dir: Path) -> list[Path]:
    return [p for p in _visible(masks_dir) if p.is_dir() and not is_dicom_dir(p)]


def _discover_multilabel(root: Path) -> DatasetIndex:
    problems: list[str] = []
    images = _by_stem(_image_entries(root / "images"), root, problems)
    per_structure: dict[str, dict[str, Path]] = {}
    for folder in _structure_dirs(root / "masks"):
        masks = _by_stem(_image_entries(folder), root, problems)
        if not masks:
            problems.append(f"empty structure folder {_rel(folder, root)} (structure {folder.name!r} ignored)")
            continue
        per_structure[folder.name] = _match_masks(images, masks, root, _rel(folder, root), problems)
    names = sorted(per_structure)
    cases = []
    for key, img in images.items():
        if names and all(key in per_structure[n] for n in names):
            cases.append(Case(key, (img,), None, {n: per_structure[n][key] for n in names}))
    return DatasetIndex(
        root=root, layout="paired-multilabel", cases=_sorted_cases(cases), structures=names, problems=problems
    )
