"""What PGL's alignment costs: the aligner alone against a whole PGL training step, and BYOL's step beside it.

A step = views + forward + backward + AdamW step + EMA update, the engine's step (``fit_in_memory``, as in the
first steps of a 1000-step run), at the benchmark size (3D 48^3 patches, batch 2, the small preset's U-Net encoder
16-32-64-128, heads 1024 / 256 for both methods). The alignment = ``PGL.align`` (CSAlign from the records, FlipAlign
and RoIAlign of the online and the target maps of both views) and the backward pass through the online ones, timed
on its own on the maps such a step produces. Rounds alternate the three parts so that machine load hits them alike;
the medians are reported. The issue asks for alignment < 10 % of a PGL step on a CPU.

    OMP_NUM_THREADS=1 python benchmarks/pgl_cost.py            # writes benchmarks/results/pgl_cost.json
    OMP_NUM_THREADS=1 python benchmarks/pgl_cost.py --rounds 2 --steps 1 --name pgl_cost_quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from _common import write_result
from medssl.engine.fit_in_memory import fit_in_memory
from medssl.pretrain import BYOL, PGL, PretrainMethod


def _steps(method: PretrainMethod, batch: torch.Tensor, steps: int) -> float:
    """Mean seconds of ``steps`` engine steps at the start of a 1000-step run, after one uncounted step (each fit
    starts a new optimiser, whose first step allocates its state)."""
    return statistics.fmean(fit_in_memory(method, batch, steps=steps + 1, max_steps=1000, lr=1e-4).seconds[1:])


def _alignment(method: PGL, batch: torch.Tensor, g: torch.Generator) -> Callable[[], None]:
    """The aligner's work in one PGL step, on fixed maps and records from one real step's views."""
    v1, v2, r1, r2 = method.pairs(batch, g)
    with torch.no_grad():
        online = method.encoder(torch.cat((v1, v2)))[-1]
        target = method.target_encoder(torch.cat((v1, v2)))[-1]
    online.requires_grad_(True)
    upstream = torch.randn_like(online)

    def run() -> None:
        (aligned, _), _ = method.align((online, target), r1, r2)
        online.grad = None
        aligned.backward(upstream)

    return run


def _seconds(fn: Callable[[], None], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="patch edge (voxels)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (medians are reported)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per method and round")
    parser.add_argument("--align-repeats", type=int, default=50, help="alignment runs per round")
    parser.add_argument("--name", default="pgl_cost", help="result file name under benchmarks/results")
    args = parser.parse_args()

    torch.manual_seed(0)
    channels = (16, 32, 64, 128)
    batch = torch.rand(args.batch, 1, *[args.size] * 3)
    g = torch.Generator().manual_seed(0)
    methods: dict[str, PretrainMethod] = {
        "byol": BYOL(3, 1, channels, hidden_dim=1024, projection_dim=256),
        "pgl": PGL(3, 1, channels, preset="small"),
    }
    pgl = methods["pgl"]
    assert isinstance(pgl, PGL)
    align = _alignment(pgl, batch, g)
    parts: dict[str, Callable[[], float]] = {
        name: (lambda m=m: _steps(m, batch, args.steps)) for name, m in methods.items()
    }
    parts["alignment"] = lambda: _seconds(align, args.align_repeats)
    for fn in parts.values():  # warm-up: allocator, first-call overheads
        fn()
    times: dict[str, list[float]] = {k: [] for k in parts}
    for r in range(args.rounds):
        for name, fn in parts.items():
            times[name].append(fn())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {1e3 * v[-1]:.1f} ms" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    results = {
        "byol_step_ms": 1e3 * med["byol"],
        "pgl_step_ms": 1e3 * med["pgl"],
        "alignment_ms": 1e3 * med["alignment"],
        "alignment_share_of_pgl_step": med["alignment"] / med["pgl"],
        "pgl_over_byol": med["pgl"] / med["byol"],
        "feature_map": list(pgl.encoder(batch[:1])[-1].shape[2:]),
        "rounds_ms": {k: [round(1e3 * t, 2) for t in v] for k, v in times.items()},
    }
    settings = {
        "spatial_dims": 3,
        "patch": [args.size] * 3,
        "batch": args.batch,
        "channels": list(channels),
        "heads": [1024, 256],
        "sampling_ratio": pgl.sampling_ratio,
        "rounds": args.rounds,
        "steps_per_round": args.steps,  # after one uncounted step per method and round
        "align_repeats_per_round": args.align_repeats,
        "threads": torch.get_num_threads(),
    }
    print(
        f"BYOL {results['byol_step_ms']:.0f} ms, PGL {results['pgl_step_ms']:.0f} ms per step; alignment "
        f"{results['alignment_ms']:.2f} ms = {100 * results['alignment_share_of_pgl_step']:.2f} % of a PGL step"
    )
    write_result(args.name, settings, results)


if __name__ == "__main__":
    main()
