"""Shared by the benchmark scripts: where the real data lives, the git commit, and writing result JSON."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def require(path: Path) -> Path:
    """Exit with a clear message when a dataset is absent."""
    if not path.exists():
        sys.exit(f"skipped: {path} not found (the benchmarks read the real datasets from ../shared/data)")
    return path


def git_commit() -> str:
    """The checked-out commit of the whole tree, with '+dirty' when any tracked file differs from it.

    The whole tree, not only ``src/``: a result must name the benchmark script (and configs, docs) that made it.
    Staged and unstaged changes both count; untracked files do not, nor does ``benchmarks/results/`` (outputs, not
    what made them: a grid that rewrites its own result file after every run stays clean). 'unknown' outside a git
    checkout.
    """
    try:
        sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True, stderr=subprocess.DEVNULL)
        # Exit status 0: no difference, 1: differences; anything else (an error) is not called clean either.
        diff = ["git", "diff", "--quiet", "HEAD", "--", ".", ":(exclude)benchmarks/results"]
        dirty = subprocess.run(diff, cwd=ROOT, stderr=subprocess.DEVNULL).returncode != 0
        return sha.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, Any]:
    """Machine facts that matter for timings and for bit-identical reruns: the CPU model and the vector
    instructions torch uses (AVX2 and AVX-512 kernels round differently, so results differ in the last digits
    between machines)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def proc_status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` field in kB (``VmRSS``: resident now, ``VmHWM``: this process's own peak), or None
    where there is no such file or field (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_memory_mb() -> dict[str, float]:
    """This process's peak resident memory: ``VmHWM`` of ``/proc/self/status`` (its own address space's high-water
    mark), and ``ru_maxrss``, which on Linux also carries the parent's resident size at the fork that started it
    (a parent of 1 GB makes every child report at least 1 GB), so it is only an upper bound."""
    out = {"ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    peak = proc_status_kb("VmHWM")
    out["peak_rss_mb"] = out["ru_maxrss_mb"] if peak is None else peak / 1024
    return out


def write_result(name: str, settings: dict[str, Any], results: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the commit, date, environment and settings."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": settings,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


TRAINED_AT = "trained_at_commit.txt"  # in a run folder: the commit that finished it


def finetune_once(data: Path, run: Path, label: str, **options: Any) -> Path:
    """``medssl.api.finetune`` into ``run`` unless it has finished (``result.json``); an interrupted run (a last
    checkpoint) is resumed, a folder without one is replaced. The grids of the benchmarks run in parts this way.
    Float32 unless ``precision`` is given."""
    if (run / "result.json").is_file():
        return run
    from medssl import api

    print(f"finetune {label}", flush=True)
    # float32 unless asked: the grids join runs of several sessions and machines, and the fine-tuning default
    # (``auto``) would train in bf16 on a CPU with AMX and in float32 elsewhere
    options.setdefault("precision", "32-true")
    last = (run / "checkpoints" / "last.ckpt").is_file()
    api.finetune(data, run, resume=last, overwrite=run.is_dir() and not last, quiet=True, **options)
    (run / TRAINED_AT).write_text(git_commit() + "\n")
    return run


def trained_at(run: Path) -> str:
    """The commit at which ``finetune_once`` finished ``run`` (a grid may collect it later from another tree);
    'unknown' for a folder finished before the commit was stored."""
    stored = run / TRAINED_AT
    return stored.read_text().strip() if stored.is_file() else "unknown"
