"""Loading one case (all its channel files and its labels) into arrays with geometry.

The training commands load through ``load_checked_cases``: every case is read once, checked on the arrays read
by ``medssl.data.check.check_case`` (the check behind ``medssl data check``), and a case with a problem is
refused (``bad_cases_error``) or, with ``--skip-bad-cases``, left out (``skipped_line``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from medssl.data.check import CaseArrays, DatasetTally, check_case, dataset_problems
from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image
from medssl.data.layouts import Case, DatasetIndex
from medssl.errors import MedsslError

_LISTED = 10
_console = Console(stderr=True)


@dataclass
class LoadedCase:
    """A case in memory.

    Attributes:
        case_id: the case's stem.
        image: ``(C, *spatial)`` float32.
        meta: geometry of the (first) image file.
        label: ``(*spatial)`` int64 label map, or None.
        structures: ``(S, *spatial)`` bool, one binary mask per structure, or None.
        raters: ``(R, *spatial)`` int64 label maps, one per observer (``Case.observers`` order, the label's
            first), when they were asked for and the case has several; else None.
        annotated: ``(S,)`` bool, which structures the case annotates (``Case.annotated``), in the order of
            ``structures``, when it annotates only some (the others' masks are zeros); None: every one.
    """

    case_id: str
    image: np.ndarray
    meta: ImageMeta
    label: np.ndarray | None = None
    structures: np.ndarray | None = None
    raters: np.ndarray | None = None
    annotated: np.ndarray | None = None


def load_image_channels(paths: tuple[Path, ...] | list[Path]) -> tuple[np.ndarray, ImageMeta]:
    """Read the channel files of one case and stack them, ``(C, *spatial)`` float32."""
    arrays, metas = [], []
    for p in paths:
        a, m = read_image(p)
        arrays.append(a)
        metas.append(m)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise MedsslError(f"channel files of one case differ in shape {sorted(shapes)}: {', '.join(map(str, paths))}")
    return np.concatenate(arrays, axis=0).astype(np.float32, copy=False), metas[0]


@dataclass
class CheckedCases:
    """What ``load_checked_cases`` read.

    Attributes:
        loaded: case id -> the case in memory, for the good cases that were asked to be kept.
        bad: case id -> its problems, each the line ``medssl data check`` prints.
    """

    loaded: dict[str, LoadedCase] = field(default_factory=dict)
    bad: dict[str, list[str]] = field(default_factory=dict)


def load_checked_cases(
    index: DatasetIndex,
    cases: Iterable[Case],
    *,
    keep: Collection[str] | None = None,
    images_only: bool = False,
    raters: bool = False,
    progress: Callable[[list[Case], str], Iterable[Case]] | None = None,
) -> CheckedCases:
    """Read every case once, check it as ``medssl data check`` does, and keep the good ones wanted in memory.

    Each file is read once: the check runs on the arrays the loader keeps. The rules that compare cases
    (``dataset_problems``) are applied to the cases given, once all have been read.

    Args:
        index: the dataset (root, declared labels, structures).
        cases: the cases to read and check.
        keep: ids of the good cases to keep in memory (None: all); the others are only checked.
        images_only: read the image files only (pretraining).
        raters: also read and check every observer's mask of the cases that have several (``LoadedCase.raters``);
            off by default: the other observers cost memory and reading time.
        progress: ``wrap(items, what)`` progress bar.

    Returns:
        The kept cases and the bad ones with their problems.
    """
    cases = list(cases)
    result = CheckedCases()
    tally = DatasetTally()
    for case in progress(cases, "reading and checking cases") if progress else cases:
        problems, arrays = check_case(case, index, tally, images_only=images_only, raters=raters)
        if problems:
            result.bad[case.case_id] = problems
        elif keep is None or case.case_id in keep:
            result.loaded[case.case_id] = _from_arrays(case, arrays, index.structures, images_only)
    ids = {c.case_id for c in cases}
    for case_id, line in dataset_problems(index, tally):
        if case_id in ids:
            result.bad.setdefault(case_id, []).append(line)
            result.loaded.pop(case_id, None)
    return result


def load_checked_case(
    case: Case, index: DatasetIndex, *, images_only: bool = False, raters: bool = False
) -> LoadedCase:
    """One case, read and checked as ``medssl data check`` does (per-case rules only); a problem raises.

    ``images_only`` and ``raters`` as in ``load_checked_cases``.

    Raises:
        MedsslError: the case's first problem, as ``medssl data check`` words it.
    """
    problems, arrays = check_case(case, index, images_only=images_only, raters=raters)
    if problems:
        raise MedsslError(problems[0])
    return _from_arrays(case, arrays, index.structures, images_only)


def bad_cases_error(data: str | Path, bad: dict[str, list[str]], option: str = "--skip-bad-cases") -> MedsslError:
    """The refusal of a dataset with bad cases: every problem line as ``medssl data check`` prints it.

    Args:
        data: the dataset folder, as the user gave it.
        bad: case id -> problems (``CheckedCases.bad``).
        option: the switch that skips the bad cases instead.

    Returns:
        The error to raise.
    """
    lines = [line for problems in bad.values() for line in problems]
    shown = "\n  ".join(lines[:_LISTED])
    more = f"\n  ... and {len(lines) - _LISTED} more" if len(lines) > _LISTED else ""
    return MedsslError(
        f"{len(bad)} case(s) of {data} have problems (`medssl data check {data}` lists them; {option} leaves "
        f"them out):\n  {shown}{more}"
    )


def skipped_line(bad: dict[str, list[str]], option: str = "--skip-bad-cases") -> str:
    """One summary line naming the cases left out and the first problem of each."""
    shown = "; ".join(f"{case_id} ({problems[0]})" for case_id, problems in list(bad.items())[:_LISTED])
    more = f"; ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
    return f"{option}: left out {len(bad)} case(s) with problems: {shown}{more}"


def print_skipped(bad: dict[str, list[str]], option: str = "--skip-bad-cases") -> None:
    """Print ``skipped_line`` on stderr (nothing when no case was left out)."""
    if bad:
        _console.print(skipped_line(bad, option), highlight=False, soft_wrap=True, markup=False)


def bad_inputs_error(bad: dict[str, str], n_inputs: int, option: str = "--skip-bad-inputs") -> MedsslError:
    """The refusal of prediction/segmentation inputs, before any output is written: one line per bad input."""
    lines = list(bad.values())
    shown = "\n  ".join(lines[:_LISTED])
    more = f"\n  ... and {len(lines) - _LISTED} more" if len(lines) > _LISTED else ""
    return MedsslError(
        f"{len(bad)} of {n_inputs} input image(s) cannot be used, nothing was written ({option} leaves them "
        f"out):\n  {shown}{more}"
    )


def print_skipped_inputs(bad: dict[str, str], option: str = "--skip-bad-inputs") -> None:
    """Print one line listing the inputs left out and why (nothing when none was)."""
    if bad:
        shown = "; ".join(list(bad.values())[:_LISTED])
        more = f"; ... and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
        _console.print(
            f"{option}: left out {len(bad)} input(s): {shown}{more}", highlight=False, soft_wrap=True, markup=False
        )


def _from_arrays(case: Case, arrays: CaseArrays, structures: list[str] | None, images_only: bool) -> LoadedCase:
    """A ``LoadedCase`` from the arrays ``check_case`` read (the checks passed: shapes agree, files readable)."""
    images = [arr for _, arr, _ in arrays.images]
    image = images[0] if len(images) == 1 else np.concatenate(images, axis=0)
    loaded = LoadedCase(case.case_id, image.astype(np.float32, copy=False), arrays.images[0][2], arrays.label)
    if case.structures and not images_only:
        names = structures or sorted(case.structures)
        annotated = names if case.annotated is None else case.annotated
        missing = [n for n in names if n not in arrays.structures and n in annotated]
        if missing:
            raise MedsslError(f"case {case.case_id} has no mask for structure {missing[0]!r}")
        # an unannotated structure's target is zeros: which structures count is ``annotated``, never a value
        none = np.zeros(image.shape[1:], bool)
        loaded.structures = np.stack([arrays.structures[n] > 0 if n in annotated else none for n in names])
        if case.annotated is not None:
            loaded.annotated = np.array([n in annotated for n in names])
    if arrays.raters and arrays.label is not None and case.observers:
        # The label is the first observer's mask, read once: check_case reads only the other observers.
        label = arrays.label
        loaded.raters = np.stack([label if p == case.label else arrays.raters[o] for o, p in case.observers.items()])
    return loaded
