"""Adversarial segmentation against Dice only, with few labels: issue 17's grid on real data.

Per dataset (PH2 lesions, JSRT's five structures), for N labelled training images (the rest of the training images
unlabelled), seeds, variants (``supervised``: Dice + cross-entropy only; ``luc``, ``segan``, ``semi``: the
adversarial system's discriminators) and encoder initialisations (``none``: random; ``autoencoder``: pretrained as
a denoising autoencoder on every training image, labels unused), one ``medssl finetune`` run trained to a
validation plateau (``patience`` validations without a gain, ``max_steps`` the bound). The split (test and
validation cases) is fixed by ``split_seed`` 0; the seed picks the labelled subset and the initialisation, so the
runs of one seed are paired. Every run folder is kept under ``--work`` and a finished one is not run again, so the
grid can run in parts; the result JSON is rewritten from every finished run each time.

Reported per (N, variant, init): test Dice and HD95 (mean and sample std over seeds), the steps to the plateau,
and the paired difference to Dice only (random init, same seed) with a t-test over seeds and a Wilcoxon test over
(seed, test case) pairs (``medssl.engine.experiment_report.summarize_runs``).

    OMP_NUM_THREADS=2 python benchmarks/adversarial.py --dataset ph2 --labelled 5 --work /tmp/adv
    python benchmarks/adversarial.py --dataset jsrt --labelled 5,10 --variants supervised,semi --init none
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import DATA, finetune_once, require, write_result
from medssl.data.layouts import discover
from medssl.data.split import make_split
from medssl.engine.experiment_report import read_run, summarize_runs

# The lighter configuration of the CPU runs: images at half resolution, a 5-level U-Net.
DATASETS: dict[str, dict[str, Any]] = {
    "ph2": {"folder": "ph2", "target_spacing": [2.0, 2.0], "channels": [16, 32, 64, 128, 256], "batch_size": 8},
    "jsrt": {"folder": "jsrt", "target_spacing": [2.0, 2.0], "channels": [16, 32, 64, 128, 256], "batch_size": 8},
}
VARIANTS = ("supervised", "luc", "segan", "semi")
BASELINE = "supervised+none"


def finetune_options(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """The ``api.finetune`` overrides of one variant (the supervised system for Dice only)."""
    if variant == "supervised":
        return {"system": "supervised"}
    return {"system": "adversarial", "discriminator": variant, "warmup_steps": args.warmup}


def pretrained_encoder(
    work: Path, data: Path, spec: dict[str, Any], train: list[str], args: argparse.Namespace
) -> Path:
    """The autoencoder encoder pretrained on every training image (run once, resumed when interrupted)."""
    run = work / "pretrain-autoencoder"
    encoder = run / "encoder.pt"
    if (run / "result.json").is_file() and encoder.is_file():
        return encoder
    from medssl.config import PretrainConfig
    from medssl.engine.pretraining import run_pretrain

    cfg = PretrainConfig(
        method="autoencoder",
        max_steps=args.pretrain_steps,
        channels=spec["channels"],
        target_spacing=spec["target_spacing"],
        batch_size=spec["batch_size"],
    )
    resume = run.is_dir() and any(run.iterdir())
    result = run_pretrain(data, run, cfg, cases=train, resume=resume, quiet=True)
    assert result.encoder is not None
    return result.encoder


def run_one(
    work: Path, data: Path, spec: dict[str, Any], key: tuple[int, str, str, int], n_train: int, **kw: Any
) -> Path:
    """Fine-tune one grid point unless it has finished; an interrupted one is resumed."""
    n, variant, init, seed = key
    args: argparse.Namespace = kw["args"]
    return finetune_once(
        data,
        work / f"n{n}" / f"{variant}+{init}" / f"seed{seed}",
        f"N={n} {variant}+{init} seed {seed}",
        label_fraction=n / n_train,
        seed=seed,
        max_steps=args.max_steps,
        init=kw["encoder"] if init == "autoencoder" else None,
        val_interval=args.val_interval,
        patience=args.patience,
        target_spacing=spec["target_spacing"],
        channels=spec["channels"],
        batch_size=spec["batch_size"],
        **finetune_options(variant, args),
    )


def hd95(run: Path) -> float:
    """Mean over structures of the per-structure mean test HD95 (infinite ones, no prediction, left out)."""
    summary = json.loads((run / "evaluation" / "test.json").read_text())["summary"]
    values = [v["hd95"] for v in summary.values() if v.get("hd95") is not None and math.isfinite(v["hd95"])]
    return float(np.mean(values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--labelled", default="5,10", help="labelled training images N, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--init", default="none,autoencoder", help="none and/or autoencoder")
    parser.add_argument("--max-steps", type=int, default=4000, help="upper bound of every fine-tune")
    parser.add_argument("--val-interval", type=int, default=100)
    parser.add_argument("--patience", type=int, default=8, help="validations without a gain before stopping")
    parser.add_argument("--warmup", type=int, default=200, help="adversarial variants: supervised-only steps first")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--work", type=Path, required=True, help="run folders (kept; finished runs are reused)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 each when two grids share 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = DATASETS[args.dataset]
    data = require(DATA / spec["folder"])
    work = args.work / args.dataset
    ids = sorted(c.case_id for c in discover(data).cases)
    train = make_split(ids, test_fraction=0.2, val_fraction=0.1)["train"]  # the finetune defaults, split_seed 0
    ns = [int(n) for n in args.labelled.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    inits = args.init.split(",")
    encoder = pretrained_encoder(work, data, spec, train, args) if "autoencoder" in inits else None
    records = []
    for n in ns:
        for seed in seeds:
            for init in inits:
                for variant in args.variants.split(","):
                    key = (n, variant, init, seed)
                    run = run_one(work, data, spec, key, len(train), args=args, encoder=encoder)
                    record = read_run(run, f"{variant}+{init}", n, seed)
                    result = json.loads((run / "result.json").read_text())
                    records.append((record, hd95(run), result.get("stopped"), result.get("best_val_dice")))
    rows = summarize_runs([r for r, *_ in records], baseline=BASELINE)
    runs = [
        {
            "n_labelled": r.fraction,
            "method": r.method,
            "seed": r.seed,
            "test_dice": r.mean_dice,
            "dice": r.dice,
            "test_hd95": h,
            "steps": r.steps,
            "stopped": stopped,
            "best_val_dice": val,
            "train_seconds": r.train_seconds,
            "case_dice": r.case_dice,
        }
        for r, h, stopped, val in records
    ]
    for row in rows:
        row["n_labelled"] = row.pop("fraction")
        same = [x for x in runs if x["method"] == row["method"] and x["n_labelled"] == row["n_labelled"]]
        hds = [x["test_hd95"] for x in same if math.isfinite(x["test_hd95"])]
        row["mean_hd95"] = float(np.mean(hds)) if hds else None
        row["mean_steps"] = float(np.mean([x["steps"] for x in same]))
        row["plateaus"] = sum(x["stopped"] == "plateau" for x in same)
    write_result(
        f"adversarial_{args.dataset}",
        settings={
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            **spec,
            "n_train": len(train),
            "split_seed": 0,
            "baseline": BASELINE,
        },
        results={"summary": rows, "runs": runs},
    )


if __name__ == "__main__":
    main()
