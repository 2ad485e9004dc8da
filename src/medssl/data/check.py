"""Checking a dataset folder before training: every problem found, each naming the file(s).

``check_dataset(path) -> list[str]`` discovers the dataset (``medssl.data.layouts``), reads every image and
mask and returns one human-readable line per problem (an empty list means no problem was found). It never
stops at the first problem. ``check_dataset_report(path) -> CheckReport`` returns the same problems with the
detected layout and case counts (for the ``medssl data check`` command).

Problems reported:
- pairing: image without mask, mask without image, duplicate stems, a structure's mask missing
  (paired-multilabel; not when ``annotations.json`` says the case does not annotate it), channel files missing
  (nnU-Net), files listed in dataset.json but absent;
- empty folders, and files in the image/mask folders that are not a supported image;
- unreadable, empty or corrupt files (images and masks);
- NaN or infinite values in images;
- shape mismatch between an image and its mask, and between the channel files of one case;
- geometry mismatch (spacing, origin or direction differing beyond 1e-3 relative) between an image and its
  label, or between channel files, when both carry physical geometry (NIfTI, NRRD, MHA, DICOM);
- label values: undeclared in dataset.json (msd); negative values; structure masks that are not binary (values
  within {0, 1} or {0, 255}); masks that look like grey-level/antialiased pictures (more than 32 distinct
  values); label maps whose values are not among those of the most common mask value set in the dataset;
- channel count or dimensionality differing between the cases of a dataset.

The loaders of ``finetune``, ``pretrain`` and the experiment (``medssl.data.loading.load_checked_cases``) run the
same ``check_case`` on the arrays they read, and the same dataset-wide rules (``dataset_problems``), so that they
refuse (or skip) exactly what ``medssl data check`` reports, with the same lines.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.data.geometry import ImageMeta, geometry_difference
from medssl.data.io import read_image, read_label
from medssl.data.layouts import Case, DatasetIndex, scan_dataset
from medssl.errors import MedsslError

MAX_MASK_VALUES = 32
_BINARY = (frozenset({0, 1}), frozenset({0, 255}))


@dataclass
class CheckReport:
    """Result of ``check_dataset_report``.

    Args:
        root: the checked path.
        layout: detected layout, or None when discovery failed.
        n_cases: usable (paired) cases.
        n_test_cases: unlabelled test cases (msd ``imagesTs``).
        problems: one line per problem, each naming the file(s).
        notes: facts about the layout that are not problems (``DatasetIndex.notes``: which observer is the label,
            the other observers, field-of-view masks, channel files, merged sub-folders).
    """

    root: Path
    layout: str | None
    n_cases: int
    n_test_cases: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass
class DatasetTally:
    """Dataset-wide facts gathered case by case by ``check_case``, judged at the end by ``dataset_problems``."""

    label_values: dict[str, frozenset[int]] = field(default_factory=dict)
    layouts: dict[str, tuple[int, int]] = field(default_factory=dict)  # image -> (channels, spatial dims)
    case_of: dict[str, str] = field(default_factory=dict)  # file -> case id: whose case a dataset-wide problem is


@dataclass
class CaseArrays:
    """What ``check_case`` read, so that a loader builds its case from these arrays instead of reading again.

    Attributes:
        images: ``(path, array, meta)`` of each readable channel file, ``array`` as ``read_image`` returns it.
        label: the label map (``read_label``), or None.
        structures: structure name -> mask (``read_label``), for the readable structure masks.
        raters: observer name -> mask (``read_label``), for the readable masks of the observers other than the
            label's (read when asked: ``check_case(raters=True)``).
    """

    images: list[tuple[Path, np.ndarray, ImageMeta]] = field(default_factory=list)
    label: np.ndarray | None = None
    structures: dict[str, np.ndarray] = field(default_factory=dict)
    raters: dict[str, np.ndarray] = field(default_factory=dict)


def check_dataset(path: str | Path) -> list[str]:
    """Every problem found in the dataset at ``path``, one line each, naming the file(s); empty when none.

    Args:
        path: a dataset folder in any layout ``medssl.data.layouts.discover`` supports.

    Returns:
        Problem descriptions (never raises for a problem with the data).
    """
    return check_dataset_report(path).problems


def check_dataset_report(path: str | Path) -> CheckReport:
    """Like ``check_dataset`` but also returns the layout and case counts.

    Args:
        path: a dataset folder.

    Returns:
        The report.
    """
    root = Path(path)
    try:
        index = scan_dataset(root)
    except MedsslError as exc:
        return CheckReport(root, None, 0, 0, [str(exc)])
    problems = list(index.problems)
    if root.is_dir():
        problems += _empty_folders(root)
    problems += _stray_files(index)
    if not index.cases and not index.test_cases:
        problems.append(f"no usable case in {root} (layout {index.layout!r})")
    tally = DatasetTally()
    for case in [*index.cases, *index.test_cases]:
        problems += check_case(case, index, tally, raters=True)[0]  # every file, every observer
    problems += [line for _, line in dataset_problems(index, tally)]
    notes = [*index.notes, *annotation_notes(index)]
    return CheckReport(root, index.layout, len(index.cases), len(index.test_cases), problems, notes)


def annotation_notes(index: DatasetIndex) -> list[str]:
    """What a declaration of partial annotations (``Case.annotated``) says: how many cases annotate only some
    structures, and how many cases annotate each structure; nothing when every case annotates every one."""
    partial = [c for c in index.cases if c.annotated is not None]
    if not partial:
        return []
    counts = ", ".join(
        f"{n} {sum(c.annotated is None or n in c.annotated for c in index.cases)}" for n in index.structures or []
    )
    return [
        f"{len(partial)} of {len(index.cases)} case(s) annotate only some structures (annotations.json); cases "
        f"per structure: {counts}"
    ]


# ------------------------------------------------------------------------------------------------ the folders


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
    return rel if rel != "." else str(path)


def _relative(exc: MedsslError, root: Path) -> str:
    """The error message with paths shown relative to the dataset root, like the other problems."""
    return str(exc).replace(f"{root}{os.sep}", "") if root.is_dir() else str(exc)


def _empty_folders(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not dirnames and not [f for f in filenames if not f.startswith(".")]:
            out.append(f"empty folder: {_rel(Path(dirpath), root)}/")
    return out


def _stray_files(index: DatasetIndex) -> list[str]:
    """Files anywhere in the dataset that no case uses and that are neither supported images nor documentation
    (``DatasetIndex.unrecognised``: ``case.nii.txt`` is listed, ``README.txt`` is not)."""
    return [f"not a supported image, ignored: {_rel(p, index.root)}" for p in index.unrecognised]


# -------------------------------------------------------------------------------------------------- the cases


def check_case(
    case: Case,
    index: DatasetIndex,
    tally: DatasetTally | None = None,
    *,
    images_only: bool = False,
    raters: bool = False,
) -> tuple[list[str], CaseArrays]:
    """Read one case's images and masks: its problems with the files, values, shapes and geometry, and the arrays.

    The one per-case check behind ``medssl data check`` and every loader, so that both say the same. Each problem
    is one line naming the file (relative to the dataset root). Rules that compare cases are judged afterwards
    by ``dataset_problems`` on the ``tally``.

    Args:
        case: the case.
        index: its dataset (root, declared labels).
        tally: collects what the dataset-wide rules need; None when they are not wanted.
        images_only: check and read the image files only (pretraining ignores the masks).
        raters: also check and read the other observers' masks, like the label, when a case has several.

    Returns:
        ``(problems, arrays)``: an empty list when the case is fine; the arrays read (for the loaders).
    """
    root = index.root
    tally = tally if tally is not None else DatasetTally()
    problems: list[str] = []
    arrays = CaseArrays()
    for path in case.images:
        try:
            arr, meta = read_image(path)
        except MedsslError as exc:
            problems.append(_relative(exc, root))
            continue
        rel = _rel(path, root)
        problems += [p for p in [nonfinite_problem(arr, rel)] if p]
        tally.layouts[rel] = (int(arr.shape[0]), arr.ndim - 1)
        tally.case_of[rel] = case.case_id
        arrays.images.append((path, arr, meta))
    read = [(path, tuple(arr.shape[1:]), meta) for path, arr, meta in arrays.images]
    for path, shape, meta in read[1:]:
        problems += _compare(read[0][0], read[0][1], read[0][2], path, shape, meta, root, "channel file")
    if images_only:
        return problems, arrays
    # (path, structure, observer): a structure's mask is binary; the label and the observers' are label maps.
    masks: list[tuple[Path, str | None, str | None]] = [(case.label, None, None)] if case.label is not None else []
    masks += [(p, name, None) for name, p in (case.structures or {}).items()]
    observers = (case.observers or {}) if raters else {}
    masks += [(p, None, name) for name, p in observers.items() if len(observers) > 1 and p != case.label]
    for mask_path, structure, observer in masks:
        tally.case_of[_rel(mask_path, root)] = case.case_id
        mask_problems, lab = _check_mask(mask_path, structure, read[0] if read else None, index, tally)
        problems += mask_problems
        if lab is None:
            continue
        if observer is not None:
            arrays.raters[observer] = lab
        elif structure is None:
            arrays.label = lab
        else:
            arrays.structures[structure] = lab
    return problems, arrays


def nonfinite_problem(image: np.ndarray, name: str) -> str | None:
    """The line ``medssl data check`` prints for an image holding NaN or infinite values, or None.

    Args:
        image: the array as read.
        name: how to name the file in the message.

    Returns:
        The problem line, or None when every value is finite.
    """
    if image.dtype.kind not in "fc":
        return None
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    return f"{name}: {bad} NaN or infinite value(s) in the image" if bad else None


def _check_mask(
    path: Path,
    structure: str | None,
    image: tuple[Path, tuple[int, ...], ImageMeta] | None,
    index: DatasetIndex,
    tally: DatasetTally,
) -> tuple[list[str], np.ndarray | None]:
    try:
        lab, meta = read_label(path)
    except MedsslError as exc:
        return [_relative(exc, index.root)], None
    problems = []
    if image is not None:
        problems += _compare(image[0], image[1], image[2], path, tuple(lab.shape), meta, index.root, "mask")
    values = frozenset(int(v) for v in np.unique(lab))
    rel = _rel(path, index.root)
    if len(values) > MAX_MASK_VALUES:
        problems.append(
            f"{rel}: {len(values)} distinct values, looks like a grey-level or antialiased image, not a mask"
        )
    elif min(values, default=0) < 0:
        problems.append(f"{rel}: negative label values {_show(v for v in values if v < 0)}")
    elif structure is not None:
        if not any(values <= b for b in _BINARY):
            problems.append(
                f"{rel}: mask of structure {structure!r} is not binary, values {_show(values)} "
                "(expected within {0, 1} or {0, 255})"
            )
    else:
        tally.label_values[rel] = values
        declared = frozenset(index.labels) if index.labels is not None else values
        if not values <= declared:
            problems.append(
                f"{rel}: label values {_show(values - declared)} not declared in dataset.json "
                f"(declared: {_show(declared)})"
            )
    return problems, lab


def _compare(
    ref_path: Path,
    ref_shape: tuple[int, ...],
    ref_meta: ImageMeta,
    path: Path,
    shape: tuple[int, ...],
    meta: ImageMeta,
    root: Path,
    what: str,
) -> list[str]:
    """Shape and (for physical formats) geometry agreement between an image and its mask or channel file."""
    a, b = _rel(ref_path, root), _rel(path, root)
    if shape != ref_shape:
        return [f"shape mismatch: image {a} is {_dims(ref_shape)} but {what} {b} is {_dims(shape)}"]
    diff = geometry_difference(ref_meta, meta)
    return [f"geometry mismatch between image {a} and {what} {b}: {diff}"] if diff else []


# ----------------------------------------------------------------------------------------- dataset-wide rules


def dataset_problems(index: DatasetIndex, tally: DatasetTally) -> list[tuple[str, str]]:
    """The problems of the rules that compare cases, once ``check_case`` has seen them all.

    Args:
        index: the dataset.
        tally: what ``check_case`` gathered.

    Returns:
        ``(case id, line)`` per problem, the line as ``medssl data check`` prints it.
    """
    found = _check_label_values(index, tally) + _check_consistency(tally)
    return [(tally.case_of.get(rel, ""), line) for rel, line in found]


def _check_label_values(index: DatasetIndex, tally: DatasetTally) -> list[tuple[str, str]]:
    """Label maps whose values are inconsistent with the dataset's usual mask values (labels not declared)."""
    if index.labels is not None:
        return []  # declared labels are checked case by case (check_case)
    if all(any(v <= b for b in _BINARY) for v in tally.label_values.values()):
        return []  # binary masks, 0/1 or 0/255
    counts = Counter(v for v in tally.label_values.values() if len(v) > 1)
    reference = max(counts.items(), key=lambda kv: (kv[1], len(kv[0])))[0] if counts else frozenset({0})
    return [
        (
            rel,
            f"{rel}: mask values {_show(values - reference)} are not among the values of most masks "
            f"({_show(reference)}); masks must be binary (0/1 or 0/255) or label maps with the same values",
        )
        for rel, values in tally.label_values.items()
        if not values <= reference
    ]


def _check_consistency(tally: DatasetTally) -> list[tuple[str, str]]:
    """Images whose channel count or dimensionality differs from most of the dataset."""
    if not tally.layouts:
        return []
    usual = Counter(tally.layouts.values()).most_common(1)[0][0]
    return [
        (rel, f"{rel}: {c} channel(s), {n}D, while most images have {usual[0]} channel(s), {usual[1]}D")
        for rel, (c, n) in tally.layouts.items()
        if (c, n) != usual
    ]


# ---------------------------------------------------------------------------------------------------- format


def _show(values: Iterable[int]) -> str:
    vals = sorted(values)
    text = ", ".join(str(v) for v in vals[:10])
    return "{" + text + (", ..." if len(vals) > 10 else "") + "}"


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


__all__ = [
    "CaseArrays",
    "CheckReport",
    "DatasetTally",
    "annotation_notes",
    "check_case",
    "check_dataset",
    "check_dataset_report",
    "dataset_problems",
    "geometry_difference",
    "nonfinite_problem",
]
