"""S3-Net's learning rate, chosen on the PH2 tuning subset over three seeds.

    python benchmarks/labelfree_s3_lr.py            # lr 0.03, 0.05, 0.1 x seeds 0-2, two processes

The first 40 PH2 images by name (the subset every label-free default was chosen on), best-cluster protocol.
For each learning rate and seed: mean, median and minimum Dice, the median selected / truth area, and the
number of images on which S3-Net ends more than 5 Dice points below k-means with the same preprocessing (its
start): with too large a step, the momentum update after the start labels were reproduced can move the
returned map far from them. Writes benchmarks/results/s3_lr_ph2.json. The reported numbers on all 200
images are from benchmarks/labelfree.py.
"""

from __future__ import annotations

import argparse
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import write_result
from labelfree import area_ratio, cases
from medssl.data.io import read_image, read_label
from medssl.labelfree.cluster_evaluation import score_clusters
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, S3Config
from medssl.labelfree.segment import segment_image

SUBSET = 40
LOSS_POINTS = 0.05  # "S3-Net far below its start": more than 5 Dice points below k-means


def score_one(job: tuple[Path, str, LabelFreeConfig]) -> tuple[float, float, float, int]:
    """(best-cluster Dice, selected / truth area, seconds, steps) of one method on one image."""
    path, method, config = job
    torch.set_num_threads(1)
    truth = read_label(path.parent.parent / "masks" / path.name)[0] > 0
    image, _ = read_image(path)
    start = time.perf_counter()
    result = segment_image(image, method, config)
    seconds = time.perf_counter() - start
    scores = score_clusters(result.labels, truth, "best-cluster")
    return float(scores["dice"]), area_ratio(result.labels, scores["cluster"], truth), seconds, result.iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    paths = [path for _, path, _ in cases("ph2")[:SUBSET]]
    names = [p.stem for p in paths]
    with Pool(args.processes) as pool:
        reference = pool.map(score_one, [(p, "kmeans", KMeansConfig()) for p in paths])
        kmeans_dice = np.array([r[0] for r in reference])
        print(f"k-means: Dice {kmeans_dice.mean():.4f}", flush=True)
        results: dict[str, Any] = {"kmeans": {"dice_mean": float(kmeans_dice.mean()), "dice": kmeans_dice.tolist()}}
        for lr in args.lrs:
            runs = []
            for seed in range(args.seeds):
                rows = pool.map(score_one, [(p, "s3", S3Config(lr=lr, seed=seed)) for p in paths])
                dice = np.array([r[0] for r in rows])
                runs.append(
                    {
                        "seed": seed,
                        "dice_mean": float(dice.mean()),
                        "dice_median": float(np.median(dice)),
                        "dice_min": float(dice.min()),
                        "area_ratio_median": float(np.median([r[1] for r in rows])),
                        "images_below_kmeans": int(np.sum(dice < kmeans_dice - LOSS_POINTS)),
                        "seconds_mean": float(np.mean([r[2] for r in rows])),
                        "steps_mean": float(np.mean([r[3] for r in rows])),
                        "dice": dice.tolist(),
                    }
                )
                print(f"lr {lr} seed {seed}: Dice {dice.mean():.4f} / {np.median(dice):.4f}", flush=True)
            results[f"lr {lr}"] = {
                "lr": lr,
                "dice_mean_over_seeds": float(np.mean([r["dice_mean"] for r in runs])),
                "dice_median_over_seeds": float(np.mean([r["dice_median"] for r in runs])),
                "images_below_kmeans_total": int(sum(r["images_below_kmeans"] for r in runs)),
                "runs": runs,
            }
    settings = {
        "dataset": "ph2",
        "images": names,
        "seeds": args.seeds,
        "threads_per_process": 1,
        "processes": args.processes,
        "protocol": "best-cluster",
        "below_kmeans_points": LOSS_POINTS,
        "note": "the tuning subset (first 40 by name); the choice of S3-Net's learning rate, not the reported result",
    }
    write_result("s3_lr_ph2", settings, results)


if __name__ == "__main__":
    main()
