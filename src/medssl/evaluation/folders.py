"""Reference folders and their predictions: the folder layout, the image files by stem, and the matched pairs."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medssl.data.io import is_image_path, stem
from medssl.errors import MedsslError

LABEL_MAP = "label_map"
MULTI_LABEL = "multi_label"
_MAX_LISTED = 10  # file names listed in an error message before "... and N more"


@dataclass(frozen=True)
class _Pair:
    """One prediction/reference file pair; ``structure`` is set in the multi-label layout."""

    case: str
    pred: Path
    truth: Path
    structure: str | None = None


def reference_layout(truth_dir: str | os.PathLike[str]) -> str:
    """The layout of a reference folder: ``LABEL_MAP`` or ``MULTI_LABEL`` (see the module docs).

    Raises:
        MedsslError: the folder is missing, holds no label image, or mixes files and structure sub-folders.
    """
    return _detect_layout(_existing_dir(truth_dir, "reference"))


def image_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The image files of a folder by stem (sorted by name); two files with one stem raise ``MedsslError``."""
    return _image_files(_existing_dir(folder, "image"))


def structure_dirs(truth_dir: str | os.PathLike[str]) -> list[Path]:
    """The structure sub-folders of a ``MULTI_LABEL`` reference folder, sorted by name."""
    return [p for p in _entries(Path(truth_dir)) if _is_structure_dir(p)]


def _existing_dir(path: str | os.PathLike[str], role: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise MedsslError(f"{role} folder not found: {folder}")
    return folder


def _entries(folder: Path) -> list[Path]:
    """Visible entries of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _is_structure_dir(path: Path) -> bool:
    # A DICOM series folder is an image, not a structure sub-folder.
    return path.is_dir() and not is_image_path(path)


def _detect_layout(truth_root: Path) -> str:
    entries = _entries(truth_root)
    has_images = any(is_image_path(p) for p in entries)
    has_structures = any(_is_structure_dir(p) for p in entries)
    if has_images and has_structures:
        raise MedsslError(
            f"{truth_root} holds both label files and sub-folders; use either label maps directly in the folder "
            "or one sub-folder of binary masks per structure"
        )
    if has_structures:
        return MULTI_LABEL
    if has_images:
        return LABEL_MAP
    raise MedsslError(f"no label images found in reference folder {truth_root}")


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem; two files with one stem are ambiguous."""
    files: dict[str, Path] = {}
    for path in _entries(folder):
        if not is_image_path(path):
            continue
        key = stem(path)
        if key in files:
            raise MedsslError(f"{folder} holds two files for case '{key}': {files[key].name} and {path.name}")
        files[key] = path
    return files


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown}, ... and {len(names) - _MAX_LISTED} more"


def _match(pred_folder: Path, truth_folder: Path, unused: list[Path], structure: str | None = None) -> list[_Pair]:
    """Pair files by stem, else by the first ``_``/``-`` token of the stem when unique on both sides (DRIVE:
    ``01_test`` with ``01_manual1``); a prediction without reference is an error, references without prediction
    go to ``unused``."""
    preds, truths = _image_files(pred_folder), _image_files(truth_folder)
    pairs = {k: k for k in preds if k in truths}
    lone_preds = [k for k in preds if k not in pairs]
    lone_truths = [k for k in truths if k not in pairs]
    pred_tokens, truth_tokens = Counter(map(_token, lone_preds)), Counter(map(_token, lone_truths))
    by_token = {_token(k): k for k in lone_truths}
    for k in lone_preds:
        if pred_tokens[_token(k)] == 1 and truth_tokens[_token(k)] == 1:
            pairs[k] = by_token[_token(k)]
    extra = sorted(preds.keys() - pairs.keys())
    if extra:
        names = [preds[k].name for k in extra]
        raise MedsslError(
            f"{len(extra)} prediction file(s) in {pred_folder} match no reference in {truth_folder}: {_listing(names)}"
        )
    unused.extend(truths[k] for k in sorted(truths.keys() - set(pairs.values())))
    return [_Pair(case, preds[case], truths[pairs[case]], structure) for case in sorted(preds)]


def _token(name: str) -> str:
    return re.split(r"[_-]", name, maxsplit=1)[0]


def _label_map_pairs(pred_root: Path, truth_root: Path, unused: list[Path]) -> list[_Pair]:
    pairs = _match(pred_root, truth_root, unused)
    if not pairs:
        raise MedsslError(f"no prediction in {pred_root} (nothing to score against {truth_root})")
    return pairs


def _multi_label_pairs(pred_root: Path, truth_root: Path, unused: list[Path]) -> list[_Pair]:
    """Pairs of every structure sub-folder, ordered by case, then structure."""
    structures = [p.name for p in _entries(truth_root) if _is_structure_dir(p)]
    predicted = {p.name for p in _entries(pred_root) if _is_structure_dir(p)}
    missing = [s for s in structures if s not in predicted]
    extra = sorted(predicted - set(structures))
    stray = [p.name for p in _entries(pred_root) if is_image_path(p)]
    if stray:
        raise MedsslError(
            f"{pred_root} holds label files ({_listing(stray)}) beside structure sub-folders; use sub-folders only"
        )
    if missing or extra:
        raise MedsslError(
            f"structure sub-folders differ: reference {truth_root} has {structures}, prediction {pred_root} "
            f"lacks {missing} and has unmatched {extra}"
        )
    pairs = [pair for s in structures for pair in _match(pred_root / s, truth_root / s, unused, s)]
    if not pairs:
        raise MedsslError(f"no prediction in the structure sub-folders of {pred_root} (nothing to score)")
    order = {s: i for i, s in enumerate(structures)}
    return sorted(pairs, key=lambda pair: (pair.case, order[pair.structure or ""]))


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (a structure's file as ``heart/case1.png``)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
