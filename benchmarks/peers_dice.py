"""Dice at equal steps (issue 24): medssl fine-tuning against the MONAI peer of ``speed_peers.py``, and bf16 autocast
against fp32, trained for the same number of steps on the same split and evaluated by the same code.

A speed ratio means little if the faster side reaches a worse segmentation in the same steps. Per dataset (JSRT:
five overlapping structures, 2D; the Decathlon hippocampus: two labels, 3D):

- ``medssl-fp32`` (and ``medssl-bf16``): ``api.finetune`` for ``--steps`` steps with its defaults (plan, split,
  augmentation, AdamW 2e-3 with the poly schedule), one validation at the end (no plateau stop: the steps are
  equal by design), seeded by ``--seed``; its test predictions (written by the run) are scored.
- ``monai-fp32`` (and ``monai-bf16``): ``DynUNet`` laid out as medssl's U-Net (parameters within 5 %), MONAI's
  transforms and a plain PyTorch loop (``_speed_peers_monai.train``) on the plan and training cases of the first
  medssl run, the same steps, learning rate and schedule; the test images predicted from file to written file
  (``SlidingWindowInferer``, ``Invertd``, ``SaveImage``).

Every variant's predictions are scored against the dataset's references by ``medssl.evaluation.evaluate_folders``;
per variant: Dice per structure, the mean, and the paired per-case difference to ``medssl-fp32`` (mean over
structures per case; Wilcoxon signed-rank p). Training seconds are reported beside (for speed use
``speed_peers.py``: this one does not alternate the sides). Writes ``benchmarks/results/peers_dice.json`` (``--name``).

    OMP_NUM_THREADS=2 python benchmarks/peers_dice.py --steps 300 --work /tmp/peers_dice
    python benchmarks/peers_dice.py --datasets jsrt --steps 2 --variants medssl-fp32,monai-fp32 \\
        --work /tmp/pd_smoke --out-dir /tmp/pd_smoke  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import _common
import _speed_peers_monai as peer
from _common import DATA, require, write_result
from medssl.data.layouts import discover
from medssl.evaluation.scoring import evaluate_folders

DATASETS = {"jsrt": ("images", "masks"), "hippocampus": ("imagesTr", "labelsTr")}  # images, references
VARIANTS = ("medssl-fp32", "monai-fp32", "medssl-bf16", "monai-bf16")
BASELINE = "medssl-fp32"


def run_medssl(data: Path, run: Path, args: argparse.Namespace, bf16: bool, split: Path | None) -> dict[str, Any]:
    """``api.finetune`` for ``args.steps`` steps (one validation, at the end); its test predictions are in
    ``run/predictions/test``."""
    from medssl import api

    if not (run / "result.json").is_file():
        api.finetune(
            data, run, max_steps=args.steps, seed=args.seed, val_interval=args.steps, overwrite=True, quiet=True,
            accelerator="cpu", precision="bf16-mixed" if bf16 else "32-true", overlay_cases=0,
            checkpoint_interval=10**6, split_file=split,
        )  # fmt: skip
    result = json.loads((run / "result.json").read_text())
    return {"predictions": run / "predictions" / "test", "train_seconds": float(result["train_seconds"])}


def run_monai(data: Path, run: Path, model: Path, args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    """The peer on the plan and split of the medssl run in ``model``: train, save, predict the test images."""
    plan = json.loads((model / "plan.json").read_text())
    split = json.loads((model / "split.json").read_text())
    out, weights = run / "predictions" / "test", run / "weights.pt"
    seconds_file = run / "train_seconds.json"
    if not seconds_file.is_file():
        run.mkdir(parents=True, exist_ok=True)
        stamps = peer.train(data, plan, split["train_labelled"], args.steps, bf16, seed=args.seed, save=weights)
        predict = peer.predictor(plan, weights)
        images = data / DATASETS[data.name][0]
        for case in split["test"]:
            predict(next(images.glob(f"{case}.*")), out)
        seconds_file.write_text(json.dumps(stamps[-1] - stamps[0]))
    return {"predictions": out, "train_seconds": float(json.loads(seconds_file.read_text()))}


def labels_of(data: Path) -> dict[int, str] | None:
    """Label value -> name as the dataset declares it (``dataset.json``, MSD or nnU-Net form), background left
    out; None for a folder of masks (their sub-folders name the structures)."""
    labels = discover(data).labels
    return None if labels is None else {v: n for v, n in labels.items() if v != 0}


def score(predictions: Path, data: Path) -> dict[str, dict[str, float]]:
    """case -> structure -> Dice of a folder of predictions against the dataset's references."""
    result = evaluate_folders(predictions, data / DATASETS[data.name][1], labels=labels_of(data))
    out: dict[str, dict[str, float]] = {}
    for row in result["cases"]:
        out.setdefault(row["case"], {})[row["label"]] = float(row["dice"]) if row["dice"] is not None else 0.0
    return out


def summarize(scores: dict[str, dict[str, dict[str, float]]], seconds: dict[str, float]) -> dict[str, Any]:
    """Per variant: mean Dice, per structure, and the paired per-case difference to the baseline."""
    from scipy.stats import wilcoxon

    def case_means(variant: str) -> dict[str, float]:
        return {case: statistics.fmean(per.values()) for case, per in scores[variant].items()}

    base = case_means(BASELINE) if BASELINE in scores else None
    out: dict[str, Any] = {}
    for variant, per_case in scores.items():
        structures = sorted({s for per in per_case.values() for s in per})
        by_structure = {s: statistics.fmean(per[s] for per in per_case.values() if s in per) for s in structures}
        row: dict[str, Any] = {
            "mean_dice": statistics.fmean(by_structure.values()),
            "dice": by_structure,
            "cases": len(per_case),
            "train_seconds": seconds[variant],
        }
        if base is not None and variant != BASELINE:
            mine = case_means(variant)
            common = sorted(set(mine) & set(base))
            diffs = [mine[c] - base[c] for c in common]
            row["diff_vs_baseline"] = statistics.fmean(diffs)
            row["p_wilcoxon"] = float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0
            row["wins"] = sum(d > 0 for d in diffs) / len(diffs)
        out[variant] = row
    return out


def bench(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    data = require(DATA / dataset)
    work = args.work / dataset
    model = work / BASELINE  # its plan and split are every variant's
    ran: dict[str, dict[str, Any]] = {}
    for variant in [BASELINE, *(v for v in args.variants if v != BASELINE)]:
        side, precision = variant.split("-")
        started = time.perf_counter()
        if side == "medssl":
            split = None if variant == BASELINE else model / "split.json"
            ran[variant] = run_medssl(data, work / variant, args, precision == "bf16", split)
        else:
            ran[variant] = run_monai(data, work / variant, model, args, precision == "bf16")
        print(f"{dataset} {variant}: {time.perf_counter() - started:.0f} s", flush=True)
    kept = [v for v in ran if v in args.variants]
    scores = {v: score(ran[v]["predictions"], data) for v in kept}
    plan = json.loads((model / "plan.json").read_text())
    return {
        "plan": {k: plan[k] for k in ("target_spacing", "patch_size", "batch_size", "channels")},
        "variants": summarize(scores, {v: ran[v]["train_seconds"] for v in kept}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=lambda t: t.split(","), default=list(DATASETS), help="jsrt,hippocampus")
    parser.add_argument("--variants", type=lambda t: t.split(","), default=list(VARIANTS[:3]), help=str(VARIANTS))
    parser.add_argument("--steps", type=int, default=300, help="training steps of every variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="run folders (a finished variant is reused)")
    parser.add_argument("--out-dir", type=Path, default=None, help="elsewhere for a smoke run")
    parser.add_argument("--name", default="peers_dice", help="result file name (without .json)")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or set(args.datasets) - set(DATASETS):
        parser.error(f"variants are {', '.join(VARIANTS)}; datasets {', '.join(DATASETS)}")
    torch.set_num_threads(args.threads)
    if args.out_dir is not None:
        _common.RESULTS = args.out_dir
    results = {dataset: bench(dataset, args) for dataset in args.datasets}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_result(args.name, {**settings, "baseline": BASELINE}, results)


if __name__ == "__main__":
    main()
