"""Annotation-free segmentation on real data: k-means and S3-Net, scored under every protocol.

    OMP_NUM_THREADS=2 python benchmarks/labelfree.py ph2            # all 200 PH2 images
    OMP_NUM_THREADS=2 python benchmarks/labelfree.py jsrt --limit 50
    OMP_NUM_THREADS=2 python benchmarks/labelfree.py vessels         # DRIVE test (20) + STARE (20)
    OMP_NUM_THREADS=2 python benchmarks/labelfree.py ph2 --limit 20 --timing   # on a quiet machine
    python benchmarks/labelfree.py ph2 --methods s3 s3-improved --seed 1        # another seed: labelfree_ph2_seed1

Each method runs in its own process (so its peak resident memory is its own) over the same images; every
cluster map is scored with the best-cluster protocol (the paper's), the two no-ground-truth protocols (border,
darkest) and the public code's optimistic scoring (paper-code). Writes benchmarks/results/labelfree_<set>.json.
Our defaults were chosen on the first 40 PH2 images by name (IMD002-IMD050); all 200 are reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import DATA, RESULTS, require, write_result
from medssl.data.io import read_image, read_label, stem
from medssl.labelfree.cluster_evaluation import score_clusters
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, S3Config
from medssl.labelfree.preprocess import image_lightness
from medssl.labelfree.segment import segment_image

PROTOCOLS = ("best-cluster", "border", "darkest", "paper-code")
TUNING = "defaults chosen on the first 40 PH2 images by name (IMD002-IMD050); every image reported"
# Settings for the other sets: no hair removal (it would erase vessels and thin structures) and three clusters
# (chest X-ray: air outside the body, lungs, body; fundus: background, vessels, bright disc and exudates).
OTHER_SETS = {"hair_size": 0, "clusters": 3}


def methods(dataset: str, seed: int = 0) -> dict[str, tuple[str, LabelFreeConfig, int | None]]:
    """name -> (method, settings, image limit or None for all)."""
    extra: dict[str, Any] = {"seed": seed, **({} if dataset == "ph2" else OTHER_SETS)}
    plain = {"colour_space": "rgb", "field_of_view": False, "hair_size": 0, "smooth_sigma": 0.0, "min_region": 0.0}
    table: dict[str, tuple[str, LabelFreeConfig, int | None]] = {
        "kmeans-plain": ("kmeans", KMeansConfig(**plain, clusters=2), None),
        "kmeans": ("kmeans", KMeansConfig(**extra), None),
        "s3": ("s3", S3Config(**extra), None),
        "s3-improved": ("s3", S3Config(boundary_loss=True, learnable_affine=True, **extra), None),
    }
    if dataset == "ph2":
        # The paper's settings at 16 channels and stride 2 (at 64 channels and full resolution one step takes
        # several seconds here); the first 40 images only, for time.
        table["s3-paper-settings"] = ("s3", S3Config.paper(channels=16, stride=2, seed=seed), 40)
    return table


def cases(dataset: str) -> list[tuple[str, Path, dict[str, Callable[[], np.ndarray]]]]:
    """(case, image path, {structure: truth loader}) for a dataset, sorted by case."""
    found: list[tuple[str, Path, dict[str, Callable[[], np.ndarray]]]] = []
    if dataset == "ph2":
        root = require(DATA / "ph2")
        for path in sorted((root / "images").glob("*.png")):
            found.append((stem(path), path, {"lesion": _mask(root / "masks" / path.name)}))
    elif dataset == "jsrt":
        root = require(DATA / "jsrt")
        for path in sorted((root / "images").glob("*.png")):
            lungs = [root / "masks" / side / path.name for side in ("left_lung", "right_lung")]
            found.append(
                (stem(path), path, {"lungs": _union(lungs), "heart": _mask(root / "masks" / "heart" / path.name)})
            )
    elif dataset == "vessels":
        drive = require(DATA / "drive" / "test")
        for path in sorted((drive / "images").glob("*.tif")):
            number = path.name.split("_")[0]
            found.append((f"drive_{number}", path, {"vessels": _mask(drive / "1st_manual" / f"{number}_manual1.gif")}))
        stare = require(DATA / "stare")
        for path in sorted((stare / "images").glob("*.png")):
            labels = sorted((stare / "labels-ah").glob(f"{stem(path)}*"))
            found.append((f"stare_{stem(path)}", path, {"vessels": _mask(labels[0])}))
    else:
        sys.exit(f"unknown dataset {dataset}")
    return found


def _mask(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_label(path)[0] > 0


def _union(paths: list[Path]) -> Callable[[], np.ndarray]:
    return lambda: np.logical_or.reduce([read_label(p)[0] > 0 for p in paths])


def area_ratio(labels: np.ndarray, cluster: int, truth: np.ndarray) -> float:
    """The selected cluster's area over the truth's (above 1: the cluster spills beyond the structure)."""
    return float((labels == cluster).sum() / max(int(truth.sum()), 1))


def run_worker(dataset: str, name: str, limit: int | None, threads: int, out: Path, seed: int = 0) -> None:
    """Segment and score every case with one method; write the per-case rows and the peak memory."""
    torch.set_num_threads(threads)
    method, config, own_limit = methods(dataset, seed)[name]
    chosen = cases(dataset)
    for bound in (limit, own_limit):
        chosen = chosen[:bound] if bound else chosen
    rows = []
    for case, path, structures in chosen:
        image, _ = read_image(path)
        start = time.perf_counter()
        result = segment_image(image, method, config)
        seconds = time.perf_counter() - start
        lightness = image_lightness(image)
        row: dict[str, Any] = {"case": case, "seconds": seconds, "iterations": result.iterations, "scores": {}}
        for structure, load in structures.items():
            truth = load()
            per_protocol = {}
            for protocol in PROTOCOLS:
                scores = score_clusters(result.labels, truth, protocol, lightness=lightness)
                scores["area_ratio"] = area_ratio(result.labels, scores["cluster"], truth)
                per_protocol[protocol] = scores
            row["scores"][structure] = per_protocol
        rows.append(row)
        print(f"{name} {case} {seconds:.2f}s {row['scores']}"[:160], flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps({"rows": rows, "peak_rss_mb": peak_mb, "config": asdict(config), "method": method}))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per structure and protocol: mean and median of each metric (over defined values), and timing."""
    summary: dict[str, Any] = {}
    for structure in rows[0]["scores"]:
        summary[structure] = {}
        for protocol in PROTOCOLS:
            entries = [r["scores"][structure][protocol] for r in rows]
            metrics = [k for k in entries[0] if k not in ("cluster", "n_clusters")]
            stats: dict[str, Any] = {}
            for metric in metrics:
                values = [float(e[metric]) for e in entries if e.get(metric) is not None]
                stats[metric] = float(np.mean(values)) if values else None
                stats[f"{metric}_median"] = float(np.median(values)) if values else None
                stats[f"n_undefined_{metric}"] = len(entries) - len(values)
            summary[structure][protocol] = stats
    seconds = [r["seconds"] for r in rows]
    summary["time"] = {
        "mean_s": float(np.mean(seconds)),
        "median_s": float(np.median(seconds)),
        "max_s": float(np.max(seconds)),
        "mean_iterations": float(np.mean([r["iterations"] for r in rows])),
    }
    return summary


CASE_METRICS = ("cluster", "dice", "hd95", "xor", "hm", "area_ratio")


def write_cases_csv(name: str, results: dict[str, Any]) -> Path:
    """Move the per-image rows out of ``results`` into ``benchmarks/results/<name>_cases.csv`` (one row per
    method, image and structure; a column per protocol and metric), keeping the JSON small."""
    columns = [f"{p}_{m}" for p in PROTOCOLS for m in CASE_METRICS]
    path = RESULTS / f"{name}_cases.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["method", "case", "structure", "seconds", "iterations", *columns])
        for method, result in results.items():
            for row in result.pop("cases"):
                for structure, scores in row["scores"].items():
                    values = [scores[p].get(m) for p in PROTOCOLS for m in CASE_METRICS]
                    cells = ["" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in values]
                    writer.writerow(
                        [method, row["case"], structure, f"{row['seconds']:.3f}", row["iterations"], *cells]
                    )
    print(f"wrote {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["ph2", "jsrt", "vessels"])
    parser.add_argument("--methods", nargs="+", default=None, help="subset of the method names")
    parser.add_argument("--limit", type=int, default=None, help="first N cases only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every method; not 0: results named <set>_seed<N>, methods '<name> seed <N>'",
    )
    parser.add_argument("--timing", action="store_true", help="write timing_labelfree_<set>.json (a timing run)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.dataset, args.worker, args.limit, args.threads, args.worker_out, args.seed)
        return
    names = args.methods or list(methods(args.dataset))
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            part = Path(tmp) / f"{name}.json"
            command = [
                sys.executable,
                __file__,
                args.dataset,
                "--worker",
                name,
                "--worker-out",
                str(part),
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
            ] + (["--limit", str(args.limit)] if args.limit else [])
            subprocess.run(command, check=True, env=env)
            data = json.loads(part.read_text())
            results[name if args.seed == 0 else f"{name} seed {args.seed}"] = {
                "method": data["method"],
                "config": data["config"],
                "n_cases": len(data["rows"]),
                "peak_rss_mb": data["peak_rss_mb"],
                "summary": summarise(data["rows"]),
                "cases": data["rows"],
            }
    settings = {
        "dataset": args.dataset,
        "limit": args.limit,
        "threads": args.threads,
        "seed": args.seed,
        "protocols": list(PROTOCOLS),
        "tuning": TUNING,
        "working_size": 256,
        "note": "area_ratio: selected cluster area / ground-truth area (spill when > 1)",
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    name = f"{'timing_' if args.timing else ''}labelfree_{args.dataset}{f'_seed{args.seed}' if args.seed else ''}"
    settings["cases_csv"] = write_cases_csv(name, results).name
    write_result(name, settings, results)


if __name__ == "__main__":
    main()
