"""Peak memory and speed of pretraining on 20, 200 and 2,000 volumes: from a store of ``medssl data prepare`` (patches
read from float16 ``.npy`` files, one memory map opened per patch read) against the in-memory path of ``medssl
pretrain`` (every volume read, checked and preprocessed into memory).

The data are synthetic, every volume distinct: ``--shape`` (64^3) float32 NIfTI volumes (uncompressed ``.nii``) at
1 mm, each a few random smooth Gaussian blobs (intensity 100 + up to 3 x 80) plus Gaussian noise (sd 5), written
once into ``--work-dir``. Each dataset size N takes the first N volumes (symlinks); its store is prepared once
(``medssl.api.prepare_store``, ``--workers`` processes, timed). Each pretraining run is ``medssl.api.pretrain`` (SimCLR,
3D, a small encoder, ``--steps`` steps, seed 0, ``--accelerator cpu``) in a fresh subprocess with one thread; reported
per run: the child's peak resident memory (``ru_maxrss`` from ``os.wait4``; the volumes are written and the stores
prepared in subprocesses too, and this script imports neither torch nor medssl before the last run, because Linux
counts the launching process's peak in a child's ``ru_maxrss``; ``VmHWM``, the peak of the child's own address space,
is reported beside it), steps/s over the steps after the first (a Lightning callback records the end of each step),
and the child's wall time (start-up, reading or opening the store, plan, training, export). The page cache is warm
(the files were just written), as on a second epoch.
An in-memory run is left out when it would need more than half the available memory (3 copies of the data).

    OMP_NUM_THREADS=1 python benchmarks/pretrain_memory.py      # writes benchmarks/results/pretrain_memory.json
    OMP_NUM_THREADS=1 python benchmarks/pretrain_memory.py --sizes 4,8 --memory-sizes 4,8 --steps 5 \\
        --shape 32,32,32 --out-dir /tmp/pm --work-dir /tmp/pm_work     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES: dict[str, Any] = {"patch_size": [32, 32, 32], "channels": [8, 16, 32], "batch_size": 2}


def synthetic_volumes(folder: Path, count: int, shape: tuple[int, ...], seed: int = 0) -> list[Path]:
    """``count`` distinct volumes ``vol_XXXX.nii`` (smooth random blobs plus noise, 1 mm), written once."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    grid = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    paths = []
    for i in range(count):
        path = folder / f"vol_{i:04d}.nii"
        paths.append(path)
        if path.is_file():
            continue
        rng = np.random.default_rng([seed, i])
        image = 100 + 5 * rng.standard_normal(shape).astype(np.float32)
        for _ in range(3):
            centre, width = rng.uniform(-0.6, 0.6, len(shape)), rng.uniform(0.15, 0.4)
            blob = np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) / (2 * width**2))
            image += rng.uniform(20, 80) * blob
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), path)
    return paths


def dataset(work: Path, volumes: list[Path], n: int) -> Path:
    """A folder of the first ``n`` volumes (symlinks)."""
    folder = work / f"data_{n}"
    folder.mkdir(exist_ok=True)
    for path in volumes[:n]:
        link = folder / path.name
        if not link.exists():
            link.symlink_to(path)
    return folder


def prepare(data: Path, store: Path, workers: int) -> None:
    """``--child prepare``: the store of ``data`` (prepared, or completed: nothing to do when it is)."""
    from medssl import api

    started = time.perf_counter()
    report = api.prepare_store(data, store, workers=workers, quiet=True)
    seconds = time.perf_counter() - started
    record = {"seconds": seconds, "written": len(report.written)}
    (store.parent / f"{store.name}_prepared.json").write_text(json.dumps(record))


def subprocess_run(*args: Any) -> tuple[float, Any]:
    """``--child *args`` in a fresh subprocess (one thread): its wall time and resource usage (``os.wait4``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *map(str, args)], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"--child {' '.join(map(str, args))} failed (exit {os.waitstatus_to_exitcode(status)})")
    return time.perf_counter() - started, usage


def prepared(work: Path, data: Path, n: int, workers: int) -> tuple[Path, dict[str, Any]]:
    """The store of the first ``n`` volumes, prepared in a subprocess, and what preparing it cost."""
    store = work / f"store_{n}"
    wall, usage = subprocess_run("prepare", data, store, workers)
    record = json.loads((work / f"store_{n}_prepared.json").read_text())
    size = sum(p.stat().st_size for p in store.iterdir())
    index = (store / "store.json").stat().st_size
    print(f"store {n}: {record['written']} written in {record['seconds']:.1f} s, {size / 2**20:.0f} MB", flush=True)
    return store, record | {"wall_s": wall, "ru_maxrss_mb": usage.ru_maxrss / 1024, "store_mb": size / 2**20,
                            "index_kb": index / 2**10}  # fmt: skip


def run_child(data: Path, run: Path, steps: int) -> dict[str, Any]:
    """One pretraining run in a fresh subprocess; its peak RSS, steps/s and wall time."""
    wall, usage = subprocess_run("pretrain", data, run, steps)
    record = json.loads((run / "step_ends.json").read_text())
    ends = record["ends"]
    timed = len(ends) - 1
    return {
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "vm_hwm_mb": record["vm_hwm_kb"] / 1024,
        "steps": len(ends),
        "steps_per_s": timed / (ends[-1] - ends[0]),
        "wall_s": wall,
    }


def vm_hwm_kb() -> int:
    """``VmHWM`` of ``/proc/self/status``: this process's own peak resident memory (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pretrain(data: Path, run: Path, steps: int) -> None:
    """The run itself: ``api.pretrain`` with a callback that records the end of every step."""
    import lightning as L
    import torch

    from medssl import api
    from medssl.engine.resume import ResumableTraining

    torch.set_num_threads(1)
    ends: list[float] = []

    class StepEnds(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            ends.append(time.perf_counter())

    fit = ResumableTraining.fit

    def timed_fit(self: ResumableTraining, trainer: L.Trainer, module: L.LightningModule, **kw: Any) -> None:
        trainer.callbacks.append(StepEnds())  # type: ignore[attr-defined]
        fit(self, trainer, module, **kw)

    ResumableTraining.fit = timed_fit  # type: ignore[method-assign]
    api.pretrain(data, run, method="simclr", dims=3, max_steps=steps, accelerator="cpu", quiet=True, overwrite=True,
                 checkpoint_interval=steps, seed=0, **SIZES)  # fmt: skip
    (run / "step_ends.json").write_text(json.dumps({"ends": ends, "vm_hwm_kb": vm_hwm_kb()}))


def available_mb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` (infinite where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def measure(args: argparse.Namespace, work: Path, shape: tuple[int, ...]) -> dict[str, Any]:
    subprocess_run("generate", work / "volumes", max(args.sizes), ",".join(map(str, shape)))
    volumes = sorted((work / "volumes").glob("vol_*.nii"))
    results: dict[str, Any] = {}
    for n in args.sizes:
        data = dataset(work, volumes, n)
        store, record = prepared(work, data, n, args.workers)
        entry: dict[str, Any] = {"prepare": record, "store": run_child(store, work / f"run_store_{n}", args.steps)}
        need_mb = 3 * n * int(np.prod(shape)) * 4 / 2**20
        if n in args.memory_sizes and need_mb < available_mb() / 2:
            entry["memory"] = run_child(data, work / f"run_memory_{n}", args.steps)
        elif n in args.memory_sizes:
            entry["memory"] = {"skipped": f"would need about {need_mb:.0f} MB, {available_mb():.0f} MB available"}
        results[str(n)] = entry
        shown = {k: v for k, v in entry.items() if k != "prepare"}
        print(f"N={n}: " + "; ".join(f"{k} {json.dumps(v)}" for k, v in shown.items()), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda text: [int(t) for t in text.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[20, 200, 2000], help="numbers of volumes (store runs)")
    parser.add_argument("--memory-sizes", type=ints, default=[20, 200, 2000], help="sizes also run in memory")
    parser.add_argument("--shape", type=ints, default=[64, 64, 64], help="voxels per axis of every volume")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps of every run")
    parser.add_argument("--workers", type=int, default=1, help="processes of `data prepare`")
    parser.add_argument("--out-dir", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/medssl_pretrain_memory"), help="data and runs")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, a, b, c = args.child
        if kind == "generate":
            synthetic_volumes(Path(a), int(b), tuple(int(t) for t in c.split(",")))
        elif kind == "prepare":
            prepare(Path(a), Path(b), int(c))
        else:
            pretrain(Path(a), Path(b), int(c))
        return
    started = time.perf_counter()
    shape = tuple(args.shape)
    results = measure(args, args.work_dir, shape)
    import _common  # only now: it imports torch, and the launcher's peak memory counts in a child's ru_maxrss

    if args.out_dir is not None:
        _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS
    settings = {
        "data": f"synthetic: {max(args.sizes)} distinct {'x'.join(map(str, shape))} float32 NIfTI volumes at 1 mm, "
        "3 random smooth Gaussian blobs + noise; size N = the first N",
        "sizes": args.sizes,
        "memory_sizes": args.memory_sizes,
        "steps": args.steps,
        "method": "simclr",
        "workers": args.workers,
        "threads": 1,
        "page_cache": "warm",
        **SIZES,
        "total_seconds": time.perf_counter() - started,
    }
    _common.write_result("pretrain_memory", settings, results)


if __name__ == "__main__":
    main()
