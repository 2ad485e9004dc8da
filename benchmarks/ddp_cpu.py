"""DDP on CPU: 2 gloo processes against 1, for a short SimCLR pretraining and a short U-Net fine-tuning on JSRT.

Each run is ``medssl.api.pretrain`` / ``medssl.api.finetune`` with ``--accelerator cpu`` and ``devices`` 1 or 2, one
thread per process, the same seed and per-process batch (2 processes: twice the samples per step). Each run starts
in its own subprocess (Lightning re-launches that command for rank 1); rank 0 records the time at the end of every
step and its loss. Reported per run: steps/s and samples/s over the steps after the first (allocations), the wall
time of the whole command (start-up, data, plan, training, export or test scoring), and the training loss of every
step (rank 0's: its own patches and views; with 2 processes each step follows the mean gradient of both). No
checkpoint is saved and no validation runs between the first and the last step.

    OMP_NUM_THREADS=1 python benchmarks/ddp_cpu.py                       # writes benchmarks/results/ddp_cpu.json
    OMP_NUM_THREADS=1 python benchmarks/ddp_cpu.py --steps 10 --out-dir /tmp/ddp   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import DATA, require, write_result

SIZES: dict[str, Any] = {"patch_size": [64, 64], "channels": [8, 16, 32, 64], "batch_size": 8}


def run_once(kind: str, processes: int, steps: int, work: Path) -> dict[str, Any]:
    """One run in a subprocess (``--child``); its throughput and loss curve."""
    run = work / f"{kind}_{processes}proc"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--child", kind, str(processes), str(steps), str(run)]
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True)
    wall = time.perf_counter() - started
    record = json.loads((run / "steps.json").read_text())
    ends = record["ends"]
    timed = len(ends) - 1
    seconds = ends[-1] - ends[0]
    samples = timed * SIZES["batch_size"] * processes
    return {
        "processes": processes,
        "steps": len(ends),
        "steps_per_s": timed / seconds,
        "samples_per_s": samples / seconds,
        "seconds_per_step": seconds / timed,
        "wall_s": wall,
        "loss_curve": record["losses"],
    }


def child(kind: str, processes: int, steps: int, run: Path) -> None:
    """The run itself (every rank runs this); rank 0 writes ``run/step_ends.json``."""
    import lightning as L
    import torch

    from medssl import api
    from medssl.engine.resume import ResumableTraining

    torch.set_num_threads(1)
    ends: list[float] = []
    losses: list[float] = []

    class StepEnds(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, *args: Any) -> None:
            ends.append(time.perf_counter())
            losses.append(float(outputs["loss"]))  # this rank's loss of the step (its own patches and views)

    fit = ResumableTraining.fit

    def timed_fit(self: ResumableTraining, trainer: L.Trainer, module: L.LightningModule, **kw: Any) -> None:
        trainer.callbacks.append(StepEnds())  # type: ignore[attr-defined]
        fit(self, trainer, module, **kw)

    ResumableTraining.fit = timed_fit  # type: ignore[method-assign]
    data = require(DATA / "jsrt")
    common: dict[str, Any] = {
        "max_steps": steps, "accelerator": "cpu", "devices": processes, "quiet": True, "overwrite": True,
        "checkpoint_interval": steps, "precision": "32-true", **SIZES,
    }  # fmt: skip
    if kind == "pretrain":
        api.pretrain(data, run, method="simclr", log_interval=1, **common)
    else:
        api.finetune(data, run, val_interval=steps, max_val_cases=4, overlay_cases=0, **common)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        (run / "steps.json").write_text(json.dumps({"ends": ends, "losses": losses}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps of every run")
    parser.add_argument("--kinds", default="pretrain,finetune", help="pretrain, finetune or both")
    parser.add_argument("--out-dir", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the run folders here (default: a temp dir)")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "PROCESSES", "STEPS", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, processes, steps, run = args.child
        child(kind, int(processes), int(steps), Path(run))
        return
    require(DATA / "jsrt")
    if args.out_dir is not None:
        _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        results: dict[str, Any] = {}
        for kind in args.kinds.split(","):
            results[kind] = {f"{n}_processes": run_once(kind, n, args.steps, work) for n in (1, 2)}
            one, two = results[kind]["1_processes"], results[kind]["2_processes"]
            results[kind]["samples_per_s_ratio_2_vs_1"] = two["samples_per_s"] / one["samples_per_s"]
            print(
                f"{kind}: 1 process {one['steps_per_s']:.2f} steps/s {one['samples_per_s']:.1f} samples/s; "
                f"2 processes {two['steps_per_s']:.2f} steps/s {two['samples_per_s']:.1f} samples/s",
                flush=True,
            )
    settings = {
        "dataset": "jsrt",
        "steps": args.steps,
        "sizes": SIZES,
        "pretrain_method": "simclr",
        "threads_per_process": 1,
        "cpu_cores": os.cpu_count(),
        "backend": "gloo",
    }
    write_result("ddp_cpu", settings, results)


if __name__ == "__main__":
    main()
