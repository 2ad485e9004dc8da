"""The suffix layout: masks beside their images, ``x.tif`` + ``x_mask.tif``."""

from __future__ import annotations

from pathlib import Path

from medssl.data.io import stem
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import MASK_SUFFIXES, _by_stem, _image_entries, _match_masks, _sorted_cases


def _mask_base(name: str) -> str | None:
    """``"x"`` for a mask stem ``"x_mask"`` (or another mask suffix), else None."""
    suffix = next((s for s in MASK_SUFFIXES if name.lower().endswith(s) and len(name) > len(s)), None)
    return name[: -len(suffix)] if suffix else None


def _discover_suffix(root: Path) -> DatasetIndex:
    problems: list[str] = []
    files = [p for p in _image_entries(root) if p.is_file()]
    masks = [p for p in files if _mask_base(stem(p)) is not None]
    images = _by_stem([p for p in files if _mask_base(stem(p)) is None], root, problems)
    pairs = _match_masks(images, _by_stem(masks, root, problems), root, "the same folder", problems)
    cases = [Case(k, (images[k],), pairs[k]) for k in pairs]
    return DatasetIndex(root=root, layout="suffix", cases=_sorted_cases(cases), problems=problems)
