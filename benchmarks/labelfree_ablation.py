"""What makes the clusters spill on PH2, measured: one change at a time, on the tuning subset only.

    OMP_NUM_THREADS=1 python benchmarks/labelfree_ablation.py

k-means steps from the paper's baseline (RGB, K=2, nothing else) to our defaults, then single departures
from the defaults (no field of view, K=3, position features), and S3-Net with the paper's start and learning
rate against ours. First 40 PH2 images by name (the subset the defaults were chosen on); writes
benchmarks/results/ablation_labelfree_ph2.json. The reported numbers on all 200 images are from
benchmarks/labelfree.py.
"""

from __future__ import annotations

import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import ROOT, write_result
from labelfree import area_ratio, cases
from medssl.data.io import read_image
from medssl.labelfree.cluster_evaluation import score_clusters
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, S3Config
from medssl.labelfree.segment import segment_image

SUBSET = 40
EXAMPLES = ("IMD003", "IMD008", "IMD017", "IMD037")  # from the tuning subset: hair, small, large, a failure
PLAIN = {"colour_space": "rgb", "field_of_view": False, "hair_size": 0, "smooth_sigma": 0.0, "min_region": 0.0}
STEPS: list[tuple[str, str, LabelFreeConfig]] = [
    ("k-means, RGB (paper baseline)", "kmeans", KMeansConfig(**PLAIN)),
    ("+ CIELAB", "kmeans", KMeansConfig(**{**PLAIN, "colour_space": "lab"})),
    ("+ field of view", "kmeans", KMeansConfig(**{**PLAIN, "colour_space": "lab", "field_of_view": True})),
    (
        "+ hair removal",
        "kmeans",
        KMeansConfig(**{**PLAIN, "colour_space": "lab", "field_of_view": True, "hair_size": 9}),
    ),
    ("+ smoothing 2 px", "kmeans", KMeansConfig(min_region=0.0)),
    ("+ small-region clean-up (k-means default)", "kmeans", KMeansConfig()),
    ("default without field of view", "kmeans", KMeansConfig(field_of_view=False)),
    ("default with K=3", "kmeans", KMeansConfig(clusters=3)),
    ("default + position (weight 0.5)", "kmeans", KMeansConfig(position_weight=0.5)),
    ("default + position (weight 2)", "kmeans", KMeansConfig(position_weight=2.0)),
    ("S3 default (k-means start, lr 0.05)", "s3", S3Config()),
    ("S3, k-means start, lr 0.1 (the previous default)", "s3", S3Config(lr=0.1)),
    ("S3, own-argmax start, lr 0.05", "s3", S3Config(start="argmax", start_iterations=0, max_iterations=10)),
    (
        "S3, own-argmax start, lr 0.36 (paper)",
        "s3",
        S3Config(start="argmax", start_iterations=0, lr=0.36, max_iterations=10),
    ),
]


def example_figure(loaded: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """docs/labelfree_spill.png: the best-overlap cluster of the paper's k-means, ours, and S3-Net."""
    variants = [("k-means, RGB (paper baseline)", STEPS[0]), ("k-means, ours", STEPS[5]), ("S3, ours", STEPS[10])]
    chosen = [item for item in loaded if item[0] in EXAMPLES]
    fig, axes = plt.subplots(len(chosen), len(variants), figsize=(3.6 * len(variants), 2.9 * len(chosen)))
    for row, (case, image, truth) in zip(axes, chosen, strict=True):
        for ax, (title, (_, method, config)) in zip(row, variants, strict=True):
            labels = segment_image(image, method, config).labels
            scores = score_clusters(labels, truth, "best-cluster")
            ax.imshow(np.moveaxis(image, 0, -1))
            overlay = np.zeros((*truth.shape, 4))
            overlay[labels == scores["cluster"]] = (1.0, 0.1, 0.1, 0.4)
            overlay[labels == 0] = (0.0, 0.0, 0.0, 0.6)
            ax.imshow(overlay)
            ax.contour(truth.astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
            ax.set_title(f"{case}: {title}\nDice {scores['dice']:.3f}", fontsize=8)
            ax.axis("off")
    fig.suptitle("best-overlap cluster (red), truth (green outline), outside the field of view (dark)", fontsize=9)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "labelfree_spill.png", dpi=90)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    subset = cases("ph2")[:SUBSET]
    loaded = [(case, read_image(path)[0], structures["lesion"]()) for case, path, structures in subset]
    results: dict[str, Any] = {}
    for name, method, config in STEPS:
        best, border, ratio, seconds = [], [], [], []
        for _, image, truth in loaded:
            start = time.perf_counter()
            labels = segment_image(image, method, config).labels
            seconds.append(time.perf_counter() - start)
            scores = score_clusters(labels, truth, "best-cluster")
            best.append(scores["dice"])
            ratio.append(area_ratio(labels, scores["cluster"], truth))
            border.append(score_clusters(labels, truth, "border")["dice"])
        results[name] = {
            "method": method,
            "dice_mean": float(np.mean(best)),
            "dice_median": float(np.median(best)),
            "dice_min": float(np.min(best)),
            "area_ratio_median": float(np.median(ratio)),
            "images_area_ratio_over_1.5": int(np.sum(np.array(ratio) > 1.5)),
            "border_dice_mean": float(np.mean(border)),
            "seconds_mean": float(np.mean(seconds)),
        }
        print(f"{name:45s} Dice {np.mean(best):.3f} / {np.median(best):.3f}  ratio {np.median(ratio):.2f}", flush=True)
    settings = {
        "dataset": "ph2",
        "images": [c for c, _, _ in loaded],
        "threads": 1,
        "protocol": "best-cluster",
        "note": "the tuning subset (first 40 by name); ablation, not the reported result",
    }
    write_result("ablation_labelfree_ph2", settings, results)
    example_figure(loaded)


if __name__ == "__main__":
    main()
