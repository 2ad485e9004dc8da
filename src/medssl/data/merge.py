"""Several partially labelled dataset folders as one training set, structures matched by name (``merge_datasets``).

Each source folder is discovered (``medssl.data.layouts.discover``, any labelled layout) and the merged folder is
written as ONE paired-multilabel dataset that the rest of medssl reads: ``images/``, ``masks/<structure>/`` (one
binary mask per case and structure it annotates) and ``annotations.json`` (which structures each case
annotates), plus ``merge.json`` (the sources; see ``merge_record``).

- Structure names come from the sources: the ``masks/<structure>/`` folder names of a paired-multilabel folder,
  the ``labels`` of ``dataset.json`` for label maps (msd, or any label-map layout with a ``dataset.json`` at its
  root; value 0 is background). Label maps that name nothing are refused (declare them in ``dataset.json``).
- Names are matched after normalising: lower case, every run of spaces, hyphens and underscores as one ``_``
  (``"Left Lung"``, ``"left-lung"`` and ``"left_lung"`` are the structure ``left_lung``); the merged folder uses
  these normalised names.
- Images and the masks of paired-multilabel sources are symbolic links to the source files (copies where links
  cannot be made). A label map gives one binary mask (0/1) per declared structure, ``label == value``, written
  with the label's geometry (a single declared structure takes every nonzero value, so 0/255 masks work); a case
  of several channel files is written as one multi-channel image. Field-of-view masks and other observers are
  not carried over.
- ``annotations.json`` names the cases that annotate only some of the merged structures; the cases of a source
  that labels every merged structure are left out of it (fully annotated). An empty mask of an annotated
  structure is fine: the structure is absent from that case.
- Case ids are kept when unique across the folders; an id found in several folders becomes
  ``<folder name>_<id>`` in each of them (refused if that still collides, e.g. two folders of the same name).
- Refused with ``MedsslError``: a source with problems (``medssl data check``), without labels, with undeclared
  label values; 2D mixed with 3D, or different channel counts (naming the folders); an existing ``out`` without
  ``overwrite``, and with ``overwrite`` one that ``merge_datasets`` did not write.
- ``out`` is written as ``<out>.tmp-<random>`` and renamed when complete, so a half-written folder never has the
  name of a finished one.

``merged_for_run(folders, run, ...)`` gives ``finetune`` its merged folder beside the run folder, reused when it
was merged from the same, unchanged folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.progress import track

from medssl import __version__
from medssl.data.geometry import ImageMeta
from medssl.data.io import image_suffix, read_image, read_label, write_image
from medssl.data.layouts import Case, DatasetIndex, discover
from medssl.data.layouts.msd import _declared_labels, _read_dataset_json
from medssl.data.layouts.paired import ANNOTATIONS
from medssl.engine.run_folder import check_output_location
from medssl.errors import MedsslError

RECORD = "merge.json"
"""The file at the root of a merged folder that records its sources."""
RUN_SUFFIX = "-data-merged"
"""``finetune`` with several ``--data`` folders merges them into ``<run folder>-data-merged`` beside the run."""
_LOSSLESS = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".tif", ".tiff", ".bmp")
T = TypeVar("T")


def structure_key(name: str) -> str:
    """The merged spelling of a structure name: lower case, runs of spaces/hyphens/underscores (and slashes, which
    cannot be in a folder name) as one ``_``, no leading or trailing ``_`` or ``.``."""
    return re.sub(r"[\s_\-/\\]+", "_", name.strip().lower()).strip("_.")


@dataclass
class _Source:
    """One source folder: its index and how its structures and case ids are named in the merged folder."""

    index: DatasetIndex
    names: dict[str, str]  # source structure name -> merged name
    values: dict[int, str]  # label value -> merged name (label maps; empty for paired-multilabel)
    dims: int
    channels: int
    ids: dict[str, str] = field(default_factory=dict)  # source case id -> merged case id

    @property
    def structures(self) -> list[str]:
        return sorted(self.names.values())


def merge_datasets(
    folders: Sequence[str | Path], out: str | Path, *, overwrite: bool = False, quiet: bool = False
) -> DatasetIndex:
    """Merge labelled dataset folders into one paired-multilabel dataset ``out`` (see the module docstring).

    Args:
        folders: the source dataset folders, any labelled layout.
        out: the merged folder to write.
        overwrite: replace an existing ``out`` written by ``merge_datasets``.
        quiet: no progress bar.

    Returns:
        ``discover(out)``: the merged dataset.

    Raises:
        MedsslError: no or repeated folders, a source that cannot be merged, incompatible sources, or an ``out``
            that may not be written (see the module docstring).
    """
    paths = _distinct(folders)
    target = Path(out)
    _check_out(target, paths, overwrite)
    return _write(_sources(paths), target, _signature(paths), quiet)


def _distinct(folders: Sequence[str | Path]) -> list[Path]:
    paths = [Path(f) for f in folders]
    if not paths:
        raise MedsslError("give the dataset folders to merge")
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            also = "" if str(seen[p.resolve()]) == str(p) else f" (also as {seen[p.resolve()]})"
            raise MedsslError(f"{p} is given twice{also}; give each dataset folder once")
        seen[p.resolve()] = p
    return paths


def _check_out(out: Path, folders: list[Path], overwrite: bool) -> None:
    """Refuse an ``out`` inside (or holding) a source, or one that exists, unless ``overwrite`` and ours."""
    check_output_location(out, folders)
    if out.exists() and not out.is_dir():
        raise MedsslError(f"{out} exists and is not a folder; choose another output folder")
    if not out.exists() or not any(out.iterdir()):
        return
    if merge_record(out) is None:
        raise MedsslError(f"{out} is not empty and was not written by `medssl data merge`; choose another folder")
    if not overwrite:
        raise MedsslError(f"{out} already exists (a merged dataset); pass --overwrite to replace it")


def merge_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``merge.json`` of a merged folder: ``sources`` (one entry per folder: ``folder``, ``layout``, ``cases``,
    ``structures`` merged names, ``renamed`` source name -> merged name where they differ, ``prefixed`` case
    count), ``signature`` and ``medssl_version``; None when absent or unreadable."""
    try:
        record = json.loads((Path(folder) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sources"), list) else None


def _sources(folders: list[Path]) -> list[_Source]:
    """Each folder discovered and checked; structure names matched; compatibility checked; case ids assigned."""
    sources = [_source(f) for f in folders]
    if len({s.dims for s in sources}) > 1:
        shown = ", ".join(f"{s.index.root} ({s.dims}D)" for s in sources)
        raise MedsslError(f"cannot merge 2D and 3D data: {shown}; merge folders of one dimensionality")
    if len({s.channels for s in sources}) > 1:
        shown = ", ".join(f"{s.index.root} ({s.channels} channel(s))" for s in sources)
        raise MedsslError(f"cannot merge images with different channel counts: {shown}")
    _assign_ids(sources)
    return sources


def _source(folder: Path) -> _Source:
    index = discover(folder)
    if index.problems:
        more = f" (and {len(index.problems) - 1} more)" if len(index.problems) > 1 else ""
        raise MedsslError(
            f"{folder} has problems, run `medssl data check {folder}`: {index.problems[0]}{more}".replace("\n", " ")
        )
    if not index.has_labels:
        raise MedsslError(f"{folder} ({index.layout} layout) has no labels; merge takes labelled dataset folders")
    first = index.cases[0]
    arrays = [read_image(p)[0] for p in first.images]
    dims, channels = arrays[0].ndim - 1, sum(a.shape[0] for a in arrays)
    if index.structures is not None:
        return _Source(index, _merged_names(folder, index.structures), {}, dims, channels)
    labels = index.labels if index.labels is not None else _root_labels(folder)
    foreground = {v: name for v, name in (labels or {}).items() if v != 0}
    if not foreground:
        raise MedsslError(
            f"{folder}: its label maps do not name their structures; declare them in {folder / 'dataset.json'} "
            'as {"labels": {"0": "background", "1": "liver"}}'
        )
    names = _merged_names(folder, list(foreground.values()))
    return _Source(index, names, {v: names[n] for v, n in foreground.items()}, dims, channels)


def _root_labels(folder: Path) -> dict[int, str] | None:
    """The ``labels`` of a ``dataset.json`` at the root of a folder of another layout than msd."""
    path = folder / "dataset.json"
    return _declared_labels(_read_dataset_json(path), path) if path.is_file() else None


def _merged_names(folder: Path, names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        key = structure_key(name)
        if not key:
            raise MedsslError(f"{folder}: structure name {name!r} has no letters or digits; rename it")
        twin = next((n for n, k in out.items() if k == key), None)
        if twin is not None:
            raise MedsslError(f"{folder}: structures {twin!r} and {name!r} are one name ({key!r}); rename one")
        out[name] = key
    return out


def _assign_ids(sources: list[_Source]) -> None:
    """Keep unique case ids; an id in several folders becomes ``<folder name>_<id>`` in each."""
    counts: dict[str, int] = {}
    for s in sources:
        for case in s.index.cases:
            counts[case.case_id] = counts.get(case.case_id, 0) + 1
    owner: dict[str, Path] = {}
    for s in sources:
        for case in s.index.cases:
            new = case.case_id if counts[case.case_id] == 1 else f"{s.index.root.name}_{case.case_id}"
            if new in owner:
                raise MedsslError(
                    f"case id {new!r} of {s.index.root} is also in {owner[new]} (ids shared by several folders are "
                    "prefixed with the folder name); rename one of the folders or cases"
                )
            owner[new] = s.index.root
            s.ids[case.case_id] = new


def _signature(folders: list[Path]) -> str:
    """A hash of the sources' file names, sizes and modification times: whether a merge is still current."""
    digest = hashlib.sha256()
    for folder in folders:
        digest.update(str(folder.resolve()).encode())
        index = discover(folder)
        extra = [folder / name for name in ("dataset.json", ANNOTATIONS) if (folder / name).is_file()]
        for path in [*(p for c in index.cases for p in c.files()), *extra]:
            st = path.stat()
            digest.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _progress(items: list[T], what: str, quiet: bool) -> Iterable[T]:
    return items if quiet else track(items, description=what, console=Console(stderr=True), transient=True)


def _write(sources: list[_Source], out: Path, signature: str, quiet: bool) -> DatasetIndex:
    """Write the merged folder next to ``out`` under a temporary name, then put it in place."""
    every = sorted({n for s in sources for n in s.structures})
    tmp = out.parent / f"{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "images").mkdir(parents=True)
        for name in every:
            (tmp / "masks" / name).mkdir(parents=True)
        annotations: dict[str, list[str]] = {}
        jobs = [(s, case) for s in sources for case in s.index.cases]
        for s, case in _progress(jobs, f"merging {len(jobs)} cases", quiet):
            annotated = _write_case(s, case, tmp)
            if annotated != every:
                annotations[s.ids[case.case_id]] = annotated
        (tmp / ANNOTATIONS).write_text(json.dumps(dict(sorted(annotations.items())), indent=2))
        record = {"sources": [_describe(s) for s in sources], "signature": signature, "medssl_version": __version__}
        (tmp / RECORD).write_text(json.dumps(record, indent=2))
        _put_in_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return discover(out)


def _describe(s: _Source) -> dict[str, Any]:
    return {
        "folder": str(s.index.root.resolve()),
        "layout": s.index.layout,
        "cases": len(s.index.cases),
        "structures": s.structures,
        "renamed": {name: key for name, key in s.names.items() if name != key},
        "prefixed": sum(old != new for old, new in s.ids.items()),
    }


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (checked before) is moved aside first and removed after."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f"{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


def _write_case(s: _Source, case: Case, root: Path) -> list[str]:
    """Link or write one case's image and masks under ``root``; returns the merged structures it annotates."""
    new = s.ids[case.case_id]
    if len(case.images) == 1:
        _link(case.images[0], root / "images" / f"{new}{image_suffix(case.images[0])}")
    else:  # one multi-channel image in place of several channel files
        arrays, metas = zip(*(read_image(p) for p in case.images), strict=True)
        suffix = ".nii.gz" if metas[0].ndim == 3 else ".mha"  # NIfTI would read a 2D multi-channel image as 3D
        write_image(root / "images" / f"{new}{suffix}", np.concatenate(arrays), metas[0])
    if case.structures is not None:
        for name, mask in case.structures.items():
            _link(mask, root / "masks" / s.names[name] / f"{new}{image_suffix(mask)}")
        return sorted(s.names[n] for n in case.structures)
    assert case.label is not None  # has_labels: every case of a label-map layout has its label
    label, meta = read_label(case.label)
    undeclared = sorted(set(np.unique(label).tolist()) - {0, *s.values})
    single = len(s.values) == 1 and set(undeclared) <= {255}  # a binary 0/255 mask of its one structure
    if undeclared and not single:
        raise MedsslError(
            f"{case.label}: label value(s) {', '.join(map(str, undeclared))} not declared in the labels of "
            f"{s.index.root} (run `medssl data check {s.index.root}`)"
        )
    suffix = _mask_suffix(case.label, meta)
    for value, name in s.values.items():
        binary = label > 0 if single else label == value
        write_image(root / "masks" / name / f"{new}{suffix}", binary.astype(np.uint8), meta)
    return s.structures


def _mask_suffix(label: Path, meta: ImageMeta) -> str:
    """The label's own format where it is lossless and fits, else NIfTI (or PNG for plain 2D pictures)."""
    suffix = image_suffix(label)
    if suffix in _LOSSLESS and (meta.ndim == 2 or suffix not in (".png", ".tif", ".tiff", ".bmp")):
        return suffix
    return ".png" if meta.ndim == 2 and not meta.physical else ".nii.gz"


def _link(source: Path, target: Path) -> None:
    """A symbolic link to ``source`` (absolute), or a copy where the file system refuses links."""
    try:
        os.symlink(source.resolve(), target, target_is_directory=source.is_dir())
    except OSError:
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def merged_for_run(
    folders: Sequence[str | Path], run: str | Path, *, overwrite: bool = False, quiet: bool = False
) -> Path:
    """The merged dataset that ``finetune`` trains on when given several folders: ``<run>-data-merged`` beside
    the run folder (inside it, it would be an input within the output, and ``--overwrite`` would delete it).

    Reused when it was merged from the same folders (same order) and their files are unchanged; merged again
    when it does not exist, or with ``overwrite``; refused otherwise.

    Raises:
        MedsslError: what ``merge_datasets`` raises, or a merged folder of other (or changed) folders.
    """
    paths = _distinct(folders)
    merged = Path(run).parent / f"{Path(run).name}{RUN_SUFFIX}"
    record = merge_record(merged)
    if record is not None and merged.is_dir():
        same = [s.get("folder") for s in record["sources"]] == [str(p.resolve()) for p in paths]
        if same and record.get("signature") == _signature(paths):
            return merged
        if not overwrite:
            listed = ", ".join(str(s.get("folder")) for s in record["sources"])
            why = f"{listed}, whose files changed since" if same else f"other folders ({listed})"
            raise MedsslError(
                f"{merged} was merged from {why}; pass --overwrite to merge again, or choose another --out"
            )
    merge_datasets(paths, merged, overwrite=overwrite, quiet=quiet)
    return merged
