"""Supervised U-Net fine-tuning on real data with all or a fraction of the training labels.

Per run: test Dice / HD95 per structure on the fixed seeded test split, and the time-to-Dice curve (validation
Dice against wall-clock training time). Usage:

    python benchmarks/finetune_labels.py --dataset jsrt --fraction 1.0 --minutes 12
    python benchmarks/finetune_labels.py --dataset hippocampus --fraction 0.1 --minutes 6
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
from pathlib import Path

import torch

from _common import DATA, require, write_result
from medssl import api

DATASETS = {"jsrt": "jsrt", "hippocampus": "hippocampus", "ph2": "ph2"}


def time_to_dice(metrics_csv: Path) -> list[dict[str, float]]:
    """(step, elapsed seconds, validation Dice) at every validation."""
    rows = []
    with metrics_csv.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("val_dice"):
                rows.append(
                    {"step": int(row["step"]), "elapsed_s": float(row["elapsed_s"]), "val_dice": float(row["val_dice"])}
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget")
    parser.add_argument("--max-steps", type=int, default=100000)
    parser.add_argument("--val-interval", type=int, default=100)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = require(DATA / DATASETS[args.dataset])
    run = args.keep or Path(tempfile.mkdtemp()) / "run"
    result = api.finetune(
        data,
        run,
        label_fraction=args.fraction,
        seed=args.seed,
        max_steps=args.max_steps,
        overwrite=True,
        precision=args.precision,
        max_minutes=args.minutes,
        val_interval=args.val_interval,
        quiet=True,
    )
    plan = json.loads((run / "plan.json").read_text())
    split = json.loads((run / "split.json").read_text())
    summary = {
        label: {m: v.get(m) for m in ("dice", "hd95", "hd", "nsd", "xor", "n_cases")}
        for label, v in result.test_summary.items()
    }
    dices = [v["dice"] for v in summary.values() if v["dice"] is not None]
    name = f"finetune_{args.dataset}_{round(args.fraction * 100):03d}pct_seed{args.seed}"
    write_result(
        name,
        settings={
            **vars(args),
            "keep": str(args.keep) if args.keep else None,
            "patch_size": plan["patch_size"],
            "channels": plan["channels"],
            "batch_size": plan["batch_size"],
            "n_train_labelled": len(split["train_labelled"]),
            "n_val": len(split["val"]),
            "n_test": len(split["test"]),
            "split_seed": split["split_seed"],
        },
        results={
            "test": summary,
            "mean_dice": sum(dices) / len(dices) if dices else None,
            "best_val_dice": result.best_val_dice,
            "train_seconds": result.train_seconds,
            "time_to_dice": time_to_dice(run / "logs" / "metrics.csv"),
        },
    )
    if args.keep is None:
        shutil.rmtree(run.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
