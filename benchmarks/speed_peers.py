"""Speed against independent peers (issue 24, first part): medssl's whole training step and end-to-end prediction
against MONAI's ``DynUNet`` trained and run the way MONAI's tutorials do, on the same network size and inputs.

Per dataset (JSRT chest X-rays, 2D, five overlapping structures; the Decathlon hippocampus, 3D MR, two labels) a
1-step ``medssl finetune`` run fixes the plan (spacing, patch, batch, widths) that both sides use; ``DynUNet`` is
laid out as medssl's U-Net and its parameter count must be within 5 % of it (checked before anything is timed).

- Training, the whole step (loader, augmentation, forward, backward, AdamW, schedule). medssl: ``api.finetune``
  run for 1 (warm-up), N1 = ``--warmup`` and N2 = N1 + ``--steps`` steps; seconds per step =
  (train_seconds(N2) - train_seconds(N1)) / ``--steps``, so set-up, the one validation (1 case) and the
  Lightning start cancel. MONAI: ``CacheDataset`` (load, channel first, spacing, z-score, pad, fg/bg indices) +
  ``RandCropByPosNegLabeld`` (1/3 foreground) + ``RandAffined`` (p 0.3) + ``RandScaleIntensityd`` /
  ``RandShiftIntensityd`` (p 0.3) + ``RandGaussianNoised`` (p 0.15), ``DataLoader`` (no workers, as medssl),
  Dice + cross-entropy, AdamW and a poly schedule: seconds from step N1 to step N2 of one loop. No flips on
  either side (medssl's default).
- Prediction from file to written file: ``medssl.api.predict`` (model load, input check, read, preprocess,
  sliding window, activation, back to the input grid, write) against ``LoadImaged`` + ``Spacingd`` +
  ``NormalizeIntensityd``, ``SlidingWindowInferer`` (same tile, overlap 0.25, Gaussian, 4 tiles per batch),
  ``Invertd``, ``SaveImage``; the first ``--images`` images, after a one-image warm-up; images per second.

Each part runs in its own subprocess (peak resident memory: its ``VmHWM``; ``ru_maxrss`` is kept beside it,
an upper bound: on Linux it inherits the parent's size); the sides alternate order over
``--rounds``; the result is the median over rounds. Beside the times: FLOPs of one forward + backward
(``FlopCounterMode``) and the fraction of this CPU's measured fp32 / bf16 matmul peak a step reaches. nnU-Net v2
and lightly are recorded as not runnable here, with the reason. Dice at equal steps: ``peers_dice.py``. Usage::

    python benchmarks/speed_peers.py --threads 1
    OMP_NUM_THREADS=1 python benchmarks/speed_peers.py --threads 1 --warmup 1 --steps 2 --rounds 1 --images 2 \\
        --peak-size 1024 --out-dir /tmp/speed_peers_smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import _common
import _speed_peers_monai as peer
from _common import DATA, RESULTS, require, write_result

DATASETS = {"jsrt": "images", "hippocampus": "imagesTr"}  # folder under ../shared/data -> its images
TARGET_RATIO = 0.9  # medssl's time <= 0.9x the peer's (issue 24); computed, not asserted
PARAMETER_TOLERANCE = 0.05
PLAN_FIELDS = ("spatial_dims", "task", "target_spacing", "patch_size", "batch_size", "channels")
NNUNET = (
    "nnU-Net v2 not run: nnunetv2 2.8.1 (the version pip resolves here) needs dynamic-network-architectures, which "
    "imports timm, which imports torchvision, whose compiled _C.so needs CUDA libraries this CPU-only machine "
    "lacks; nothing may be installed into the system python"
)
LIGHTLY = "lightly not run: it requires torchvision, which cannot be loaded here (same reason as nnU-Net)"


# ------------------------------------------------------------------------------------------------- pure parts


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def parameter_match(spatial_dims: int, in_channels: int, out_channels: int, channels: list[int]) -> dict[str, Any]:
    """Parameters of medssl's U-Net and of the matched ``DynUNet``, and their relative difference."""
    from medssl.networks.unet import build_unet

    ours = parameter_count(build_unet(spatial_dims, in_channels, out_channels, channels=tuple(channels)))
    theirs = parameter_count(peer.matched_dynunet(spatial_dims, in_channels, out_channels, channels))
    return {"medssl": ours, "monai_dynunet": theirs, "relative_difference": abs(theirs - ours) / ours}


def check_parameters(match: dict[str, Any], tolerance: float = PARAMETER_TOLERANCE) -> None:
    """Refuse to time networks whose sizes differ by more than ``tolerance`` (relative)."""
    if not match["relative_difference"] <= tolerance:
        raise AssertionError(f"parameter counts differ by more than {tolerance:.0%}: {match}")


def step_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per multiply-add) of one forward and backward of ``net`` on ``x``, as ``FlopCounterMode``
    counts them (convolutions, transposed convolutions, matmuls; not norms or activations)."""
    from torch.utils.flop_counter import FlopCounterMode

    net.train()
    counter = FlopCounterMode(display=False)
    with counter:
        out = net(x)
        (out[0] if isinstance(out, list | tuple) else out).float().sum().backward()
    net.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def targets(train: dict[str, float], predict: dict[str, float], target: float = TARGET_RATIO) -> dict[str, Any]:
    """medssl / MONAI ratios of seconds per training step and of seconds per predicted image, and whether each
    meets ``target`` (at most ``target`` times the peer's time)."""
    out: dict[str, Any] = {"target_ratio": target}
    for name, seconds in (("train_step", train), ("predict", predict)):
        ratio = seconds["medssl"] / seconds["monai"]
        out[f"{name}_ratio"] = ratio
        out[f"{name}_target_met"] = ratio <= target
    return out


def matmul_peak(n: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` ``n x n`` matrix products in ``dtype`` (after one warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------- child processes


def _finetune(data: Path, run: Path, steps: int, precision: str) -> float:
    """``api.finetune`` for ``steps`` steps, one validation case at the end, no test split, no checkpoint between;
    its training seconds."""
    from medssl import api

    result = api.finetune(
        data, run, max_steps=steps, overwrite=True, quiet=True, accelerator="cpu", precision=precision,
        test_fraction=0.0, val_fraction=0.05, val_interval=steps, max_val_cases=1, overlay_cases=0,
        checkpoint_interval=10**6,
    )  # fmt: skip
    return float(result.train_seconds)


def _precision(args: argparse.Namespace) -> str:
    return "bf16-mixed" if args.precision == "bf16" else "32-true"


def part_prepare(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    """The plan both sides use (and the model medssl predicts with): a 1-step run."""
    _finetune(data, work / "model", 1, _precision(args))
    return {"plan": json.loads((work / "model" / "plan.json").read_text())}


def part_train_medssl(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    n1, n2 = args.warmup, args.warmup + args.steps
    _finetune(data, work / "run-warm-up", 1, _precision(args))  # first-call costs, paid outside the difference
    seconds = {n: _finetune(data, work / f"run-{n}", n, _precision(args)) for n in (n1, n2)}
    return {"seconds_per_step": (seconds[n2] - seconds[n1]) / (n2 - n1), "train_seconds": seconds}


def part_train_monai(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    plan = json.loads((work / "model" / "plan.json").read_text())
    ids = json.loads((work / "model" / "split.json").read_text())["train_labelled"]  # medssl's training cases
    n1, n2 = args.warmup, args.warmup + args.steps
    stamps = peer.train(data, plan, ids, n2, bf16=args.precision == "bf16")
    return {"seconds_per_step": (stamps[n2] - stamps[n1]) / (n2 - n1), "cases": len(ids)}


def _inputs(data: Path, work: Path, images: int) -> tuple[Path, Path]:
    """Folders holding the first image (warm-up) and the first ``images`` images of the dataset."""
    paths = sorted(p for p in (data / DATASETS[data.name]).iterdir() if p.is_file() and not p.name.startswith("."))
    folders = (work / "inputs-warm-up", work / "inputs")
    for folder, chosen in zip(folders, (paths[:1], paths[:images]), strict=True):
        if not folder.is_dir():
            folder.mkdir()
            for p in chosen:
                shutil.copy(p, folder / p.name)
    return folders


def part_predict_medssl(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    from medssl import api

    warm, inputs = _inputs(data, work, args.images)
    out = Path(tempfile.mkdtemp(dir=work))
    api.predict(work / "model", warm, out / "warm-up", quiet=True)
    seconds = _timed(lambda: api.predict(work / "model", inputs, out / "timed", quiet=True))
    return {"images": len(list(inputs.iterdir())), "seconds": seconds}


def part_predict_monai(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    warm, inputs = _inputs(data, work, args.images)
    out = Path(tempfile.mkdtemp(dir=work))
    plan = json.loads((work / "model" / "plan.json").read_text())

    def run(folder: Path, where: Path) -> None:
        predict = peer.predictor(plan)  # network built per call, as medssl's api.predict loads its model
        for path in sorted(folder.iterdir()):
            predict(path, where)

    run(warm, out / "warm-up")
    seconds = _timed(lambda: run(inputs, out / "timed"))
    return {"images": len(list(inputs.iterdir())), "seconds": seconds}


PARTS = {
    "prepare": part_prepare,
    "train_medssl": part_train_medssl,
    "train_monai": part_train_monai,
    "predict_medssl": part_predict_medssl,
    "predict_monai": part_predict_monai,
}


def _child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data, work = require(DATA / args.dataset), Path(args.work)
    result = PARTS[args.part](args, data, work)
    result |= _common.peak_memory_mb()
    print(json.dumps(result))


def _run_part(part: str, dataset: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--part", part, "--dataset", dataset, "--work", str(work)]
    for option in ("threads", "warmup", "steps", "images", "precision"):
        cmd += [f"--{option}", str(getattr(args, option))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{dataset} {part} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(dataset, part, {k: v for k, v in result.items() if k != "plan"}, flush=True)
    return result


# ------------------------------------------------------------------------------------------------ the parent


def _flops(plan: dict[str, Any], bf16: bool) -> dict[str, int]:
    """FLOPs of one training step's forward + backward of each network on the plan's batch of patches."""
    from medssl.networks.unet import build_unet

    out_channels = len(plan["class_names"]) if plan["task"] == "multilabel" else len(plan["class_values"])
    x = torch.randn(plan["batch_size"], plan["in_channels"], *plan["patch_size"])
    ours = build_unet(plan["spatial_dims"], plan["in_channels"], out_channels, channels=tuple(plan["channels"]))
    nets = {"medssl": ours, "monai": peer.network_for(plan)}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return {side: step_flops(net, x) for side, net in nets.items()}


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over rounds of seconds per training step and seconds per image, and peak memory per part."""
    out: dict[str, Any] = {}
    for part, rs in runs.items():
        values = [r["seconds_per_step"] if part.startswith("train") else r["seconds"] / r["images"] for r in rs]
        out[part] = {
            "seconds_per_step" if part.startswith("train") else "seconds_per_image": statistics.median(values),
            "rounds": values,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            "ru_maxrss_mb": max(r["ru_maxrss_mb"] for r in rs),
            **({"images_per_second": 1 / statistics.median(values)} if part.startswith("predict") else {}),
        }
    return out


def bench(dataset: str, args: argparse.Namespace, peaks: dict[str, float], work: Path) -> dict[str, Any]:
    """Prepare, check the parameter counts, then alternate the sides over ``--rounds``."""
    work.mkdir()
    plan = _run_part("prepare", dataset, work, args)["plan"]
    out_channels = len(plan["class_names"]) if plan["task"] == "multilabel" else len(plan["class_values"])
    match = parameter_match(plan["spatial_dims"], plan["in_channels"], out_channels, plan["channels"])
    check_parameters(match)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PARTS if p != "prepare"}
    for r in range(args.rounds):
        for kind in ("train", "predict"):
            sides = ("medssl", "monai") if r % 2 == 0 else ("monai", "medssl")
            for side in sides:
                runs[f"{kind}_{side}"].append(_run_part(f"{kind}_{side}", dataset, work, args))
    result = _summary(runs)
    train = {s: result[f"train_{s}"]["seconds_per_step"] for s in ("medssl", "monai")}
    predict = {s: result[f"predict_{s}"]["seconds_per_image"] for s in ("medssl", "monai")}
    flops = _flops(plan, args.precision == "bf16")
    return {
        "plan": {k: plan[k] for k in PLAN_FIELDS},
        "training_cases": runs["train_monai"][0]["cases"],
        "parameters": match,
        **result,
        **targets(train, predict),
        "flops_per_step": flops,
        "fraction_of_peak": {
            f"{side}_{kind}": flops[side] / train[side] / peaks[f"{kind}_flops_per_second"]
            for side in flops
            for kind in ("fp32", "bf16")
        },
    }


def peers() -> dict[str, Any]:
    """Which independent peers ran, which could not run here and why; what this python holds is checked now."""
    held = {name: importlib.util.find_spec(name) is not None for name in ("nnunetv2", "torchvision", "lightly")}
    return {
        "monai_dynunet": f"run (monai {importlib.metadata.version('monai')})",
        "nnunetv2": NNUNET,
        "lightly": LIGHTLY,
        "importable_here": held,
        "dice_at_equal_steps": "benchmarks/peers_dice.py (peers_dice.json)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=lambda t: t.split(","), default=list(DATASETS), help="jsrt,hippocampus")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5, help="training steps before the timed ones (N1)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (N2 - N1)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating repeats of every part")
    parser.add_argument("--images", type=int, default=16, help="predict the first N images of each dataset")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast on both sides")
    parser.add_argument("--peak-size", type=int, default=4096, help="n of the n x n matmuls that measure the peak")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="elsewhere for a smoke run")
    parser.add_argument("--name", default="speed_peers")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        _child(args)
        return
    if unknown := sorted(set(args.datasets) - set(DATASETS)):
        parser.error(f"--datasets: unknown {unknown}; of {', '.join(DATASETS)}")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {f"{k}_flops_per_second": matmul_peak(args.peak_size, d) for k, d in dtypes.items()}
    print("matmul peak", {k: f"{v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()}, flush=True)
    with tempfile.TemporaryDirectory(prefix="speed_peers_") as folder:
        results = {d: bench(d, args, peaks, Path(folder) / d) for d in args.datasets}
    settings = {k: v for k, v in vars(args).items() if k not in ("out_dir", "part", "dataset", "work")}
    _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS (a smoke run: elsewhere)
    write_result(args.name, {**settings, "peak_matmul": peaks, "peers": peers()}, results)


if __name__ == "__main__":
    main()
