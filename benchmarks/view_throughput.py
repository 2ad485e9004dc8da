"""Is the view generator a bottleneck of pretraining? Views generated per second against the views a pretraining
step consumes per second.

For each case (the default plans of JSRT and Hippocampus), in alternating rounds on the same random batch:
- the view generator alone: ``ViewGenerator.pair`` (crop, resize, flips, noise, blur, contrast, gamma) on a batch,
  giving views per second;
- one full pretraining step of each global method (views + forward + backward + AdamW step).
The ratio ``view time / step time`` is the share of a step spent making views, and ``generator views/s /
consumed views/s`` how many times faster the generator is than the training loop needs.

    python benchmarks/view_throughput.py [--rounds 3] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from _common import write_result
from medssl.data.views import ViewGenerator
from medssl.pretrain import create

CASES: dict[str, dict[str, Any]] = {
    "2d_jsrt": {"dims": 2, "batch": 4, "patch": [256, 256], "channels": [16, 32, 64, 128, 256, 320]},
    "3d_hippocampus": {"dims": 3, "batch": 2, "patch": [40, 56, 40], "channels": [16, 32, 64, 128]},
}
METHODS = ("simclr", "byol")


def _median_seconds(fn: Callable[[], object], steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(case: dict[str, Any], rounds: int, steps: int) -> dict[str, Any]:
    """Median seconds of a view pair and of one step of each method, in alternating rounds."""
    dims, batch, patch = case["dims"], case["batch"], case["patch"]
    x = torch.rand(batch, 1, *patch)
    generator = ViewGenerator(dims, patch, scale=(0.6, 1.0), min_overlap=0.1)
    gen = torch.Generator().manual_seed(0)
    methods = {m: create(m, spatial_dims=dims, in_channels=1, channels=case["channels"]) for m in METHODS}
    optimisers = {m: torch.optim.AdamW(methods[m].parameters(), 1e-3) for m in METHODS}

    def step(m: str) -> None:
        loss = methods[m].losses(x, gen)["loss"]
        optimisers[m].zero_grad()
        loss.backward()
        optimisers[m].step()
        methods[m].after_step(0, 100)

    view_s: list[float] = []
    step_s: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        view_s.append(_median_seconds(lambda: generator.pair(x, gen), steps))
        for m in METHODS:
            step_s[m].append(_median_seconds(lambda m=m: step(m), steps))  # type: ignore[misc]
    views = statistics.median(view_s)
    per_method = {}
    for m in METHODS:
        s = statistics.median(step_s[m])
        per_method[m] = {
            "step_s": s,
            "steps_per_s": 1 / s,
            "views_consumed_per_s": 2 * batch / s,
            "view_share_of_step": views / s,
            "generator_headroom": s / views,
        }
    return {"view_pair_s": views, "views_per_s": 2 * batch / views, "rounds_view_s": view_s, "methods": per_method}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name, case in CASES.items():
        results[name] = r = measure(case, args.rounds, args.steps)
        shares = {m: f"{v['view_share_of_step']:.1%}" for m, v in r["methods"].items()}
        print(name, f"{r['views_per_s']:.1f} views/s; share of a step: {shares}")
    write_result("view_throughput", settings={**vars(args), "cases": CASES}, results=results)


if __name__ == "__main__":
    main()
