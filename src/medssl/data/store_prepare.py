"""``medssl data prepare``: preprocess a dataset's images once into a store (``medssl.data.store``), resumably and in
parallel.

Two passes over the cases to do, each over a process pool (``workers``):

1. check and scan: every case is read and checked as ``medssl data check`` does (images only); its spacing, shape
   and up to 10,000 intensity samples per channel (as ``compute_fingerprint`` samples them) come back, and the
   plan is made from them as ``medssl pretrain`` makes it (``make_plan``, no labels required). Nothing is written
   before every case has been checked.
2. preprocess and write: every case is read again, preprocessed with ``preprocess_image`` under that plan, and
   written as float16 to a temporary file that is renamed to ``<case>.npy`` only when complete, so that a killed
   run leaves temporary files (removed by the next run), never a truncated array under the final name.

A second run keeps the plan and redoes only the cases whose entry is missing, whose file is absent or not whole,
or whose source files changed size or modification time; cases gone from the source are removed from the store.
The intensity samples of a case come from its own seeded stream, so the plan does not depend on ``workers``.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from medssl.data.check import DatasetTally, check_case, dataset_problems
from medssl.data.geometry import ImageMeta
from medssl.data.layouts import Case, DatasetIndex, discover
from medssl.data.loading import LoadedCase, bad_cases_error, load_checked_case, print_skipped
from medssl.data.plan import Fingerprint, Plan, compute_fingerprint, make_plan
from medssl.data.preprocess import preprocess_image
from medssl.data.store import STORE_DTYPE, Store, StoredCase, case_file, is_store, open_store, stored_ok
from medssl.engine.run_folder import check_output_location, progress_bar
from medssl.errors import MedsslError

__all__ = ["PrepareReport", "prepare_store", "source_fingerprint"]

_SAMPLES = 10000  # intensity samples per case and channel, as compute_fingerprint takes them
_SAVE_EVERY_S = 2.0
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass
class PrepareReport:
    """What ``prepare_store`` did.

    Attributes:
        store: the store folder.
        cases: cases in the store now.
        written: cases preprocessed and written by this run.
        unchanged: cases already stored from unchanged sources (kept as they were).
        removed: stored cases no longer in the source, or bad now (their files deleted).
        skipped: cases left out with their problems (``skip_bad_cases``).
        plan: the plan the store's images are preprocessed with.
    """

    store: Path
    cases: int
    written: list[str]
    unchanged: list[str]
    removed: list[str]
    skipped: dict[str, list[str]]
    plan: Plan
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Scan:
    """What pass 1 learnt of one case."""

    case_id: str
    problems: list[str]
    spacing: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()
    physical: bool = True
    samples: list[np.ndarray] = field(default_factory=list)
    tally: DatasetTally = field(default_factory=DatasetTally)


def prepare_store(
    src: str | Path,
    out: str | Path,
    *,
    spacing: list[float] | None = None,
    workers: int = 1,
    skip_bad_cases: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    quiet: bool = False,
) -> PrepareReport:
    """Preprocess every image of the dataset at ``src`` into the store ``out`` (created, or completed when it is a
    store of the same source; see the module's documentation). Labels are ignored; ``imagesTs`` images count.

    Args:
        src: a dataset folder in any layout ``discover`` knows.
        out: the store folder.
        spacing: target spacing per axis (default: derived from the data as ``medssl pretrain`` does).
        workers: processes for reading, preprocessing and writing (1: in this process).
        skip_bad_cases: leave out the cases ``medssl data check`` reports (listed) instead of refusing.
        overwrite: replace an existing store at ``out`` (never another folder).
        seed: seed of the intensity samples behind the plan's statistics.
        quiet: no progress bars.

    Raises:
        MedsslError: no dataset at ``src``, ``out`` is refused by ``check_output_location`` (inside ``src``...),
            ``out`` exists and is not a store (or one of another source or spacing), a case has a problem (without
            ``skip_bad_cases``), or every case has one.
    """
    started = time.perf_counter()
    if workers < 1:
        raise MedsslError(f"--workers must be at least 1, not {workers}")
    check_output_location(out, (src,))
    index = discover(src)
    root = Path(out)
    store = _existing(root, Path(src), spacing, overwrite)
    cases = [*index.cases, *index.test_cases]
    files = {c.case_id: case_file(c.case_id) for c in cases}
    light = replace(index, cases=[], test_cases=[])
    up_to_date = {c.case_id for c in cases if store is not None and _unchanged(store, c)}
    todo = [c for c in cases if c.case_id not in up_to_date]
    wrap = progress_bar(quiet)
    with _pool(workers, len(todo)) as run:
        scans = list(wrap(run(_scan_case, [(c, light, seed) for c in todo]), "checking cases"))
        bad = _problems(index, scans, store.plan if store is not None else None)
        _refuse_or_skip(src, bad, len(cases), skip_bad_cases)
        if store is None:
            store = _new_store(root, Path(src), index, [s for s in scans if s.case_id not in bad], spacing)
        removed = sorted(set(store.cases) - {c.case_id for c in cases if c.case_id not in bad})
        _drop_stale(store, up_to_date)  # gone from the source, bad now, or to be redone
        store.skipped = bad
        root.mkdir(parents=True, exist_ok=True)
        store.save()  # the plan, before any image: a killed run resumes with it
        good = [c for c in todo if c.case_id not in bad]
        tasks = [(c, light, store.plan, root, files[c.case_id]) for c in good]
        _write_all(store, wrap(run(_write_case, tasks), "preprocessing cases"), [c.case_id for c in cases])
    written = [c.case_id for c in good]
    seconds = time.perf_counter() - started
    return PrepareReport(root, len(store.cases), written, sorted(up_to_date), removed, bad, store.plan, seconds)


def _existing(root: Path, src: Path, spacing: list[float] | None, overwrite: bool) -> Store | None:
    """The store already at ``root`` to complete, or None (a new one); ``overwrite`` removes an existing store."""
    if root.exists() and not root.is_dir():
        raise MedsslError(f"--out {root} exists and is not a folder")
    if not root.exists() or not any(root.iterdir()):
        return None
    if not is_store(root):
        raise MedsslError(
            f"--out {root} is not empty and is not a store of `medssl data prepare` (no store.json), so it is "
            "neither completed nor replaced; choose another --out"
        )
    if overwrite:
        shutil.rmtree(root)
        return None
    store = open_store(root)
    if Path(store.source).resolve() != src.resolve():
        raise MedsslError(
            f"the store {root} was prepared from {store.source}, not {src}; choose another --out, or pass "
            "--overwrite to replace it"
        )
    if spacing is not None and [float(s) for s in spacing] != store.plan.target_spacing:
        raise MedsslError(
            f"the store {root} was prepared at spacing {store.plan.target_spacing}, not {spacing}; choose another "
            "--out, or pass --overwrite to prepare it again"
        )
    for tmp in root.glob(".*.tmp"):
        tmp.unlink()  # left by a killed run
    return store


def source_fingerprint(case: Case) -> list[list[int]]:
    """Per image file of the case, ``[size, mtime_ns]`` (a DICOM folder: of its newest file, and its files' total
    size); a changed fingerprint makes ``prepare`` redo the case."""
    out = []
    for path in case.images:
        if path.is_dir():
            stats = [p.stat() for p in path.rglob("*") if p.is_file()]
            out.append([sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)])
        else:
            st = path.stat()
            out.append([int(st.st_size), int(st.st_mtime_ns)])
    return out


def _unchanged(store: Store, case: Case) -> bool:
    entry = store.cases.get(case.case_id)
    if entry is None or entry.file != case_file(case.case_id) or not stored_ok(store.root, entry):
        return False
    try:
        return entry.fingerprint == source_fingerprint(case)
    except OSError:
        return False


@contextmanager
def _pool(workers: int, tasks: int) -> Iterator[Callable[[Callable[[_T], _R], list[_T]], Iterator[_R]]]:
    """``map(fn, items)`` in order: in this process, or over ``workers`` fresh (spawned) processes, started once
    for both passes."""
    if workers <= 1 or tasks <= 1:
        yield map
        return
    context = multiprocessing.get_context("spawn")  # not fork: torch's thread pools do not survive a fork
    with ProcessPoolExecutor(min(workers, tasks), mp_context=context, initializer=_one_thread) as pool:
        yield pool.map


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the workers are the parallelism


def _scan_case(task: tuple[Case, DatasetIndex, int]) -> _Scan:
    """Pass 1 of one case: its problems (``check_case``, images only), geometry and intensity samples."""
    case, index, seed = task
    tally = DatasetTally()
    problems, arrays = check_case(case, index, tally, images_only=True)
    if problems:
        return _Scan(case.case_id, problems, tally=tally)
    image = np.concatenate([a for _, a, _ in arrays.images], axis=0).astype(np.float32, copy=False)
    meta = arrays.images[0][2]
    rng = np.random.default_rng([seed, zlib.crc32(case.case_id.encode())])
    samples = []
    for channel in image:
        vox = channel.ravel()
        vox = vox[np.isfinite(vox)]
        samples.append(rng.choice(vox, _SAMPLES, replace=False) if vox.size > _SAMPLES else vox.copy())
    return _Scan(case.case_id, [], meta.spacing, tuple(image.shape[1:]), meta.physical, samples, tally)


def _problems(index: DatasetIndex, scans: list[_Scan], plan: Plan | None) -> dict[str, list[str]]:
    """Case id -> problems: each case's, the dataset-wide rules over the scanned cases, and (completing a store)
    channels or dimensionality other than the stored plan's."""
    bad = {s.case_id: s.problems for s in scans if s.problems}
    tally = DatasetTally()
    for s in scans:
        tally.layouts.update(s.tally.layouts)
        tally.case_of.update(s.tally.case_of)
    for case_id, line in dataset_problems(index, tally):
        bad.setdefault(case_id, []).append(line)
    if plan is not None:
        for s in scans:
            if not s.problems and (len(s.samples), len(s.shape)) != (plan.in_channels, plan.data_dims):
                line = (
                    f"case {s.case_id}: {len(s.samples)} channel(s), {len(s.shape)}D, but the store's plan is for "
                    f"{plan.in_channels} channel(s), {plan.data_dims}D (prepare another store)"
                )
                bad.setdefault(s.case_id, []).append(line)
    return bad


def _refuse_or_skip(src: str | Path, bad: dict[str, list[str]], n_cases: int, skip_bad_cases: bool) -> None:
    """Refuse bad cases (every problem listed) unless they are to be skipped (then listed on stderr)."""
    if bad and not skip_bad_cases:
        raise bad_cases_error(src, bad)
    if len(bad) == n_cases:
        raise MedsslError(f"every image of {src} has a problem (run `medssl data check {src}`)")
    print_skipped(bad)


def _new_store(root: Path, src: Path, index: DatasetIndex, scans: list[_Scan], spacing: list[float] | None) -> Store:
    """A new store's index: the fingerprint of the scanned cases and the plan ``medssl pretrain`` makes of it."""
    fingerprint = _fingerprint(scans, index.modality)
    plan = make_plan(fingerprint, require_labels=False, target_spacing=spacing)
    return Store(root, str(src.resolve()), plan, fingerprint)


def _fingerprint(scans: list[_Scan], modality: str | None) -> Fingerprint:
    """``compute_fingerprint`` of the scanned cases. Each case stands in as a ``(C, n)`` image of its intensity
    samples, NaN-padded (compute_fingerprint leaves out non-finite voxels), so that the statistics are computed by
    the very same code; at most 10,000 samples per channel, so it draws none of its own. The shapes are the real
    ones."""
    stand_ins = []
    for s in scans:
        samples = np.full((len(s.samples), max(len(v) for v in s.samples)), np.nan, np.float32)
        for ch, values in enumerate(s.samples):
            samples[ch, : len(values)] = values
        dims = len(s.spacing)
        direction = tuple(tuple(float(i == j) for j in range(dims)) for i in range(dims))
        meta = ImageMeta(s.spacing, (0.0,) * dims, direction, s.shape, physical=s.physical)
        stand_ins.append(LoadedCase(s.case_id, samples, meta))
    return replace(compute_fingerprint(stand_ins, modality), shapes=[list(s.shape) for s in scans])


def _drop_stale(store: Store, keep: set[str]) -> None:
    """Remove the stored cases not in ``keep``: their entries and files."""
    for case_id in [i for i in store.cases if i not in keep]:
        (store.root / store.cases.pop(case_id).file).unlink(missing_ok=True)


def _write_case(task: tuple[Case, DatasetIndex, Plan, Path, str]) -> tuple[str, StoredCase]:
    """Pass 2 of one case: read, preprocess exactly as ``medssl pretrain`` does in memory, write atomically."""
    case, index, plan, root, file = task
    fingerprint = source_fingerprint(case)  # before reading: a change while reading is seen by the next run
    loaded = load_checked_case(case, index, images_only=True)
    image = preprocess_image(loaded.image, loaded.meta, plan).astype(STORE_DTYPE)
    if not np.isfinite(image).all():
        raise MedsslError(f"case {case.case_id}: normalised intensities beyond the float16 range of the store")
    tmp = root / f".{file}.{os.getpid()}.tmp"
    with tmp.open("wb") as fh:
        np.save(fh, image)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / file)  # atomic: the final name only ever holds a whole array
    entry = StoredCase(file, list(image.shape), [str(p.resolve()) for p in case.images], fingerprint)
    return case.case_id, entry


def _write_all(store: Store, results: Iterable[tuple[str, StoredCase]], order: list[str]) -> None:
    """Record each written case in the index, saved every few seconds and at the end (also when interrupted), the
    cases in the source's ``order`` (the order in which ``medssl pretrain`` holds them in memory)."""
    saved = time.monotonic()
    try:
        for case_id, entry in results:
            store.cases[case_id] = entry
            if time.monotonic() - saved > _SAVE_EVERY_S:
                store.save()
                saved = time.monotonic()
    finally:
        store.cases = {i: store.cases[i] for i in order if i in store.cases}
        store.save()
