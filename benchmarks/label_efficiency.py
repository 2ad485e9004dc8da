"""The label-efficiency experiment on real data: random init against pretrained encoders, methods x label fractions
x seeds on one seeded split, scored on the same held-out test cases.

The experiment folder is kept (default ``benchmarks/work/label_efficiency_<dataset>``, git-ignored) so that an
interrupted or extended run continues with ``--resume`` (methods, fractions and seeds may be added). The result
file and figure are named after the folder (``benchmarks/results/<folder>.json``, ``docs/<folder>.png``). Usage:

    python benchmarks/label_efficiency.py --dataset hippocampus --methods random,autoencoder,vae \\
        --fractions 0.1,1.0 --seeds 3 --pretrain-steps 500 --finetune-steps 300
    python benchmarks/label_efficiency.py --dataset hippocampus --methods random,autoencoder,vae,simclr,byol \\
        --fractions 0.1,1.0 --seeds 3 --pretrain-steps 500 --finetune-steps 300 --resume
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from _common import DATA, RESULTS, ROOT, git_commit, require, write_result
from medssl import api
from medssl.engine.experiment import ExperimentResult, run_name
from medssl.engine.experiment_report import read_run, spread_text, write_report
from medssl.engine.run_folder import metric_logs

DATASETS = {"jsrt": "jsrt", "hippocampus": "hippocampus", "brats-flair": "brats2015"}
# Per-dataset settings beside the command line's. BraTS has 6 cases: 2 test, 1 validation, 3 for pretraining and
# fine-tuning (a sanity check, not a claim); its 240x240x155 volumes get 64^3 patches to keep CPU steps short.
DATASET_SETTINGS: dict[str, dict[str, Any]] = {
    "brats-flair": {"patch_size": [64, 64, 64], "finetune": {"test_fraction": 0.34, "val_fraction": 0.17}},
}


def brats_flair(source: Path, work: Path) -> Path:
    """An nnU-Net-style copy of the BraTS subset with the FLAIR volume only and the whole tumour (labels 1-4) as
    label 1; written once into ``work`` (git-ignored), the images linked rather than copied."""
    import nibabel as nib
    import numpy as np

    cases = sorted(p for p in source.glob("*/*") if (p / "Flair_subtrMeanDivStd.nii.gz").is_file())
    if not cases:
        sys.exit(f"skipped: no BraTS case folders in {source}")
    (work / "imagesTr").mkdir(parents=True, exist_ok=True)
    (work / "labelsTr").mkdir(exist_ok=True)
    for case in cases:
        image = work / "imagesTr" / f"{case.name}_0000.nii.gz"
        if not image.exists():
            image.symlink_to((case / "Flair_subtrMeanDivStd.nii.gz").resolve())
        label = work / "labelsTr" / f"{case.name}.nii.gz"
        if not label.exists():
            multi = nib.load(case / "OTMultiClass.nii.gz")
            tumour = (np.asarray(multi.dataobj) > 0).astype(np.uint8)
            nib.save(nib.Nifti1Image(tumour, multi.affine, multi.header), label)
    dataset = {
        "channel_names": {"0": "FLAIR"},
        "labels": {"background": 0, "whole_tumour": 1},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
    }
    (work / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return work


def grid(methods: list[str], fractions: list[float], seeds: int) -> list[tuple[str, float, int]]:
    """The runs of a grid, in the order the experiment trains them."""
    return [(method, fraction, seed) for fraction in fractions for seed in range(seeds) for method in methods]


def finished_runs(out: Path, methods: list[str], fractions: list[float], seeds: int) -> ExperimentResult:
    """The report of the runs of the grid that have finished in ``out`` (the missing ones are left out)."""
    if not (out / "split.json").is_file():
        sys.exit(f"{out} holds no experiment to report on")
    records = [
        read_run(out / "finetune" / method / run_name(fraction, seed), method, fraction, seed)
        for method, fraction, seed in grid(methods, fractions, seeds)
        if (out / "finetune" / method / run_name(fraction, seed) / "result.json").is_file()
    ]
    summary, files = write_report(records, out)
    return ExperimentResult(out, records, summary, files)


def pretraining_record(run: Path) -> dict[str, Any]:
    """Steps, time and loss of a pretraining run. One step's loss at a small batch is noise, so the loss is also
    given as the mean of the logged values over the first and the last tenth of the steps."""
    pre = json.loads((run / "result.json").read_text())
    record = {k: pre.get(k) for k in ("global_step", "final_loss", "train_seconds")}
    logged = [
        (int(row["step"]), float(row["train_loss"]))
        for log in metric_logs(run)
        if log.is_file()
        for row in csv.DictReader(log.read_text().splitlines())
        if row.get("train_loss")
    ]
    steps = int(pre.get("global_step") or 0)
    first = [v for k, v in logged if k < steps / 10]
    last = [v for k, v in logged if k >= steps - steps / 10]
    record["loss_first_tenth"] = sum(first) / len(first) if first else None
    record["loss_last_tenth"] = sum(last) / len(last) if last else None
    return record


def pretraining_records(out: Path, methods: list[str]) -> dict[str, dict[str, Any]]:
    return {
        m: pretraining_record(out / "pretrain" / m) for m in methods if (out / "pretrain" / m / "result.json").is_file()
    }


def run_keys(runs: list[dict[str, Any]]) -> set[tuple[str, float, int]]:
    return {(r["method"], r["fraction"], r["seed"]) for r in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--methods", default="random,simclr,byol,vae,autoencoder")
    parser.add_argument("--fractions", default="0.05,0.1,0.25,1.0")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--val-interval", type=int, default=100)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--pretrain-batch-size", type=int, default=None, help="default: the plan's")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no training: the report of the runs that have finished (an interrupted grid's partial table); an "
        "existing result file keeps its run's commit, date and settings and gets the recomputed summary",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    fractions = [float(f) for f in args.fractions.split(",")]
    out = args.out or ROOT / "benchmarks" / "work" / f"label_efficiency_{args.dataset}"
    if args.report_only:
        result = finished_runs(out, methods, fractions, args.seeds)
    else:
        data = require(DATA / DATASETS[args.dataset])
        if args.dataset == "brats-flair":
            data = brats_flair(data, ROOT / "benchmarks" / "work" / "brats_flair_data")
        extra = DATASET_SETTINGS.get(args.dataset, {})
        config = out.parent / f"{out.name}.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        pretrain = {"warmup_steps": 20}
        if args.pretrain_batch_size:
            pretrain["batch_size"] = args.pretrain_batch_size
        finetune = {"val_interval": args.val_interval, **extra.get("finetune", {})}
        shared = {k: v for k, v in extra.items() if k != "finetune"}
        config.write_text(json.dumps({**shared, "pretrain": pretrain, "finetune": finetune}))
        result = api.label_efficiency(
            data,
            out,
            methods=methods,
            fractions=fractions,
            seeds=args.seeds,
            pretrain_steps=args.pretrain_steps,
            finetune_steps=args.finetune_steps,
            config=config,
            precision=args.precision,
            resume=args.resume,
            quiet=True,
        )
    existing = RESULTS / f"{out.name}.json"
    runs = [{k: v for k, v in vars(r).items() if k != "case_dice"} for r in result.runs]
    if args.report_only and existing.is_file():
        payload = json.loads(existing.read_text())
        if run_keys(payload["results"]["runs"]) == run_keys(runs):
            # The same runs (e.g. a new statistic was added): recompute the statistics, keeping the commit, date
            # and settings of the run that produced them.
            payload["results"]["summary"] = result.summary
            payload["results"]["pretraining"] = pretraining_records(out, methods)
            payload["summary_recomputed"] = {
                "commit": git_commit(),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            existing.write_text(json.dumps(payload, indent=2))
            print(f"updated the summary of {existing}")
            return
    settings: dict[str, Any] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    if args.report_only:
        # A partial grid (interrupted, or extended and not finished): the settings its runs were made with are
        # the experiment folder's, not this command line's; the runs still to do are listed.
        settings.update(yaml.safe_load((out / "experiment.yaml").read_text()))
        done = run_keys(runs)
        settings["missing_runs"] = [
            {"method": m, "fraction": f, "seed": k}
            for m, f, k in grid(methods, fractions, args.seeds)
            if (m, f, k) not in done
        ]
    pretraining = pretraining_records(out, methods)
    split = json.loads((out / "split.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    write_result(
        out.name,
        settings={
            **settings,
            "patch_size": plan["patch_size"],
            "channels": plan["channels"],
            "batch_size": plan["batch_size"],
            "n_train": len(split["train"]),
            "n_val": len(split["val"]),
            "n_test": len(split["test"]),
            "split_seed": split["split_seed"],
        },
        results={
            "summary": result.summary,
            "runs": runs,
            "pretraining": pretraining,
        },
    )
    shutil.copyfile(out / "label_efficiency.png", ROOT / "docs" / f"{out.name}.png")
    for row in result.summary:
        diff = row["diff_vs_random"]
        print(
            f"{row['method']:12s} {100 * row['fraction']:5.0f}%  {row['mean_dice']:.4f}{spread_text(row['std_dice'])}"
            + ("" if diff is None else f"  vs random {100 * diff:+.2f} pt")
            + ("" if row["p_seeds"] is None else f" (p seeds {row['p_seeds']:.3g}, p cases {row['p_wilcoxon']:.3g})")
        )


if __name__ == "__main__":
    main()
