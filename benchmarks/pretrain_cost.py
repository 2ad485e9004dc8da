"""What each pretraining method costs on real data: its loss curve, step time and peak memory, beside SimCLR and
BYOL on the same input.

Per dataset (JSRT chest X-rays in 2D, Hippocampus MRI in 3D) the images go through the pretraining pipeline of
``medssl pretrain`` (checked loading, plan, preprocessing, image-only patches of the plan's size) with the sizes of
the label-efficiency runs. Every method trains from the same seed on the same patch stream for ``--steps`` engine
steps (``fit_in_memory``: AdamW 1e-3, cosine over the steps, the engine's ``after_step``), each in its own process so
that its peak resident memory (``ru_maxrss``) is its own. The first step (allocations) is left out of the mean.

    OMP_NUM_THREADS=2 python benchmarks/pretrain_cost.py                 # writes pretrain_cost_<dataset>.json
    python benchmarks/pretrain_cost.py --datasets jsrt --methods simclr,mim --steps 5 --name-suffix _quick
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from typing import Any

import torch

from _common import DATA, require, write_result

# the sizes of the recorded label-efficiency runs (benchmarks/results/label_efficiency_*.json)
DATASETS: dict[str, dict[str, Any]] = {
    "jsrt": {"folder": "jsrt", "patch_size": [256, 256], "channels": [16, 32, 64, 128, 256, 320], "batch": 4},
    "hippocampus": {"folder": "hippocampus", "patch_size": [40, 56, 40], "channels": [16, 32, 64, 128], "batch": 2},
}


def patch_stream(dataset: str, images: int, seed: int) -> tuple[Any, Any]:
    """The plan and a ``step -> batch`` function over image-only patches of the first ``images`` images."""
    from medssl.data.layouts import discover
    from medssl.data.loading import load_checked_cases
    from medssl.data.plan import compute_fingerprint, make_plan
    from medssl.data.preprocess import preprocess_image
    from medssl.data.sampling import PatchDataset

    spec = DATASETS[dataset]
    index = discover(require(DATA / spec["folder"]))
    cases = [*index.cases, *index.test_cases][:images]
    checked = load_checked_cases(index, cases, images_only=True)
    loaded = [checked.loaded[c.case_id] for c in cases if c.case_id in checked.loaded]
    plan = make_plan(
        compute_fingerprint(loaded, index.modality, seed=seed),
        patch_size=spec["patch_size"],
        channels=spec["channels"],
        batch_size=spec["batch"],
        require_labels=False,
    )
    pixels = [preprocess_image(c.image, c.meta, plan) for c in loaded]
    patches = PatchDataset(
        pixels, None, plan.patch_size, 1, foreground_fraction=0.0, slice_axis=plan.slice_axis,
        intensity_probability=0.0, seed=seed,
    )  # fmt: skip

    def batch(step: int) -> torch.Tensor:
        return torch.stack([patches[0]["image"] for _ in range(plan.batch_size)])

    return plan, batch


def run_one(dataset: str, method: str, steps: int, images: int) -> dict[str, Any]:
    """Train ``method`` for ``steps`` steps in this process; its losses, step times and peak memory."""
    from medssl.engine.fit_in_memory import fit_in_memory
    from medssl.pretrain import create

    plan, batch = patch_stream(dataset, images, seed=0)
    torch.manual_seed(0)
    system = create(method, spatial_dims=plan.spatial_dims, in_channels=plan.in_channels, channels=plan.channels)
    record = fit_in_memory(system, batch, steps=steps, lr=1e-3, schedule="cosine")
    seconds = record.seconds[1:] or record.seconds
    return {
        "loss": record.series("loss"),
        "step_seconds_mean": statistics.fmean(seconds),
        "step_seconds_median": statistics.median(seconds),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in system.parameters()),
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="jsrt,hippocampus")
    parser.add_argument("--methods", default="simclr,byol,pcrl,mim", help="registered names; absent ones are skipped")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=40, help="images the patches are drawn from")
    parser.add_argument("--name-suffix", default="")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.steps, args.images)))
        return
    from medssl.pretrain import names

    methods = [m for m in args.methods.split(",") if m in names()]
    skipped = sorted(set(args.methods.split(",")) - set(methods))
    for dataset in args.datasets.split(","):
        results: dict[str, Any] = {}
        for method in methods:
            command = [sys.executable, __file__, "--one", dataset, method, "--steps", str(args.steps)]
            out = subprocess.run([*command, "--images", str(args.images)], check=True, capture_output=True, text=True)
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[method]
            print(
                f"{dataset} {method}: {1e3 * r['step_seconds_median']:.0f} ms/step, peak {r['peak_rss_mb']:.0f} MB, "
                f"loss {r['loss'][0]:.4f} -> {r['loss'][-1]:.4f}",
                flush=True,
            )
        settings = {
            "dataset": dataset, **DATASETS[dataset], "steps": args.steps, "images": args.images, "lr": 1e-3,
            "schedule": "cosine", "threads": torch.get_num_threads(), "skipped_methods": skipped,
        }  # fmt: skip
        write_result(f"pretrain_cost_{dataset}{args.name_suffix}", settings, results)


if __name__ == "__main__":
    main()
