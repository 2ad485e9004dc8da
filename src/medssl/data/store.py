"""A preprocessed store of a dataset's images on disk, read patch by patch (bounded memory on large unlabelled data).

``medssl data prepare SRC --out STORE`` (``medssl.data.store_prepare``) resamples and normalises every image once,
with the functions ``medssl pretrain`` uses in memory, and writes it as ``STORE/<case>.npy``: a ``(C, *spatial)``
float16 array (normalised intensities keep about 3 decimal digits; plain ``.npy`` read through a memory map beat
blosc2's compressed chunks about 25x per patch read). ``STORE/store.json`` is the index: the plan the images were
preprocessed with, the fingerprint it came from, and per case its file, shape and the size and modification time of
its source files (what a resumed ``prepare`` compares).

Training reads a case through a ``StoredVolume``: only its shape lives in memory, and every read of a patch opens
the file's memory map, copies the patch out as float32 and closes the map again. Keeping thousands of maps open
grows the resident memory with every page ever touched (1,000 open maps: 37 -> 493 MB); opening per read keeps it
flat, which is nnU-Net's (and nnssl's) approach without MONAI's cache that grows past the data.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.plan import Fingerprint, Plan
from medssl.errors import MedsslError

__all__ = ["INDEX", "STORE_DTYPE", "Store", "StoredVolume", "is_store", "open_store"]

INDEX = "store.json"
STORE_FORMAT = "medssl-store"
STORE_VERSION = 1
STORE_DTYPE = np.dtype(np.float16)


class StoredVolume:
    """One stored case, ``(C, *spatial)``, read patch by patch; ``PatchDataset`` takes it in place of an array.

    Indexing (``volume[:, 10:42, 3, 0:32]``) opens the file's memory map, copies the indexed voxels out as float32
    and closes the map: between reads nothing is open and nothing of the volume is held in memory. ``np.asarray``
    reads the whole volume.

    Args:
        path: the ``.npy`` file.
        shape: its ``(C, *spatial)`` shape (from the store's index; checked at every read).

    Attributes:
        voxels_read: voxels copied out so far (what a test checks to see that only patches are read).
    """

    dtype = np.dtype(np.float32)

    def __init__(self, path: str | Path, shape: tuple[int, ...]) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.voxels_read = 0

    @property
    def ndim(self) -> int:
        """``1 + spatial dims`` (the channel axis counts)."""
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            mapped = np.load(self.path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise MedsslError(f"cannot read stored case {self.path}: {exc} (prepare the store again)") from None
        try:
            if mapped.shape != self.shape:
                raise MedsslError(f"{self.path} is {mapped.shape}, the store's index says {self.shape}")
            out = np.array(mapped[key], dtype=np.float32)
        finally:
            del mapped  # the last reference: the map (and its file descriptor) is closed here
        self.voxels_read += out.size
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        whole = self[...]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"StoredVolume({str(self.path)!r}, shape={self.shape})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoredVolume, (self.path, self.shape))


@dataclass
class StoredCase:
    """One case of the index.

    Attributes:
        file: the ``.npy`` file's name inside the store.
        shape: ``(C, *spatial)`` as stored (on the plan's grid).
        sources: the source files (or DICOM folders) the case was read from.
        fingerprint: per source, ``[size, mtime_ns]`` when it was read; a resumed ``prepare`` redoes the case
            when they changed.
    """

    file: str
    shape: list[int]
    sources: list[str]
    fingerprint: list[list[int]]


@dataclass
class Store:
    """A store's index (``store.json``) in memory.

    Attributes:
        root: the store folder.
        source: the dataset folder it was prepared from.
        plan: the plan the images were preprocessed with (target spacing, normalisation, intensity statistics;
            its sizes are the defaults, a run makes its own from ``fingerprint``).
        fingerprint: the fingerprint of the source images the plan came from.
        cases: case id -> its entry, in the source's order.
        skipped: case id -> problems, for the source cases left out (``--skip-bad-cases``).
    """

    root: Path
    source: str
    plan: Plan
    fingerprint: Fingerprint
    cases: dict[str, StoredCase] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def volumes(self, ids: Collection[str] | None = None) -> list[StoredVolume]:
        """The stored cases (of ``ids`` only, when given; in the index's order) as lazily read volumes.

        Raises:
            MedsslError: a requested case is not in the store, or a stored file is missing.
        """
        asked = set(self.cases) if ids is None else set(ids)
        wanted = [i for i in self.cases if i in asked]
        missing = sorted(asked - set(self.cases))
        if missing:
            shown = ", ".join(missing[:10])
            raise MedsslError(f"{len(missing)} requested case(s) not in the store {self.root}: {shown}")
        if not wanted:
            raise MedsslError(f"the store {self.root} holds no case; run `medssl data prepare` again")
        absent = [i for i in wanted if not (self.root / self.cases[i].file).is_file()]
        if absent:
            raise MedsslError(
                f"{len(absent)} stored case(s) of {self.root} are missing ({', '.join(absent[:10])}); complete the "
                f"store with `medssl data prepare {self.source} --out {self.root}`"
            )
        return [StoredVolume(self.root / self.cases[i].file, tuple(self.cases[i].shape)) for i in wanted]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "dtype": STORE_DTYPE.name,
            "source": self.source,
            "plan": asdict(self.plan),
            "fingerprint": asdict(self.fingerprint),
            "cases": {k: asdict(v) for k, v in self.cases.items()},
            "skipped": self.skipped,
        }

    def save(self) -> None:
        """Write ``store.json`` atomically (a temporary file renamed over it)."""
        tmp = self.root / f".{INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        os.replace(tmp, self.root / INDEX)


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``medssl data prepare`` (it holds ``store.json``)."""
    return (Path(path) / INDEX).is_file()


def open_store(path: str | Path) -> Store:
    """Read the index of the store at ``path``.

    Raises:
        MedsslError: no store there, or an index that is not a medssl store's (another format or version).
    """
    root = Path(path)
    try:
        data = json.loads((root / INDEX).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MedsslError(f"{root} is not a store of `medssl data prepare` ({INDEX}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        raise MedsslError(f"{root / INDEX} is not the index of a store of `medssl data prepare`")
    if data.get("version") != STORE_VERSION or data.get("dtype") != STORE_DTYPE.name:
        raise MedsslError(f"{root} is a store of another medssl version; prepare it again with --overwrite")
    try:
        return Store(
            root=root,
            source=str(data["source"]),
            plan=Plan(**data["plan"]),
            fingerprint=Fingerprint(**data["fingerprint"]),
            cases={k: StoredCase(**v) for k, v in data["cases"].items()},
            skipped={k: list(v) for k, v in data.get("skipped", {}).items()},
        )
    except (KeyError, TypeError) as exc:
        raise MedsslError(f"{root / INDEX} is damaged ({exc}); prepare the store again with --overwrite") from None


def case_file(case_id: str) -> str:
    """The file name of a case in a store: the id itself when it is a safe file name, else a safe form with a
    checksum of the id (ids that differ only in unsafe characters get different files)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id).lstrip(".") or "case"
    return f"{safe}.npy" if safe == case_id else f"{safe}-{zlib.crc32(case_id.encode()):08x}.npy"


def stored_ok(root: Path, entry: StoredCase) -> bool:
    """Whether the entry's file is present, whole and of the indexed shape (reads its header only)."""
    path = root / entry.file
    try:
        with path.open("rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return False
    expected = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    return list(shape) == list(entry.shape) and np.dtype(dtype) == STORE_DTYPE and size == expected
