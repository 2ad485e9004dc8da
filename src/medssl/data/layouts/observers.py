"""The observers layout: ``images/`` + one mask folder per human observer (+ a field-of-view folder), DRIVE, STARE;
or ``images/`` + ``masks/<rater>/`` with the raters declared in ``dataset.json`` (``{"raters": [...]}``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medssl.data.io import is_dicom_dir
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _by_stem, _image_entries, _match_masks, _rel, _sorted_cases, _visible

_RATER = r"(?:manual|observer|rater|annotator|grader)"
# Observer folders: "1st_manual", "2nd-observer", "manual1", "labels-ah", "rater_2"; group n is the number.
_OBSERVER_DIR = re.compile(
    rf"^(?:(?P<n>\d+)(?:st|nd|rd|th)?[_-]?{_RATER}|{_RATER}[_-]?(?P<m>\w+)|labels?[_-](?P<x>\w+))$", re.IGNORECASE
)
_FOV_DIR = re.compile(r"^(?:(?:fov|roi|field[_-]of[_-]view)(?:[_-]?masks?)?|mask)$", re.IGNORECASE)


def declared_raters(root: Path) -> list[str] | None:
    """The raters a ``dataset.json`` at ``root`` declares (``{"raters": ["alice", "bob"]}``: their masks in
    ``masks/<rater>/``, the first one's the label), or None."""
    try:
        raters = json.loads((root / "dataset.json").read_text()).get("raters")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(r) for r in raters] if isinstance(raters, list) and raters else None


def _observer_dirs(root: Path) -> list[Path]:
    """Observer folders of ``root``, the label's first: the declared raters' ``masks/<rater>/`` in their order,
    else by the number in the name, then by name."""
    declared = declared_raters(root)
    if declared:
        return [root / "masks" / r for r in declared if (root / "masks" / r).is_dir()]
    found = [(p, _OBSERVER_DIR.match(p.name)) for p in _visible(root) if p.is_dir() and not is_dicom_dir(p)]

    def order(item: tuple[Path, re.Match[str]]) -> tuple[int, str]:
        number = item[1].group("n") or item[1].group("m") or ""
        return (int(number) if number.isdigit() else 1 << 30, item[0].name.lower())

    return [p for p, _ in sorted(((p, m) for p, m in found if m), key=order)]


def _fov_dir(root: Path) -> Path | None:
    return next((p for p in _visible(root) if p.is_dir() and _FOV_DIR.match(p.name)), None)


def _discover_observers(root: Path) -> DatasetIndex:
    problems: list[str] = []
    notes: list[str] = []
    images = _by_stem(_image_entries(root / "images"), root, problems)
    observers = _observer_dirs(root)
    missing_raters = [r for r in declared_raters(root) or [] if not (root / "masks" / r).is_dir()]
    problems += [f"dataset.json declares rater {r!r} but masks/{r}/ does not exist" for r in missing_raters]
    per_observer: dict[str, dict[str, Path]] = {}
    for i, folder in enumerate(observers):
        masks = _by_stem(_image_entries(folder), root, problems)
        missing: list[str] = []
        where = _rel(folder, root)
        per_observer[folder.name] = _match_masks(
            images, masks, root, where, problems, by_token=True, unmatched_images=None if i == 0 else missing
        )
        if i and missing:
            notes.append(f"observer {where} has no mask for {len(missing)} of {len(images)} image(s)")
    label_name = observers[0].name if observers else ""
    fov_folder = _fov_dir(root)
    fov: dict[str, Path] = {}
    if fov_folder is not None:
        no_fov: list[str] = []
        fov_masks = _by_stem(_image_entries(fov_folder), root, problems)
        fov = _match_masks(
            images, fov_masks, root, _rel(fov_folder, root), problems, by_token=True, unmatched_images=no_fov
        )
        notes.append(
            f"field-of-view masks: {_rel(fov_folder, root)} (not used as labels or images)"
            + (f"; {len(no_fov)} of {len(images)} image(s) without one" if no_fov else "")
        )
    if observers:
        others = ", ".join(f"{_rel(p, root)} ({len(per_observer[p.name])} case(s))" for p in observers[1:])
        notes.append(
            f"label: observer {_rel(observers[0], root)} (the first observer folder: by number, then by name)"
            + (f"; other observer(s), kept for multi-rater use: {others}" if others else "")
        )
    cases = [
        Case(
            key,
            (img,),
            per_observer[label_name][key],
            observers={name: pairs[key] for name, pairs in per_observer.items() if key in pairs},
            fov=fov.get(key),
        )
        for key, img in images.items()
        if key in per_observer.get(label_name, {})
    ]
    return DatasetIndex(
        root=root,
        layout="observers",
        cases=_sorted_cases(cases),
        observers=[p.name for p in observers],
        problems=problems,
        notes=notes,
    )
