"""How ``medssl data prepare`` stores volumes (issue 23): plain ``.npy`` float16 read through a memory map against
blosc2's chunk-compressed arrays, and what holding memory maps open costs.

Data: the BraTS 2015 test cases of ``../shared/data`` (real MR, FLAIR + T1c), prepared once with
``medssl.data.store_prepare.prepare_store``. Measured:

- float16 rounding: the stored arrays against the same cases preprocessed in float32 in memory (max and mean
  absolute difference, on the normalised intensities);
- patch reads, warm page cache: ``--patches`` random ``--patch``^3 patches per format, every read opening its
  file (what pretraining does); ``StoredVolume`` (np.load mmap) against ``blosc2.open(...)[region]`` of the same
  float16 arrays saved as blosc2 NDArrays (``--chunk``^3 chunks, zstd level 1, shuffle) — median ms per patch and
  bytes on disk;
- resident memory: ``--maps`` patch reads that keep each read's memory map alive, against reads that drop it
  (VmRSS growth of this process).

    python benchmarks/store_format.py          # blosc2 needed for the comparison: pip install blosc2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import DATA, RESULTS, proc_status_kb, require, write_result
from medssl.data.layouts import discover
from medssl.data.loading import load_checked_case
from medssl.data.preprocess import preprocess_image
from medssl.data.store import open_store
from medssl.data.store_prepare import prepare_store


def vm_rss_mb() -> float:
    """This process's resident memory now (``VmRSS``), MB."""
    kb = proc_status_kb("VmRSS")
    return float("nan") if kb is None else kb / 1024


def regions(shapes: list[tuple[int, ...]], patch: int, n: int, seed: int) -> list[tuple[int, tuple[slice, ...]]]:
    """``n`` random ``(case, (all channels, patch^3 region))`` inside the volumes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(len(shapes)))
        starts = [int(rng.integers(0, max(1, s - patch + 1))) for s in shapes[k][1:]]
        out.append((k, (slice(None), *(slice(a, a + patch) for a in starts))))
    return out


def rounding(src: Path, store_dir: Path) -> dict[str, float]:
    """float16 store against float32 preprocessing in memory, over every case."""
    store, index = open_store(store_dir), discover(src)
    by_id = {case.case_id: case for case in index.cases}
    worst, total, voxels = 0.0, 0.0, 0
    for case_id, entry in store.cases.items():
        loaded = load_checked_case(by_id[case_id], index, images_only=True)
        exact = preprocess_image(loaded.image, loaded.meta, store.plan).astype(np.float32)
        stored = np.load(store_dir / entry.file).astype(np.float32)
        diff = np.abs(stored - exact)
        worst, total, voxels = max(worst, float(diff.max())), total + float(diff.sum()), voxels + diff.size
    return {"max_abs": worst, "mean_abs": total / voxels, "range_of_values": "normalised intensities"}


def timed_reads(read: Any, picks: list[tuple[int, tuple[slice, ...]]]) -> float:
    """Median seconds of ``read(case, region)`` over ``picks`` (after 5 warm-up reads)."""
    for k, region in picks[:5]:
        read(k, region)
    times = []
    for k, region in picks:
        started = time.perf_counter()
        read(k, region)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def formats(store_dir: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """npy memmap against blosc2 for the same float16 arrays: ms per patch and bytes on disk."""
    volumes = open_store(store_dir).volumes()
    picks = regions([v.shape for v in volumes], args.patch, args.patches, seed=0)
    npy_s = timed_reads(lambda k, region: volumes[k][region], picks)
    out: dict[str, Any] = {
        "npy_memmap": {"ms_per_patch": 1000 * npy_s, "bytes": sum(v.path.stat().st_size for v in volumes)}
    }
    try:
        import blosc2
    except ImportError:
        out["blosc2"] = "not installed (pip install blosc2)"
        return out
    files = []
    for i, v in enumerate(volumes):
        path = work / f"case{i}.b2nd"
        cparams = {"codec": blosc2.Codec.ZSTD, "clevel": 1, "filters": [blosc2.Filter.SHUFFLE]}
        chunks = (v.shape[0], *(min(args.chunk, s) for s in v.shape[1:]))
        blosc2.asarray(np.load(v.path), urlpath=str(path), mode="w", chunks=chunks, cparams=cparams)
        files.append(path)
    b2_s = timed_reads(lambda k, region: blosc2.open(str(files[k]))[region], picks)
    same = all(
        np.array_equal(np.asarray(blosc2.open(str(files[k]))[region]), volumes[k][region].astype(np.float16))
        for k, region in picks[:20]
    )
    out["blosc2"] = {
        "ms_per_patch": 1000 * b2_s,
        "bytes": sum(f.stat().st_size for f in files),
        "version": blosc2.__version__,
        "settings": f"zstd level 1, shuffle, chunks (C, {args.chunk}^3)",
        "same_values_as_npy": same,
    }
    out["blosc2_over_npy_time"] = b2_s / npy_s
    return out


def open_maps(store_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """VmRSS growth over ``--maps`` patch reads: each read's memory map kept alive, against dropped."""
    volumes = open_store(store_dir).volumes()
    picks = regions([v.shape for v in volumes], args.patch, args.maps, seed=1)
    before = vm_rss_mb()
    for k, region in picks:
        volumes[k][region]  # StoredVolume: open, copy the patch, drop the map
    dropped = vm_rss_mb() - before
    kept, before = [], vm_rss_mb()
    for k, region in picks:
        mapped = np.load(volumes[k].path, mmap_mode="r")
        np.asarray(mapped[region], dtype=np.float32)
        kept.append(mapped)
    held = vm_rss_mb() - before
    return {"reads": args.maps, "rss_growth_mb_maps_dropped": dropped, "rss_growth_mb_maps_kept": held}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=64, help="patch side (voxels, every axis)")
    parser.add_argument("--patches", type=int, default=300, help="timed reads per format")
    parser.add_argument("--chunk", type=int, default=64, help="blosc2 chunk side")
    parser.add_argument("--maps", type=int, default=200, help="reads of the open-maps measurement (kept maps hold GBs)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="elsewhere for a smoke run")
    args = parser.parse_args()
    src = require(DATA / "brats2015" / "test")
    with tempfile.TemporaryDirectory() as tmp:
        store_dir, work = Path(tmp) / "store", Path(tmp)
        prepare_store(src, store_dir, quiet=True)
        results = {"rounding": rounding(src, store_dir), "formats": formats(store_dir, work, args)}
        results["open_maps"] = open_maps(store_dir, args)
        cases = {i: e.shape for i, e in open_store(store_dir).cases.items()}
    settings = {"data": "BraTS 2015 test cases (FLAIR + T1c), prepared by medssl data prepare", "cases": cases}
    settings.update(vars(args) | {"out_dir": str(args.out_dir)})
    print(results, flush=True)
    import _common

    _common.RESULTS = args.out_dir
    write_result("store_format", settings, results)


if __name__ == "__main__":
    main()
