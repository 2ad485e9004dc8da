"""Finding the cases of a dataset on disk, whatever its layout.

Supported layouts, detected in this order:
- ``"msd"``: Medical Segmentation Decathlon / nnU-Net folder with ``imagesTr/``, ``dataset.json`` and
  (optionally) ``labelsTr/``; MSD style (``case.nii.gz``, 4D for several modalities) and nnU-Net style
  (``case_0000.nii.gz``, ``case_0001.nii.gz``; ``channel_names``/``labels`` name->value, ``file_ending``).
  ``imagesTs/`` cases (no labels) are listed in ``DatasetIndex.test_cases``. A missing ``dataset.json`` is
  reported as a problem (labels then stay undeclared).
- ``"paired"``: ``images/`` + ``masks/`` holding mask files, matched by file stem (suffixes may differ, e.g.
  .jpg + .png; a mask may also carry a ``_mask``/``_seg``/``_label``/``_segmentation`` suffix).
- ``"paired-multilabel"``: ``images/`` + ``masks/<structure>/`` sub-folders, one binary mask per structure
  per image (overlapping structures, e.g. JSRT lungs/heart/clavicles).
- ``"suffix"``: masks beside images with a suffix, ``x.tif`` + ``x_mask.tif`` (also ``_seg``, ``_label``).
- ``"unlabelled"``: a folder of images or volumes (or DICOM series folders), searched one level deep. When the
  folder has an ``images/`` sub-folder only that one is used; a sub-folder that has its own ``images/``
  contributes that (so the original DRIVE layout gives its ``training/images`` and ``test/images``).

``Case``: ``case_id`` (stem), ``images`` (one path per channel file, usually one), ``label`` (label-map
path or None), ``structures`` (structure name -> binary mask path, for paired-multilabel; else None).

``DatasetIndex``: ``root``, ``layout``, ``cases`` (sorted by case_id), ``labels`` (declared value -> name
from dataset.json, or None when not declared), ``structures`` (sorted structure names for
paired-multilabel, else None), ``modality`` (dataset.json's first modality/channel name, e.g. "CT", "MRI",
or None), ``problems`` (human-readable strings found while pairing: image without mask, mask without image,
duplicate stems, structure sub-folder missing a mask, empty structure folder; each names the files, relative
to ``root``), ``test_cases``. ``has_labels`` property: True when the cases carry labels or structures.

``discover(path) -> DatasetIndex``: raises ``MedsslError`` when ``path`` is missing, is an empty folder, holds
no supported image, or no usable case could be formed (the message then lists the pairing problems). Other
pairing problems do not raise: they go into ``problems`` and the unpaired images are left out of ``cases`` for
labelled layouts. A single image file or DICOM series folder gives a one-case unlabelled index.

``scan_dataset(path) -> DatasetIndex``: like ``discover`` but returns an index without usable cases instead of
raising (``medssl.data.check`` reports the problems).

``discover_inputs(path) -> list[Path]``: the image inputs for prediction/segmentation: a single file, a DICOM
series folder, or every supported image (and DICOM series folder) in a folder (and its ``images/`` or
``imagesTs/`` sub-folder if the folder is a dataset root). Raises ``MedsslError`` when nothing is found.

Hidden files (names starting with ``.``, e.g. macOS ``._case.nii.gz`` in the MSD archives) are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medssl.data.io import IMAGE_SUFFIXES, is_dicom_dir, is_image_path, stem
from medssl.errors import MedsslError

Layout = Literal["msd", "paired", "paired-multilabel", "suffix", "unlabelled"]
LAYOUTS: tuple[str, ...] = ("msd", "paired", "paired-multilabel", "suffix", "unlabelled")
MASK_SUFFIXES: tuple[str, ...] = ("_segmentation", "_label", "_mask", "_seg")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_MAX_LISTED = 8


@dataclass(frozen=True)
class Case:
    """One training/evaluation example.

    Args:
        case_id: the image's file stem (without a channel suffix ``_0000`` for nnU-Net data).
        images: one path per channel file (usually one; a DICOM series is one folder path).
        label: label-map path, or None.
        structures: structure name -> binary mask path (paired-multilabel), else None.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    structures: dict[str, Path] | None = None


@dataclass
class DatasetIndex:
    """What ``discover`` found in a dataset folder.

    Args:
        root: the dataset folder.
        layout: one of ``LAYOUTS``.
        cases: usable cases, sorted by ``case_id``.
        labels: declared label value -> name (dataset.json), or None when not declared.
        structures: sorted structure names (paired-multilabel), else None.
        modality: first modality/channel name from dataset.json, or None.
        problems: pairing problems, each naming the files (relative to ``root``).
        test_cases: unlabelled ``imagesTs/`` cases (msd), sorted by ``case_id``.
    """

    root: Path
    layout: str
    cases: list[Case]
    labels: dict[int, str] | None = None
    structures: list[str] | None = None
    modality: str | None = None
    problems: list[str] = field(default_factory=list)
    test_cases: list[Case] = field(default_factory=list)

    @property
    def has_labels(self) -> bool:
        """True when the cases carry label maps or structure masks."""
        return any(c.label is not None or bool(c.structures) for c in self.cases)


# --------------------------------------------------------------------------------------------------- helpers


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


def _match_masks(
    images: dict[str, Path], masks: dict[str, Path], root: Path, mask_dir: str, problems: list[str]
) -> dict[str, Path]:
    """Image stem -> mask path, by equal stem or mask stem = image stem + a mask suffix; reports the unpaired."""
    used: set[str] = set()
    pairs: dict[str, Path] = {}
    for key, img in images.items():
        found = next((k for k in (key, *(key + s for s in MASK_SUFFIXES)) if k in masks and k not in used), None)
        if found is None:
            problems.append(f"image without mask: {_rel(img, root)} (nothing matching {key!r} in {mask_dir})")
            continue
        used.add(found)
        pairs[key] = masks[found]
    problems.extend(f"mask without image: {_rel(masks[k], root)}" for k in sorted(set(masks) - used))
    return pairs


def _sorted_cases(cases: Iterable[Case]) -> list[Case]:
    return sorted(cases, key=lambda c: c.case_id)


# ------------------------------------------------------------------------------------------------------- msd


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


# -------------------------------------------------------------------------------------------- paired layouts


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


# ------------------------------------------------------------------------------------------------ unlabelled


def _unlabelled_entries(root: Path) -> list[Path]:
    """Images in ``root`` (or only its ``images/``) and one level deep (a sub-folder's ``images/`` if present)."""
    if (root / "images").is_dir():
        return _image_entries(root / "images")
    found = _image_entries(root)
    for sub in _visible(root):
        if sub.is_dir() and not is_dicom_dir(sub):
            found += _image_entries(sub / "images" if (sub / "images").is_dir() else sub)
    return found


def _discover_unlabelled(root: Path) -> DatasetIndex:
    problems: list[str] = []
    images = _by_stem(_unlabelled_entries(root), root, problems, keep_first=True)
    cases = [Case(k, (p,)) for k, p in images.items()]
    return DatasetIndex(root=root, layout="unlabelled", cases=_sorted_cases(cases), problems=problems)


# ---------------------------------------------------------------------------------------------------- public


def detect_layout(root: Path) -> str:
    """The layout name of an existing, non-empty dataset folder (see the module documentation)."""
    if (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        masks = root / "masks"
        if _image_entries(masks) or not _structure_dirs(masks):
            return "paired"
        return "paired-multilabel"
    if any(p.is_file() and _mask_base(stem(p)) is not None for p in _image_entries(root)):
        return "suffix"
    return "unlabelled"


_DISCOVERERS = {
    "msd": _discover_msd,
    "paired": _discover_paired,
    "paired-multilabel": _discover_multilabel,
    "suffix": _discover_suffix,
    "unlabelled": _discover_unlabelled,
}


def scan_dataset(path: str | Path) -> DatasetIndex:
    """Like ``discover`` but returns an index without usable cases instead of raising (used by ``check``).

    Args:
        path: a dataset folder, image file or DICOM series folder.

    Returns:
        The dataset index, possibly with no case.

    Raises:
        MedsslError: ``path`` is missing, an empty folder, or an unsupported file.
    """
    root = Path(path)
    if not root.exists():
        raise MedsslError(f"{root} does not exist")
    if root.is_file() or is_dicom_dir(root):
        if not is_image_path(root):
            raise MedsslError(f"{root} is not a supported image (supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folder)")
        return DatasetIndex(root=root, layout="unlabelled", cases=[Case(stem(root), (root,))])
    if not _visible(root):
        raise MedsslError(f"{root} is an empty folder")
    return _DISCOVERERS[detect_layout(root)](root)


def discover(path: str | Path) -> DatasetIndex:
    """Find the cases of the dataset at ``path``.

    Args:
        path: a dataset folder (or a single image file / DICOM series folder).

    Returns:
        The dataset index; pairing problems are in ``problems`` and the unpaired images left out of ``cases``.

    Raises:
        MedsslError: ``path`` is missing, an empty folder, holds no supported image, or no usable case.
    """
    index = scan_dataset(path)
    if index.cases or index.test_cases:
        return index
    if not index.problems:
        raise MedsslError(
            f"{index.root} holds no supported image (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series "
            f"folders; detected layout {index.layout!r})"
        )
    shown = index.problems[:_MAX_LISTED]
    more = f"\n  ... and {len(index.problems) - len(shown)} more" if len(index.problems) > len(shown) else ""
    raise MedsslError(f"no usable case in {index.root} (layout {index.layout!r}):\n  " + "\n  ".join(shown) + more)


def discover_inputs(path: str | Path) -> list[Path]:
    """The images to predict on: a file, a DICOM series folder, or the images in a folder.

    Args:
        path: an image file, a DICOM series folder, or a folder of images / DICOM series folders; for a dataset
            root, its ``images/`` and ``imagesTs/`` sub-folders are searched too.

    Returns:
        Sorted image paths (files and DICOM series folders).

    Raises:
        MedsslError: ``path`` is missing, unsupported, or holds no image.
    """
    p = Path(path)
    if not p.exists():
        raise MedsslError(f"{p} does not exist")
    if p.is_file() or is_dicom_dir(p):
        if not is_image_path(p):
            raise MedsslError(f"{p} is not a supported image (supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folder)")
        return [p]
    found = _image_entries(p)
    for sub in ("images", "imagesTs"):
        found += _image_entries(p / sub)
    if not found:
        raise MedsslError(
            f"no image found in {p} (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series folders, also in "
            "its images/ and imagesTs/ sub-folders)"
        )
    return sorted(found)
