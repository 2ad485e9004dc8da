"""The result of finding a dataset's cases: ``Case`` (one example's files) and ``DatasetIndex`` (all of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Layout = Literal["msd", "paired", "paired-multilabel", "observers", "case-folders", "suffix", "unlabelled"]
LAYOUTS: tuple[str, ...] = ("msd", "paired", "paired-multilabel", "observers", "case-folders", "suffix", "unlabelled")


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
        annotated: the structures this case annotates, sorted, when a declaration (``annotations.json`` of a
            paired-multilabel dataset) says it annotates only some; None: every structure. ``structures`` then
            holds the masks of these structures only.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    structures: dict[str, Path] | None = None
    observers: dict[str, Path] | None = None
    fov: Path | None = None
    annotated: tuple[str, ...] | None = None

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

    @property
    def partially_annotated(self) -> bool:
        """True when some case annotates only some of the structures (``Case.annotated``)."""
        return any(c.annotated is not None for c in self.cases)
