"""The paired layouts: ``images/`` + ``masks/`` (one label map per image) or ``masks/<structure>/``."""

from __future__ import annotations

import json
from pathlib import Path

from medssl.data.io import is_dicom_dir
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _by_stem, _image_entries, _match_masks, _rel, _sorted_cases, _visible

ANNOTATIONS = "annotations.json"
"""The declaration, at the root of a paired-multilabel dataset, of the structures each case annotates:
``{"<case id>": ["<structure>", ...]}``; the cases it does not name annotate every structure."""


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
    declared = (root / ANNOTATIONS).is_file()
    # With a declaration, an image without a structure's mask is judged below: a problem only if it annotates it.
    folders: dict[str, str] = {}
    per_structure: dict[str, dict[str, Path]] = {}
    for folder in _structure_dirs(root / "masks"):
        masks = _by_stem(_image_entries(folder), root, problems)
        if not masks:
            problems.append(f"empty structure folder {_rel(folder, root)} (structure {folder.name!r} ignored)")
            continue
        folders[folder.name] = _rel(folder, root)
        per_structure[folder.name] = _match_masks(
            images, masks, root, folders[folder.name], problems, unmatched_images=[] if declared else None
        )
    names = sorted(per_structure)
    annotates = _read_annotations(root, names, set(images), problems) if declared else {}
    cases = []
    ignored = 0  # masks of structures their case does not annotate
    for key, img in images.items():
        wanted = annotates.get(key, names)
        if declared:  # without a declaration _match_masks reported these
            problems.extend(
                f"image without mask: {_rel(img, root)} (nothing matching {key!r} in {folders[n]}; {ANNOTATIONS} "
                f"does not leave {n!r} out)"
                for n in wanted
                if key not in per_structure[n]
            )
            ignored += sum(key in per_structure[n] for n in names if n not in wanted)
        if wanted and all(key in per_structure[n] for n in wanted):
            partial = tuple(wanted) if len(wanted) < len(names) else None
            cases.append(Case(key, (img,), None, {n: per_structure[n][key] for n in wanted}, annotated=partial))
    notes = [f"{ignored} mask file(s) of structures their case does not annotate ({ANNOTATIONS}) are ignored"]
    return DatasetIndex(
        root=root,
        layout="paired-multilabel",
        cases=_sorted_cases(cases),
        structures=names,
        problems=problems,
        notes=notes if ignored else [],
    )


def _read_annotations(root: Path, names: list[str], images: set[str], problems: list[str]) -> dict[str, list[str]]:
    """Case id -> the structures it annotates (sorted), from ``annotations.json``; its mistakes go to ``problems``.

    A case it names with an unknown structure, an empty list or no image is left out of the dataset (its line
    says why); a file that is not a JSON object of lists of names declares nothing.
    """
    path = root / ANNOTATIONS
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{ANNOTATIONS}: cannot read it as JSON ({exc})")
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in raw.values()
    ):
        problems.append(f'{ANNOTATIONS}: must map each case id to a list of structure names ({{"case": ["heart"]}})')
        return {}
    out: dict[str, list[str]] = {}
    for case_id, structures in raw.items():
        unknown = sorted(set(structures) - set(names))
        if case_id not in images:
            problems.append(f"{ANNOTATIONS}: unknown case {case_id!r} (no image images/{case_id}.*)")
        elif unknown:
            problems.append(
                f"{ANNOTATIONS}: case {case_id!r} names unknown structure {unknown[0]!r} (structures: "
                f"{', '.join(names)})"
            )
            out[case_id] = []  # left out: what it annotates is not known
        elif not structures:
            problems.append(f"{ANNOTATIONS}: case {case_id!r} annotates no structure (left out)")
            out[case_id] = []
        else:
            out[case_id] = sorted(set(structures))
    return out
