"""Speed of our training step and sliding-window prediction against a plain MONAI/PyTorch reference.

Same network, same input, same loss, same optimiser, in one run; each part runs in its own subprocess so that
its peak resident memory (``VmHWM``; ``ru_maxrss`` would carry the parent's size) is its own. Ours = the engine's
step (``fit_in_memory``: ``SystemModule`` driving ``SupervisedSegmentation`` in a Lightning run, AdamW and the
poly schedule of ``medssl finetune``;
augmentation off, so that both sides do the same work; its cost is reported separately); reference = a hand-written
loop with ``monai.losses.DiceCELoss``. Prediction: ``medssl.segment.inference.predict_logits``
against ``monai.inferers.sliding_window_inference`` with the same tile, overlap and Gaussian weighting.

    python benchmarks/speed.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from _common import peak_memory_mb, write_result

CASES = {
    "2d": {
        "dims": 2,
        "batch": 4,
        "patch": [256, 256],
        "channels": [16, 32, 64, 128, 256, 256],
        "classes": 6,
        "image": [512, 512],
    },
    "3d": {
        "dims": 3,
        "batch": 2,
        "patch": [40, 56, 40],
        "channels": [16, 32, 64, 128],
        "classes": 3,
        "image": [96, 112, 96],
    },
}


def _plan(case: dict[str, Any]) -> Any:
    from medssl.data.plan import Plan

    return Plan(
        spatial_dims=case["dims"],
        data_dims=case["dims"],
        in_channels=1,
        task="labelmap",
        class_values=list(range(case["classes"])),
        class_names=[str(i) for i in range(case["classes"])],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=case["patch"],
        channels=case["channels"],
        batch_size=case["batch"],
    )


def _data(case: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case["batch"], 1, *case["patch"], generator=g)
    y = torch.randint(0, case["classes"], (case["batch"], 1, *case["patch"]), generator=g)
    return x, y


def _network(case: dict[str, Any]) -> torch.nn.Module:
    from medssl.segment.predict import build_network

    torch.manual_seed(0)
    return build_network(_plan(case))


def train_reference(case: dict[str, Any], steps: int, warmup: int) -> list[float]:
    from monai.losses import DiceCELoss

    net, (x, y) = _network(case), _data(case)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def train_ours(case: dict[str, Any], steps: int, warmup: int, affine_probability: float = 0.0) -> list[float]:
    from medssl.engine.fit_in_memory import fit_in_memory
    from medssl.segment.supervised import SupervisedSegmentation

    x, y = _data(case)
    system = SupervisedSegmentation(_network(case), _plan(case), affine_probability=affine_probability)
    # medssl finetune's optimiser (AdamW at 2e-3, weight decay 1e-4, poly decay), as the reference's
    batch = {"image": x, "target": y}
    record = fit_in_memory(system, batch, steps=warmup + steps, lr=2e-3, weight_decay=1e-4, schedule="poly")
    return record.seconds[warmup:]


def predict_reference(case: dict[str, Any], repeats: int) -> list[float]:
    from monai.inferers import sliding_window_inference

    net = _network(case).eval()
    image = torch.randn(1, 1, *case["image"], generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            sliding_window_inference(image, tuple(case["patch"]), 4, net, overlap=0.25, mode="gaussian")
            times.append(time.perf_counter() - t)
    return times


def predict_ours(case: dict[str, Any], repeats: int) -> list[float]:
    from medssl.segment.inference import predict_logits

    net = _network(case).eval()
    image = torch.randn(1, *case["image"], generator=torch.Generator().manual_seed(1))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predict_logits(net, image, _plan(case), overlap=0.25, sw_batch_size=4)
        times.append(time.perf_counter() - t)
    return times


PARTS = {
    "train_reference": lambda c, a: train_reference(c, a.steps, a.warmup),
    "train_ours": lambda c, a: train_ours(c, a.steps, a.warmup),
    "train_ours_with_augmentation": lambda c, a: train_ours(c, a.steps, a.warmup, affine_probability=0.3),
    "predict_reference": lambda c, a: predict_reference(c, a.repeats),
    "predict_ours": lambda c, a: predict_ours(c, a.repeats),
}


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    times = PARTS[args.part](CASES[args.case], args)
    summary = {"median_s": statistics.median(times), "mean_s": statistics.fmean(times), "n": len(times)}
    print(json.dumps(summary | peak_memory_mb()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="alternating repeats of every part")
    parser.add_argument("--part", choices=sorted(PARTS))
    parser.add_argument("--case", choices=sorted(CASES))
    args = parser.parse_args()
    if args.part:
        _child(args)
        return
    results: dict[str, Any] = {}
    for case in CASES:
        runs: dict[str, list[dict[str, float]]] = {part: [] for part in PARTS}
        # alternate ours and the reference, several rounds, so that drifting machine load hits both alike
        for _ in range(args.rounds):
            for part in PARTS:
                cmd = [sys.executable, __file__, "--part", part, "--case", case]
                cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
                cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                runs[part].append(json.loads(out))
                print(case, part, runs[part][-1], flush=True)
        results[case] = {
            part: {
                "median_s": statistics.median(r["median_s"] for r in rs),
                "round_medians_s": [r["median_s"] for r in rs],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            }
            for part, rs in runs.items()
        }
        r = results[case]
        r["train_ratio"] = r["train_ours"]["median_s"] / r["train_reference"]["median_s"]
        r["predict_ratio"] = r["predict_ours"]["median_s"] / r["predict_reference"]["median_s"]
        r["augmentation_overhead"] = r["train_ours_with_augmentation"]["median_s"] / r["train_ours"]["median_s"] - 1
    write_result("speed", settings={**vars(args), "cases": CASES}, results=results)


if __name__ == "__main__":
    main()
