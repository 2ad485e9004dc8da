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
- ``"observers"``: ``images/`` + one folder per human observer (rater) + optionally a field-of-view folder, as
  DRIVE (``images/``, ``1st_manual/``, ``2nd_manual/``, ``mask/``) and STARE (``images/``, ``labels-ah/``,
  ``labels-vk/``, ``fov/``). Observer folders are named ``<n>st_manual``/``<n>nd_manual``/... , ``manual<x>``,
  ``labels-<x>``/``labels_<x>``, ``observer<x>``, ``rater<x>``, ``annotator<x>`` or ``grader<x>``. The label is the
  FIRST observer: ordered by the number in the name (``1st`` before ``2nd``), then by name (``labels-ah`` before
  ``labels-vk``); every observer's mask stays in ``Case.observers`` (for multi-rater use) and the folder names
  in ``DatasetIndex.observers``. Field-of-view folders (``fov``, ``roi``, ``field_of_view``, ``mask`` singular)
  go to ``Case.fov``: neither labels nor images. A mask matches an image by equal stem, the image stem plus a
  mask suffix, or else by the first ``_``/``-``-separated token when that token is unique on both sides
  (DRIVE's ``21_training.tif`` + ``21_manual1.gif`` + ``21_training_mask.gif``).
- ``"case-folders"``: one folder per case (BraTS): each holds the channel images, ONE label file named like a
  label (stem ``seg``, ``label``, ``labels``, ``segmentation``, ``gt``, ``truth``, ``OTMultiClass`` or ending
  in ``_seg``, ``-label``, ...) and optionally a brain/field-of-view mask (``brainmask``, ``brain_mask``,
  ``fov``, ``roi``), which is not an image. The channel files are ordered by channel name: the stem without
  a leading ``<case folder name>_``, alphabetically (BraTS 2015: ``Flair_subtrMeanDivStd``, then
  ``T1c_subtrMeanDivStd``); every case must have the same channel names (``DatasetIndex.channels``). Detected
  when the folder has no image of its own and at least half of its sub-folders are such case folders (the
  others are reported).
- ``"suffix"``: masks beside images with a suffix, ``x.tif`` + ``x_mask.tif`` (also ``_seg``, ``_label``).
- Split folders: a folder without images whose sub-folders are each a labelled dataset of one of the layouts
  above (DRIVE's ``training/`` + ``test/``, BraTS's ``train/`` + ``validation/`` + ``test/``) gives one index
  with their cases together (case ids must be unique), the layout of the parts, and ``DatasetIndex.parts``.
- ``"unlabelled"``: a folder of images or volumes (or DICOM series folders), searched one level deep. When the
  folder has an ``images/`` sub-folder only that one is used; a sub-folder that has its own ``images/``
  contributes that.

``Case``: ``case_id`` (stem; the folder name for case-folders), ``images`` (one path per channel file, usually
one), ``label`` (label-map path or None), ``structures`` (structure name -> binary mask path, for
paired-multilabel; else None), ``observers`` (observer folder name -> mask path, observers layout), ``fov``
(field-of-view or brain mask path, or None).

``DatasetIndex``: ``root``, ``layout``, ``cases`` (sorted by case_id), ``labels`` (declared value -> name
from dataset.json, or None when not declared), ``structures`` (sorted structure names for
paired-multilabel, else None), ``modality`` (dataset.json's first modality/channel name, e.g. "CT", "MRI",
or None), ``problems`` (human-readable strings found while pairing: image without mask, mask without image,
duplicate stems, structure sub-folder missing a mask, empty structure folder; each names the files, relative
to ``root``; they make ``finetune`` refuse the dataset), ``test_cases``, ``observers``, ``channels``, ``parts``
(see the layouts above), ``notes`` (facts worth telling that are not problems: which observer is the label,
the field-of-view masks, merged split folders) and ``unrecognised`` (files under ``root`` that no case uses
and that are neither a supported image nor a documentation file such as ``README.txt`` or ``dataset.json``,
e.g. ``case.nii.txt``; ``data check`` lists them). ``has_labels`` property: True when the cases carry labels
or structures.

``discover(path) -> DatasetIndex``: raises ``MedsslError`` when ``path`` is missing, is an empty folder, holds
no supported image, or no usable case could be formed (the message then lists the pairing problems). Other
pairing problems do not raise: they go into ``problems`` and the unpaired images are left out of ``cases`` for
labelled layouts. A single image file or DICOM series folder gives a one-case unlabelled index.

``scan_dataset(path) -> DatasetIndex``: like ``discover`` but returns an index without usable cases instead of
raising (``medssl.data.check`` reports the problems).

``discover_inputs(path) -> list[Path]``: the image inputs for prediction/segmentation: a single file, a DICOM
series folder, or every supported image (and DICOM series folder) in a folder (and its ``images/`` or
``imagesTs/`` sub-folder if the folder is a dataset root). Raises ``MedsslError`` when nothing is found, or
when the folder holds one folder per case (use ``discover_input_cases``).

``discover_input_cases(path) -> list[Case]``: like ``discover_inputs`` but one case per input, so that the
channel files of a case-folders case (or one such case folder) stay together as one multi-channel input.

``unrecognised_warning(index) -> str | None``: one line naming ``index.unrecognised`` (printed by ``finetune``).

Hidden files (names starting with ``.``, e.g. macOS ``._case.nii.gz`` in the MSD archives) are ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medssl.data.io import IMAGE_SUFFIXES, is_dicom_dir, is_image_path, stem
from medssl.errors import MedsslError

Layout = Literal["msd", "paired", "paired-multilabel", "observers", "case-folders", "suffix", "unlabelled"]
LAYOUTS: tuple[str, ...] = ("msd", "paired", "paired-multilabel", "observers", "case-folders", "suffix", "unlabelled")
MASK_SUFFIXES: tuple[str, ...] = ("_segmentation", "_label", "_mask", "_seg")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_RATER = r"(?:manual|observer|rater|annotator|grader)"
# Observer folders: "1st_manual", "2nd-observer", "manual1", "labels-ah", "rater_2"; group n is the number.
_OBSERVER_DIR = re.compile(
    rf"^(?:(?P<n>\d+)(?:st|nd|rd|th)?[_-]?{_RATER}|{_RATER}[_-]?(?P<m>\w+)|labels?[_-](?P<x>\w+))$", re.IGNORECASE
)
_FOV_DIR = re.compile(r"^(?:(?:fov|roi|field[_-]of[_-]view)(?:[_-]?masks?)?|mask)$", re.IGNORECASE)
# Files of a case folder (stem, case folder name removed): a label, a brain/field-of-view mask.
_LABEL_FILE = re.compile(
    r"^(?:.*[_-])?(?:seg|segmentation|label|labels|gt|truth|ground[_-]?truth|otmulticlass)$", re.IGNORECASE
)
_FOV_FILE = re.compile(r"^(?:.*[_-])?(?:brain[_-]?mask|fov|roi)$", re.IGNORECASE)
# Documentation and metadata that may sit beside the images without being mentioned.
_DOC_SUFFIXES = (".txt", ".md", ".rst", ".json", ".csv", ".tsv", ".pdf", ".xls", ".xlsx", ".html", ".yaml", ".yml")
_COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz")  # pixel data of .mhd / .nhdr headers
_MAX_LISTED = 8


@dataclass(frozen=True)
class Case:
    """One training/evaluation example.

    Args:
        case_id: the image's file stem (without a channel suffix ``_0000`` for nnU-Net data).
        images: one path per channel file (usually one; a DICOM series is one folder path).
        label: label-map path, or None.
        structures: structure name -> binary mask path (paired-multilabel), else None.
        observers: observer folder name -> mask path, every observer that drew this case (observers layout;
            ``label`` is the first observer's), else None.
        fov: field-of-view or brain mask path (not a label, not an image), or None.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    structures: dict[str, Path] | None = None
    observers: dict[str, Path] | None = None
    fov: Path | None = None

    def files(self) -> list[Path]:
        """Every file (or DICOM folder) the case uses: images, label, structure and observer masks, fov."""
        extra = [*(self.structures or {}).values(), *(self.observers or {}).values()]
        return [*self.images, *([self.label] if self.label else []), *extra, *([self.fov] if self.fov else [])]


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
        observers: observer folder names, the label's first (observers layout), else None.
        channels: channel names of every case (case-folders), else None.
        parts: the split sub-folders whose cases were merged (e.g. ``["test", "training"]``), else empty.
        notes: facts worth telling that are not problems (which observer is the label, fov masks, parts).
        unrecognised: files under ``root`` that no case uses and that are neither a supported image nor
            documentation (e.g. ``case.nii.txt``), sorted.
    """

    root: Path
    layout: str
    cases: list[Case]
    labels: dict[int, str] | None = None
    structures: list[str] | None = None
    modality: str | None = None
    problems: list[str] = field(default_factory=list)
    test_cases: list[Case] = field(default_factory=list)
    observers: list[str] | None = None
    channels: list[str] | None = None
    parts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unrecognised: list[Path] = field(default_factory=list)

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


# ------------------------------------------------------------------------------------------------- observers


def _observer_dirs(root: Path) -> list[Path]:
    """Observer folders of ``root``, the label's first: by the number in the name, then by name."""
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


# ---------------------------------------------------------------------------------------------- case folders


def _channel_name(path: Path, case_id: str) -> str:
    """A case folder file's stem without a leading ``<case_id>_`` (BraTS 2018: ``<case>_flair``)."""
    name = stem(path)
    return name[len(case_id) + 1 :] if name.startswith(case_id) and len(name) > len(case_id) + 1 else name


def _split_case_folder(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(channel images, label-named files, fov-named files) of one case folder; channels by channel name."""
    files = _image_entries(folder)
    labels = [p for p in files if _LABEL_FILE.match(_channel_name(p, folder.name))]
    fovs = [p for p in files if p not in labels and _FOV_FILE.match(_channel_name(p, folder.name))]
    images = sorted(
        (p for p in files if p not in labels and p not in fovs), key=lambda p: _channel_name(p, folder.name)
    )
    return images, labels, fovs


def _is_case_folder(folder: Path) -> bool:
    """A folder holding channel images and exactly one label-named file (BraTS)."""
    if not folder.is_dir() or is_dicom_dir(folder):
        return False
    images, labels, _ = _split_case_folder(folder)
    return bool(images) and len(labels) == 1


def _sub_dirs(root: Path) -> list[Path]:
    return [p for p in _visible(root) if p.is_dir() and not is_dicom_dir(p)]


def _discover_case_folders(root: Path, require_label: bool = True) -> DatasetIndex:
    problems: list[str] = []
    found: list[tuple[Path, list[Path], Path | None, Path | None]] = []
    for folder in _sub_dirs(root):
        images, labels, fovs = _split_case_folder(folder)
        if not images or (require_label and len(labels) != 1) or len(labels) > 1:
            what = "no label file" if not labels else f"{len(labels)} label files" if len(labels) > 1 else ""
            problems.append(
                f"{_rel(folder, root)}: not a case folder ({what or 'no image'}; expected channel images and one "
                "label file named like seg, label or OTMultiClass) (left out)"
            )
            continue
        found.append((folder, images, labels[0] if labels else None, fovs[0] if fovs else None))
    names = Counter(tuple(_channel_name(p, f.name) for p in imgs) for f, imgs, _, _ in found)
    channels = list(max(names.items(), key=lambda kv: (kv[1], kv[0]))[0]) if names else []
    cases = []
    for folder, images, label, fov in found:
        have = [_channel_name(p, folder.name) for p in images]
        if have != channels:
            problems.append(
                f"{_rel(folder, root)}: channel files {', '.join(have)} differ from most cases' "
                f"{', '.join(channels)} (left out)"
            )
            continue
        cases.append(Case(folder.name, tuple(images), label, fov=fov))
    notes = [f"channels (one file each, in this order): {', '.join(channels)}"] if channels else []
    fov_names = sorted({_channel_name(c.fov, c.case_id) for c in cases if c.fov})
    if fov_names:
        notes.append(f"brain/field-of-view masks ({', '.join(fov_names)}): not used as labels or images")
    return DatasetIndex(
        root=root, layout="case-folders", cases=_sorted_cases(cases), channels=channels, problems=problems, notes=notes
    )


# ------------------------------------------------------------------------------------------- split folders


def _discover_split(root: Path) -> DatasetIndex:
    """Merge the labelled sub-folders of ``root`` (``training/`` + ``test/``); their problems name the part."""
    kinds = {sub: _kind(sub, nested=True) for sub in _sub_dirs(root)}
    parts = {sub.name: _DISCOVERERS[kind](sub) for sub, kind in kinds.items() if kind != "unlabelled"}
    layouts = sorted({index.layout for index in parts.values()})
    problems: list[str] = []
    if len(layouts) > 1:
        shown = ", ".join(f"{k}/: {v.layout}" for k, v in parts.items())
        problems.append(f"sub-folders have different layouts ({shown}); use one layout for all")
    channels = {tuple(index.channels or ()) for index in parts.values()}
    if len(channels) > 1:
        shown = "; ".join(f"{k}/: {', '.join(v.channels or [])}" for k, v in parts.items())
        problems.append(f"sub-folders have different channel files ({shown})")
    seen: dict[str, str] = {}
    cases: list[Case] = []
    counts = ", ".join(f"{k}/ ({len(v.cases)})" for k, v in parts.items())
    notes = [f"cases of the sub-folders together: {counts} (finetune splits them anew; to keep these parts, --split)"]
    where: dict[str, list[str]] = {}  # a note shared by every part is said once
    for name, index in parts.items():
        problems.extend(f"{name}/: {p}" for p in index.problems)
        for note in index.notes:
            where.setdefault(note, []).append(name)
    notes += [
        n if len(names) == len(parts) else f"{', '.join(f'{k}/' for k in names)}: {n}" for n, names in where.items()
    ]
    for name, index in parts.items():
        for case in index.cases:
            if case.case_id in seen:
                problems.append(
                    f"case {case.case_id!r} is in {seen[case.case_id]}/ and in {name}/ (left out of {name}/)"
                )
                continue
            seen[case.case_id] = name
            cases.append(case)
    first = next(iter(parts.values()))
    return DatasetIndex(
        root=root,
        layout=first.layout,
        cases=_sorted_cases(cases),
        labels=first.labels,
        structures=first.structures,
        observers=list(dict.fromkeys(o for i in parts.values() for o in i.observers or [])) or None,
        channels=first.channels,
        parts=list(parts),
        problems=problems,
        notes=notes,
    )


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


def _kind(root: Path, nested: bool = False) -> str:
    """The layout of ``root``, or ``"split"`` for labelled sub-folders (not looked for when ``nested``)."""
    if (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        masks = root / "masks"
        if _image_entries(masks) or not _structure_dirs(masks):
            return "paired"
        return "paired-multilabel"
    if (root / "images").is_dir() and _observer_dirs(root):
        return "observers"
    direct = _image_entries(root)
    subs = _sub_dirs(root)
    if not direct and subs and 2 * sum(_is_case_folder(p) for p in subs) >= len(subs):
        return "case-folders"
    if any(p.is_file() and _mask_base(stem(p)) is not None for p in direct):
        return "suffix"
    if not nested and not direct and any(_kind(p, nested=True) != "unlabelled" for p in subs):
        return "split"
    return "unlabelled"


def detect_layout(root: Path) -> str:
    """The layout name of an existing, non-empty dataset folder (see the module documentation); for split
    folders, the layout of the labelled sub-folders."""
    kind = _kind(root)
    return _discover_split(root).layout if kind == "split" else kind


_DISCOVERERS = {
    "msd": _discover_msd,
    "paired": _discover_paired,
    "paired-multilabel": _discover_multilabel,
    "observers": _discover_observers,
    "case-folders": _discover_case_folders,
    "suffix": _discover_suffix,
    "split": _discover_split,
    "unlabelled": _discover_unlabelled,
}


def _unrecognised(index: DatasetIndex, max_depth: int = 4) -> list[Path]:
    """Files under ``index.root`` that no case uses and that are neither a supported image nor documentation."""
    root = index.root
    if not root.is_dir():
        return []
    used = {p for case in [*index.cases, *index.test_cases] for p in case.files()}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        depth = len(folder.relative_to(root).parts)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and depth < max_depth and not is_dicom_dir(folder / d)
        )
        for name in sorted(filenames):
            path = folder / name
            if name.startswith(".") or path in used or is_image_path(path):
                continue
            lower = name.lower()
            doc = next((s for s in _DOC_SUFFIXES if lower.endswith(s)), None)
            # "case.nii.txt" is an image name with a wrong ending, not documentation.
            if doc is not None and not any(lower[: -len(doc)].endswith(s) for s in IMAGE_SUFFIXES):
                continue
            if lower.endswith(_COMPANION_SUFFIXES):
                continue
            out.append(path)
    return sorted(out)


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
    index = _DISCOVERERS[_kind(root)](root)
    index.unrecognised = _unrecognised(index)
    return index


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


def unrecognised_warning(index: DatasetIndex) -> str | None:
    """One line naming the files of ``index.unrecognised`` (what ``medssl data check`` lists), or None."""
    if not index.unrecognised:
        return None
    names = [_rel(p, index.root) for p in index.unrecognised]
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"ignored {len(names)} file(s) that are not supported images: {', '.join(names[:_MAX_LISTED])}{more}"


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
        folders = _input_case_folders(p)
        if folders:
            raise MedsslError(
                f"{p} holds one folder per case ({len(folders)} case folder(s), e.g. {_rel(folders[0], p)} with "
                f"{', '.join(f.name for f in _split_case_folder(folders[0])[0])}): `medssl predict` reads each "
                "case's files as the channels of one input; commands that take single images need an image file"
            )
        raise MedsslError(
            f"no image found in {p} (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM series folders, also in "
            "its images/ and imagesTs/ sub-folders)"
        )
    return sorted(found)


def _is_input_case_folder(folder: Path) -> bool:
    """A case folder for prediction: channel images beside a label or brain/field-of-view mask (BraTS)."""
    if not folder.is_dir() or is_dicom_dir(folder):
        return False
    images, labels, fovs = _split_case_folder(folder)
    return bool(images) and len(labels) <= 1 and bool(labels or fovs)


def _input_case_folders(root: Path) -> list[Path]:
    """The case folders under ``root`` (without images of its own): its sub-folders, or theirs (split folders)."""
    if _image_entries(root):
        return []
    subs = _sub_dirs(root)
    direct = [p for p in subs if _is_input_case_folder(p)]
    if direct:
        return direct
    return [p for sub in subs if not _image_entries(sub) for p in _sub_dirs(sub) if _is_input_case_folder(p)]


def discover_input_cases(path: str | Path) -> list[Case]:
    """The inputs to predict on, one case each: like ``discover_inputs``, but a folder of case folders (BraTS, see
    the case-folders layout; also split into ``train/``, ``test/``, ...) or one case folder gives one case per
    folder whose channel files (without the label and brain/field-of-view masks) form one multi-channel input.

    Args:
        path: an image file, a DICOM series folder, a folder of images, a case folder or a folder of them.

    Returns:
        Cases (``images`` only; ``label`` and ``fov`` are left out), sorted by ``case_id``; for single images the
        ``case_id`` is the file stem, for case folders the folder name.

    Raises:
        MedsslError: ``path`` is missing, unsupported, holds no image, or case folders differ in their channel
            files or share a name.
    """
    p = Path(path)
    if p.is_dir() and _is_input_case_folder(p):
        return [Case(p.name, tuple(_split_case_folder(p)[0]))]
    folders = _input_case_folders(p) if p.is_dir() and not is_dicom_dir(p) else []
    if not folders:
        return [Case(stem(x), (x,)) for x in discover_inputs(p)]
    cases: dict[str, Case] = {}
    channels: dict[tuple[str, ...], Path] = {}
    for folder in folders:
        images = _split_case_folder(folder)[0]
        channels.setdefault(tuple(_channel_name(x, folder.name) for x in images), folder)
        if folder.name in cases:
            raise MedsslError(f"two case folders are named {folder.name!r} in {p}: {_rel(folder, p)} and another")
        cases[folder.name] = Case(folder.name, tuple(images))
    if len(channels) > 1:
        shown = "; ".join(f"{_rel(f, p)}: {', '.join(names)}" for names, f in channels.items())
        raise MedsslError(f"the case folders in {p} hold different channel files ({shown}); give every case the same")
    return _sorted_cases(cases.values())
