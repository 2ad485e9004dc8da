"""The Medical Segmentation Decathlon / nnU-Net layout: ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, dataset.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medssl.data.io import stem
from medssl.data.layouts.index import Case, DatasetIndex
from medssl.data.layouts.pairing import _MAX_LISTED, _by_stem, _image_entries, _match_masks, _rel, _sorted_cases
from medssl.errors import MedsslError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _read_dataset_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedsslError(f"cannot read {path}: {exc}") from exc
    if not isinstance(meta, dict):
        raise MedsslError(f"{path}: expected a JSON object at the top level")
    return meta


def _declared_labels(meta: dict[str, Any], path: Path) -> dict[int, str] | None:
    """Value -> name from MSD ``{"0": "background"}`` or nnU-Net ``{"background": 0}`` (or region lists)."""
    raw = meta.get("labels")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MedsslError(f"{path}: 'labels' must be an object, got {type(raw).__name__}")
    out: dict[int, str] = {}
    try:
        if all(re.fullmatch(r"-?\d+", str(k)) for k in raw):
            return {int(k): str(v) for k, v in raw.items()}
        for name, value in raw.items():
            for v in value if isinstance(value, list | tuple) else [value]:
                out.setdefault(int(v), str(name))  # nnU-Net regions share values: keep the first name
    except (TypeError, ValueError) as exc:
        raise MedsslError(f"{path}: 'labels' values must be integers ({exc})") from exc
    return dict(sorted(out.items()))


def _channel_names(meta: dict[str, Any]) -> list[str]:
    raw = meta.get("channel_names", meta.get("modality"))
    if isinstance(raw, dict):
        keys = sorted(raw, key=lambda k: int(k) if str(k).isdigit() else 0)
        return [str(raw[k]) for k in keys]
    if isinstance(raw, str):
        return [raw]
    return []


def _msd_files(folder: Path, ending: str | None) -> list[Path]:
    files = _image_entries(folder)
    return [p for p in files if p.name.lower().endswith(ending.lower())] if ending else files


def _is_nnunet(files: list[Path], meta: dict[str, Any], n_channels: int) -> bool:
    """nnU-Net naming (``case_0000``) when declared by ``channel_names`` or the channel indices say so."""
    if "channel_names" in meta:
        return True
    matches = [_CHANNEL.match(stem(p)) for p in files]
    if not files or not all(matches):
        return False
    channels = {m.group("channel") for m in matches if m}
    return channels == {f"{i:04d}" for i in range(max(n_channels, 1))}


def _msd_cases(
    folder: Path, root: Path, nnunet: bool, n_channels: int, files: list[Path], problems: list[str]
) -> dict[str, tuple[Path, ...]]:
    """Case id -> channel files of one ``imagesTr``/``imagesTs`` folder."""
    if not nnunet:
        return {k: (p,) for k, p in _by_stem(files, root, problems).items()}
    groups: dict[str, dict[int, Path]] = {}
    for p in files:
        m = _CHANNEL.match(stem(p))
        if m is None:
            problems.append(f"{_rel(p, root)}: name lacks the channel suffix _0000 (left out)")
            continue
        groups.setdefault(m.group("case"), {})[int(m.group("channel"))] = p
    expected = max(n_channels, max((max(g) + 1 for g in groups.values()), default=1))
    out: dict[str, tuple[Path, ...]] = {}
    for case_id, chans in groups.items():
        missing = [f"_{c:04d}" for c in range(expected) if c not in chans]
        if missing:
            problems.append(
                f"case {case_id!r} in {_rel(folder, root)} lacks channel file(s) {', '.join(missing)} (left out)"
            )
            continue
        out[case_id] = tuple(chans[c] for c in range(expected))
    return out


def _discover_msd(root: Path) -> DatasetIndex:
    problems: list[str] = []
    json_path = root / "dataset.json"
    meta: dict[str, Any] = {}
    if json_path.is_file():
        meta = _read_dataset_json(json_path)
    else:
        problems.append("dataset.json not found: label values are not declared and cannot be checked")
    channels = _channel_names(meta)
    ending = meta.get("file_ending") if isinstance(meta.get("file_ending"), str) else None
    train_files = _msd_files(root / "imagesTr", ending)
    test_files = _msd_files(root / "imagesTs", ending)
    nnunet = _is_nnunet(train_files or test_files, meta, len(channels))
    train = _msd_cases(root / "imagesTr", root, nnunet, len(channels), train_files, problems)
    test = _msd_cases(root / "imagesTs", root, nnunet, len(channels), test_files, problems)
    labels_dir = root / "labelsTr"
    if labels_dir.is_dir():
        label_map = _by_stem(_msd_files(labels_dir, ending), root, problems)
        first = {k: v[0] for k, v in train.items()}
        pairs = _match_masks(first, label_map, root, "labelsTr/", problems)
        cases = [Case(k, train[k], pairs[k]) for k in pairs]
    else:
        cases = [Case(k, v) for k, v in train.items()]
    _check_listed(meta, root, problems)
    return DatasetIndex(
        root=root,
        layout="msd",
        cases=_sorted_cases(cases),
        labels=_declared_labels(meta, json_path),
        modality=channels[0] if channels else None,
        problems=problems,
        test_cases=_sorted_cases(Case(k, v) for k, v in test.items()),
    )


def _check_listed(meta: dict[str, Any], root: Path, problems: list[str]) -> None:
    """Files listed in dataset.json's ``training`` section that are not on disk."""
    entries = meta.get("training")
    if not isinstance(entries, list):
        return
    missing = []
    for entry in entries:
        for key in ("image", "label"):
            name = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(name, str) and not (root / name).exists():
                missing.append(name)
    if missing:
        shown = ", ".join(missing[:_MAX_LISTED]) + (
            f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        )
        problems.append(f"dataset.json lists {len(missing)} file(s) that do not exist: {shown}")
