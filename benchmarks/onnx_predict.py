"""ONNX Runtime against torch for end-to-end prediction (issue 23): seconds per image on this CPU.

For each dataset (JSRT chest X-rays, 2D, five structures; the Decathlon hippocampus, 3D MR, two labels) a U-Net is
fine-tuned for a few steps (``--steps``: this is about time, not quality), exported with ``medssl export`` (the
ONNX file's own torch check included) and both backends predict the first ``--images`` images of the dataset:
read, preprocess, sliding window (the plan's patch, overlap 0.25, Gaussian weights), activation, label map back on
the input's grid, written to disk: the work of ``medssl predict`` per image, the model loaded once (its load time
reported apart). Torch and ONNX Runtime get the same number of threads (``torch.set_num_threads`` and the
session's ``intra_op_num_threads``, ``--threads``). Rounds alternate the order of the backends (torch first in
even rounds); each round times every image once after one warm-up image per backend; the result is the median of
the rounds' per-image means. Also the largest |ONNX Runtime - torch| logit over the images' whole sliding-window
logits, absolute and relative to the largest |logit|, and how many written label voxels differ (a voxel whose
logits tie within that difference may flip). Usage::

    python benchmarks/onnx_predict.py --threads 1
    python benchmarks/onnx_predict.py --threads 1 --steps 2 --images 4 --rounds 3 --out-dir /tmp/smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import _common
from _common import DATA, RESULTS, require, write_result
from medssl import api
from medssl.data.io import read_image
from medssl.data.preprocess import preprocess_image, probabilities_to_labels
from medssl.errors import MedsslError
from medssl.export.onnx import export_onnx, load_onnx_model
from medssl.segment.inference import predict_logits
from medssl.segment.predict import TrainedModel, load_model, predict_probabilities, prediction_name, write_prediction

DATASETS = {"jsrt": "images", "hippocampus": "imagesTr"}  # folder under ../shared/data -> its images


def train(data: Path, run: Path, args: argparse.Namespace) -> Path:
    """A short fine-tuning run (no test split: its predictions would only cost time)."""
    options: dict[str, Any] = {
        "val_interval": args.steps,
        "max_val_cases": 1,
        "overlay_cases": 0,
        "precision": "32-true",
    }
    if args.channels:
        options["channels"] = args.channels
    api.finetune(
        data, run, max_steps=args.steps, quiet=True, accelerator="cpu", test_fraction=0.0, val_fraction=0.05, **options
    )
    return run


def predict_file(model: TrainedModel, path: Path, out: Path) -> None:
    """What ``medssl predict`` does for one image: read, sliding window, activation, labels, write."""
    image, meta = read_image(path)
    probs = predict_probabilities(model, image, meta)
    write_prediction(probabilities_to_labels(probs, model.plan, meta), meta, model.plan, out, prediction_name(path))


def seconds_per_image(model: TrainedModel, paths: list[Path], out: Path) -> float:
    """Mean wall-clock seconds of ``predict_file`` over ``paths``."""
    start = time.perf_counter()
    for path in paths:
        predict_file(model, path, out)
    return (time.perf_counter() - start) / len(paths)


def logit_difference(models: dict[str, TrainedModel], paths: list[Path]) -> dict[str, float]:
    """Largest |ONNX Runtime - torch| of the whole-image sliding-window logits, absolute and relative to the
    largest |torch logit|."""
    absolute, largest = 0.0, 0.0
    plan = models["torch"].plan
    for path in paths:
        image, meta = read_image(path)
        x = torch.from_numpy(preprocess_image(image, meta, plan))
        with torch.no_grad():
            want = predict_logits(models["torch"].network, x, plan)
        got = predict_logits(models["onnx"].network, x, plan)
        absolute = max(absolute, float((got - want).abs().max()))
        largest = max(largest, float(want.abs().max()))
    return {"max_abs_logit_difference": absolute, "max_abs_logit": largest, "relative": absolute / max(largest, 1e-12)}


def label_mismatch(torch_out: Path, onnx_out: Path) -> dict[str, int]:
    """Label voxels (pixels) whose written value differs between the backends' outputs, and their total: a logit
    difference of 1e-5 flips a voxel whose logits tie within it (an undertrained network has many such)."""
    differ = total = files = 0
    for path in sorted(p for p in torch_out.rglob("*") if p.is_file()):
        a, b = read_image(path)[0], read_image(onnx_out / path.relative_to(torch_out))[0]
        differ, total, files = differ + int((a != b).sum()), total + a.size, files + 1
    return {"label_files": files, "label_voxels": total, "label_voxels_differing": differ}


def bench(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train, export, load both backends, time ``--rounds`` alternating rounds over the first ``--images``."""
    data = require(DATA / name)
    run = train(data, work / f"{name}-run", args)
    exported = export_onnx(run, work / f"{name}.onnx", overwrite=True)
    models: dict[str, TrainedModel] = {}
    load_s: dict[str, float] = {}
    for backend, loader in (("torch", lambda: load_model(run, "torch")),
                            ("onnx", lambda: load_onnx_model(exported.path, threads=args.threads))):  # fmt: skip
        start = time.perf_counter()
        models[backend] = loader()
        load_s[backend] = time.perf_counter() - start
    paths = sorted(p for p in (data / DATASETS[name]).iterdir() if p.is_file() and not p.name.startswith("."))
    paths = paths[: args.images]
    outs = {backend: work / f"{name}-pred-{backend}" for backend in models}
    for backend, model in models.items():  # warm-up: first-call allocations, ONNX Runtime's graph set-up
        outs[backend].mkdir()
        predict_file(model, paths[0], outs[backend])
    rounds: dict[str, list[float]] = {backend: [] for backend in models}
    for r in range(args.rounds):
        for backend in ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch"):
            rounds[backend].append(seconds_per_image(models[backend], paths, outs[backend]))
        print(f"{name} round {r + 1}: " + ", ".join(f"{b} {v[-1]:.3f} s/image" for b, v in rounds.items()), flush=True)
    median = {backend: statistics.median(values) for backend, values in rounds.items()}
    plan = models["torch"].plan
    return {
        "images": len(paths),
        "spatial_dims": plan.spatial_dims,
        "patch_size": plan.patch_size,
        "channels": plan.channels,
        "target_spacing": plan.target_spacing,
        "seconds_per_image_median": median,
        "seconds_per_image_rounds": rounds,
        "onnx_speedup": median["torch"] / median["onnx"],
        "load_seconds": load_s,
        "export_check_relative_difference": exported.max_difference,
        **label_mismatch(outs["torch"], outs["onnx"]),
        **logit_difference(models, paths),
    }


def run(args: argparse.Namespace) -> None:
    """Every dataset of ``--datasets``; writes ``<out-dir>/<name>.json``."""
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="onnx_predict_") as folder:
        for name in args.datasets:
            results[name] = bench(name, args, Path(folder))
            r = results[name]
            print(
                f"{name}: torch {r['seconds_per_image_median']['torch']:.3f} s/image, onnx "
                f"{r['seconds_per_image_median']['onnx']:.3f} s/image (x{r['onnx_speedup']:.2f}), max |ORT - torch| "
                f"logit {r['max_abs_logit_difference']:.2e}, label voxels differing {r['label_voxels_differing']} of "
                f"{r['label_voxels']}",
                flush=True,
            )
    import onnxruntime

    settings = {**{k: v for k, v in vars(args).items() if k != "out_dir"}, "onnxruntime": onnxruntime.__version__}
    settings["threads_note"] = "torch.set_num_threads and ORT intra_op_num_threads both --threads, inter_op 1"
    _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS (a smoke run: elsewhere)
    write_result(args.name, settings, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=lambda t: t.split(","), default=list(DATASETS), help="jsrt,hippocampus")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="fine-tuning steps (time, not quality)")
    parser.add_argument("--channels", type=lambda t: [int(c) for c in t.split(",")], default=None,
                        help="U-Net widths, e.g. 16,32,64 (default: the plan's)")  # fmt: skip
    parser.add_argument("--images", type=int, default=16, help="the first N images of each dataset")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="elsewhere for a smoke run")
    parser.add_argument("--name", default="onnx_predict")
    args = parser.parse_args()
    if unknown := sorted(set(args.datasets) - set(DATASETS)):
        parser.error(f"--datasets: unknown {unknown}; of {', '.join(DATASETS)}")
    try:
        run(args)
    except MedsslError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
