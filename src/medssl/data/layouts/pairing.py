"""Listing a folder's images and pairing images with masks by file stem; shared by every layout."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from medssl.data.io import is_dicom_dir, is_image_path, stem
from medssl.data.layouts.index import Case

MASK_SUFFIXES: tuple[str, ...] = ("_segmentation", "_label", "_mask", "_seg")
_MAX_LISTED = 8


def _visible(folder: Path) -> list[Path]:
    """Non-hidden entries of ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _image_entries(folder: Path) -> list[Path]:
    """Supported image files and DICOM series folders directly inside ``folder``."""
    return [p for p in _visible(folder) if is_image_path(p)] if folder.is_dir() else []


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
    except ValueError:
        return str(path)


def _by_stem(paths: Iterable[Path], root: Path, problems: list[str], keep_first: bool = False) -> dict[str, Path]:
    """Map stem -> path; duplicated stems are reported and dropped (or only the first kept)."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(stem(p), []).append(p)
    out: dict[str, Path] = {}
    for key, group in groups.items():
        if len(group) > 1:
            what = "only the first is used" if keep_first else "left out"
            problems.append(f"duplicate stem {key!r} ({what}): {', '.join(_rel(p, root) for p in group)}")
            if not keep_first:
                continue
        out[key] = group[0]
    return out


def _token(name: str) -> str:
    """The first ``_``/``-``-separated part of a stem (``"21"`` for ``"21_manual1"``)."""
    return re.split(r"[_-]", name, maxsplit=1)[0]


def _match_masks(
    images: dict[str, Path],
    masks: dict[str, Path],
    root: Path,
    mask_dir: str,
    problems: list[str],
    *,
    by_token: bool = False,
    unmatched_images: list[str] | None = None,
) -> dict[str, Path]:
    """Image stem -> mask path, by equal stem or mask stem = image stem + a mask suffix; reports the unpaired.

    With ``by_token``, an image still unmatched then takes the mask whose first ``_``/``-`` token equals its
    own when that token is unique among the images and among the masks. Images without mask go to
    ``unmatched_images`` (when given) instead of ``problems``.
    """
    used: set[str] = set()
    pairs: dict[str, Path] = {}
    for key in images:
        found = next((k for k in (key, *(key + s for s in MASK_SUFFIXES)) if k in masks and k not in used), None)
        if found is not None:
            used.add(found)
            pairs[key] = masks[found]
    if by_token:
        image_tokens = Counter(_token(k) for k in images)
        mask_tokens = {_token(k): k for k in masks if k not in used}
        mask_counts = Counter(_token(k) for k in masks)
        for key in images:
            tok = _token(key)
            if key not in pairs and image_tokens[tok] == 1 and mask_counts[tok] == 1 and tok in mask_tokens:
                used.add(mask_tokens[tok])
                pairs[key] = masks[mask_tokens[tok]]
    for key, img in images.items():
        if key not in pairs:
            line = f"image without mask: {_rel(img, root)} (nothing matching {key!r} in {mask_dir})"
            (problems if unmatched_images is None else unmatched_images).append(line)
    problems.extend(f"mask without image: {_rel(masks[k], root)}" for k in sorted(set(masks) - used))
    return {k: pairs[k] for k in images if k in pairs}


def _sorted_cases(cases: Iterable[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: c.case_id)


def _sub_dirs(root: Path) -> list[Path]:
    return [p for p in _visible(root) if p.is_dir() and not is_dicom_dir(p)]
