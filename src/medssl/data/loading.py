"""Loading one case (all its channel files and its labels) into arrays with geometry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, read_label
from medssl.data.layouts import Case
from medssl.errors import MedsslError


@dataclass
class LoadedCase:
    """A case in memory.

    Attributes:
        case_id: the case's stem.
        image: ``(C, *spatial)`` float32.
        meta: geometry of the (first) image file.
        label: ``(*spatial)`` int64 label map, or None.
        structures: ``(S, *spatial)`` bool, one binary mask per structure, or None.
    """

    case_id: str
    image: np.ndarray
    meta: ImageMeta
    label: np.ndarray | None = None
    structures: np.ndarray | None = None


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


def load_case(case: Case, structures: list[str] | None = None) -> LoadedCase:
    """Read a case's image channels and, if present, its label map or structure masks."""
    image, meta = load_image_channels(case.images)
    loaded = LoadedCase(case.case_id, image, meta)
    if case.label is not None:
        label, _ = read_label(case.label)
        _check_shape(label.shape, image, case.label)
        loaded.label = label
    if case.structures:
        names = structures or sorted(case.structures)
        masks = []
        for name in names:
            path = case.structures.get(name)
            if path is None:
                raise MedsslError(f"case {case.case_id} has no mask for structure {name!r}")
            m, _ = read_label(path)
            _check_shape(m.shape, image, path)
            masks.append(m > 0)
        loaded.structures = np.stack(masks)
    return loaded


def _check_shape(shape: tuple[int, ...], image: np.ndarray, path: Path) -> None:
    if tuple(shape) != tuple(image.shape[1:]):
        raise MedsslError(f"{path}: mask shape {tuple(shape)} differs from its image's {tuple(image.shape[1:])}")
