"""One network from partially labelled data: DoDNet against its baselines on JSRT and Hippocampus.

The partial datasets are made from the fully labelled ones. The split is fixed once per dataset (``make_split`` of
the original case ids, test 0.2, validation 0.1, ``split_seed`` 0) and written to ``--work/<dataset>/split.json``;
the training cases are dealt to groups (a permutation with seed 0, round-robin), and each group keeps the masks of
some structures only:

- JSRT: lungs (left_lung, right_lung) / heart / clavicles (left_clavicle, right_clavicle);
- Hippocampus: anterior / posterior (the label values 1 and 2 of ``dataset.json``).

Validation and test cases keep every structure. The partial dataset, ``--work/<dataset>/data-partial/``, is in the
paired-multilabel layout with an ``annotations.json`` naming the structures of each training case; only the masks
of the structures a case annotates are there. Images (and JSRT's masks) are symbolic links to the originals; the
Hippocampus masks are written, one binary NIfTI per structure and case, with the label map's geometry.

Methods (segmentation systems trained with ``api.finetune`` and that one split file): ``dodnet`` (dynamic head,
default options), ``multihead`` (a static head per task), ``masked-sigmoid`` (one sigmoid output per structure,
loss on the annotated ones), ``separate`` (one U-Net per task) and ``full``, the upper bound: the ``supervised``
system on the original, fully labelled folder (JSRT: sigmoid outputs, Hippocampus: its label map). Every run trains
to a validation plateau (``--patience`` validations without a gain, ``--max-steps`` the bound); the seed changes
the initialisation and the sampling, not the split. CPU configuration: JSRT at half resolution (spacing 2.0) with a
5-level U-Net 16-256 wide, batch 8; Hippocampus with its plan's patch size (40x56x40) and batch (2) and a 4-level
U-Net 16-128 wide, as the label-efficiency benchmark.

Run folders are kept under ``--work/<dataset>/<method>/seed<k>``; a finished one is not run again, so the grid can
run in parts, and ``benchmarks/results/partial_labels_<dataset>.json`` is rewritten from every finished run: per
method, the test Dice and HD95 (mean over structures and per structure), steps, stopping reasons and training
time, the paired difference to ``separate`` (t-test over seeds, Wilcoxon over (seed, case) pairs,
``summarize_runs``) and the difference to ``full`` (per seed), and whether DoDNet is at least ``separate`` and
within 2 Dice points of ``full``.

    python benchmarks/partial_labels.py --dataset jsrt --work /tmp/partial --threads 1
    python benchmarks/partial_labels.py --dataset hippocampus --methods dodnet,full --seeds 0 --work /tmp/partial
    python benchmarks/partial_labels.py --dataset hippocampus --work /tmp/partial --prepare-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import DATA, finetune_once, require, trained_at, write_result
from medssl.data.io import read_label, stem, write_image
from medssl.data.layouts import Case, DatasetIndex, discover
from medssl.data.layouts.paired import ANNOTATIONS
from medssl.data.split import make_split
from medssl.engine.experiment_report import RunRecord, read_run, summarize_runs
from medssl.errors import MedsslError

DATASETS: dict[str, dict[str, Any]] = {
    "jsrt": {
        "folder": "jsrt",
        "groups": {
            "lungs": ["left_lung", "right_lung"],
            "heart": ["heart"],
            "clavicles": ["left_clavicle", "right_clavicle"],
        },
        "finetune": {"target_spacing": [2.0, 2.0], "channels": [16, 32, 64, 128, 256], "batch_size": 8},
    },
    "hippocampus": {
        "folder": "hippocampus",
        "groups": {"anterior": ["anterior"], "posterior": ["posterior"]},
        "finetune": {"channels": [16, 32, 64, 128]},
    },
}
# Method -> segmentation system; all but ``full`` train on the partial folder.
SYSTEMS = {
    "dodnet": "dodnet",
    "multihead": "multihead",
    "masked-sigmoid": "masked-sigmoid",
    "separate": "separate",
    "full": "supervised",
}
BASELINE, BOUND = "separate", "full"
PARTIAL = "data-partial"


def fixed_split(case_ids: Sequence[str]) -> dict[str, Any]:
    """The split every method shares: test 0.2, validation 0.1, ``split_seed`` 0, every training case labelled."""
    return make_split(sorted(case_ids), test_fraction=0.2, val_fraction=0.1, split_seed=0)


def assign_groups(train: Sequence[str], groups: Mapping[str, Sequence[str]], seed: int = 0) -> dict[str, list[str]]:
    """Deal the training cases to the groups: a seeded permutation, round-robin, so group sizes differ by at most 1.

    Returns:
        Case id -> the structures it keeps (sorted), for every training case.
    """
    cases = sorted(train)
    names = list(groups)
    order = np.random.default_rng(seed).permutation(len(cases))
    return {cases[i]: sorted(groups[names[k % len(names)]]) for k, i in enumerate(order)}


def label_structures(index: DatasetIndex) -> dict[str, int]:
    """Structure name (lower case) -> label value of a label-map dataset, from its declared labels.

    Raises:
        MedsslError: the dataset declares no labels (no ``dataset.json`` ``labels``).
    """
    if not index.labels:
        raise MedsslError(f"{index.root} declares no label names; add 'labels' to its dataset.json")
    return {name.lower(): value for value, name in sorted(index.labels.items()) if value != 0}


def _suffix(path: Path) -> str:
    """The file name's part after its stem (``.nii.gz``, ``.png``)."""
    return path.name[len(stem(path)) :]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target.resolve())


def _write_case(index: DatasetIndex, case: Case, out: Path, wanted: Sequence[str]) -> None:
    """Link one case's image and write (link or extract) the masks of the structures ``wanted``."""
    if len(case.images) != 1:
        raise MedsslError(f"case {case.case_id} has {len(case.images)} image files; one channel is supported here")
    image = case.images[0]
    _link(image, out / "images" / f"{case.case_id}{_suffix(image)}")
    if case.structures is not None:  # paired-multilabel: one mask file per structure already
        for name in wanted:
            mask = case.structures[name]
            _link(mask, out / "masks" / name / f"{case.case_id}{_suffix(mask)}")
        return
    if case.label is None:
        raise MedsslError(f"case {case.case_id} has no label map; every case of the source must be labelled")
    values = label_structures(index)
    labels, meta = read_label(case.label)
    for name in wanted:  # one binary mask per structure, with the label map's geometry
        write_image(out / "masks" / name / f"{case.case_id}.nii.gz", (labels == values[name]).astype(np.uint8), meta)


def write_partial(index: DatasetIndex, out: Path, annotates: Mapping[str, Sequence[str]]) -> Path:
    """Write the partially labelled copy of ``index``'s dataset at ``out`` (paired-multilabel layout).

    Args:
        index: the fully labelled dataset (paired-multilabel, or a label map with declared labels).
        out: the new folder; one already there with the same ``annotations.json`` is kept as it is.
        annotates: case id -> the structures it keeps; the other cases keep every structure.

    Returns:
        ``out``.

    Raises:
        MedsslError: ``out`` holds another partial dataset, or ``annotates`` names an unknown structure.
    """
    declared = {case: sorted(s) for case, s in sorted(annotates.items())}
    if out.exists():
        if (out / ANNOTATIONS).is_file() and json.loads((out / ANNOTATIONS).read_text()) == declared:
            return out
        raise MedsslError(f"{out} holds another partial dataset (other annotations); remove it and run again")
    names = index.structures or sorted(label_structures(index))
    unknown = sorted({s for wanted in declared.values() for s in wanted} - set(names))
    if unknown:
        raise MedsslError(f"unknown structure {unknown[0]!r} (structures: {', '.join(names)})")
    tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed: an interrupted copy is never reused
    shutil.rmtree(tmp, ignore_errors=True)
    for case in index.cases:
        _write_case(index, case, tmp, declared.get(case.case_id, names))
    (tmp / ANNOTATIONS).write_text(json.dumps(declared, indent=1))
    os.replace(tmp, out)
    return out


def prepare(source: Path, work: Path, groups: Mapping[str, Sequence[str]]) -> tuple[Path, Path, dict[str, Any]]:
    """The fixed split (``work/split.json``) and the partial dataset (``work/data-partial``) of ``source``.

    Returns:
        ``(partial folder, split file, split)``.

    Raises:
        MedsslError: ``source`` has problems, or ``work`` holds a split or partial dataset made otherwise.
    """
    index = discover(source)
    if index.problems:
        raise MedsslError(f"{source} has problems; run `medssl data check {source}`")
    split = fixed_split([c.case_id for c in index.cases])
    split_file = work / "split.json"
    if split_file.is_file() and json.loads(split_file.read_text()) != split:
        raise MedsslError(f"{split_file} differs from the split of {source}; remove {work} and run again")
    work.mkdir(parents=True, exist_ok=True)
    split_file.write_text(json.dumps(split, indent=1))
    partial = write_partial(index, work / PARTIAL, assign_groups(split["train"], groups))
    return partial, split_file, split


def check_split(run: Path, split: Mapping[str, Any]) -> None:
    """Refuse a run whose validation or test cases are not the fixed split's (the comparison would be unpaired).

    Raises:
        MedsslError: the run's ``split.json`` differs.
    """
    used = json.loads((run / "split.json").read_text())
    for key in ("test", "val"):
        if sorted(used[key]) != sorted(split[key]):
            raise MedsslError(f"{run}: its {key} cases are not the fixed split's; remove the run and run again")


def run_one(work: Path, method: str, seed: int, data: Path, split_file: Path, args: argparse.Namespace) -> Path:
    """Train one (method, seed) unless it has finished; an interrupted one is resumed."""
    return finetune_once(
        data,
        work / method / f"seed{seed}",
        f"{method} seed {seed}",
        seed=seed,
        max_steps=args.max_steps,
        split_file=split_file,
        val_interval=args.val_interval,
        patience=args.patience,
        system=SYSTEMS[method],
        **DATASETS[args.dataset]["finetune"],
    )


def structure_scores(run: Path) -> dict[str, dict[str, float | None]]:
    """Per structure (lower case), the run's mean test Dice and HD95 (None: undefined for every case)."""
    summary = json.loads((run / "evaluation" / "test.json").read_text())["summary"]
    return {name.lower(): {"dice": v.get("dice"), "hd95": v.get("hd95")} for name, v in summary.items()}


def read_record(run: Path, method: str, seed: int) -> RunRecord:
    """``read_run`` with lower-case structure names (a label map names them as its dataset.json does)."""
    record = read_run(run, method, 1.0, seed)
    return dataclasses.replace(record, dice={k.lower(): v for k, v in record.dice.items()})


def _finite_mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def summarize(records: Sequence[RunRecord], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``summarize_runs`` rows against ``separate``, with HD95, steps, stops and the difference to ``full``."""
    rows = summarize_runs(records, baseline=BASELINE)
    bound = {r.seed: r.mean_dice for r in records if r.method == BOUND}
    for row in rows:
        row.pop("fraction", None)  # every run trains on all training cases
        row.pop("labelled", None)
        row["diff_vs_separate"] = row.pop("diff_vs_random")
        same = [x for x in runs if x["method"] == row["method"]]
        structures = sorted({s for x in same for s in x["structures"]})
        for s in structures:
            row[f"hd95_{s}"] = _finite_mean([x["structures"].get(s, {}).get("hd95") for x in same])
        row["mean_hd95"] = _finite_mean([x["test_hd95"] for x in same])
        row["mean_steps"] = float(np.mean([x["steps"] for x in same]))
        row["stopped"] = {why: sum(x["stopped"] == why for x in same) for why in sorted({x["stopped"] for x in same})}
        diffs = [x["test_dice"] - bound[x["seed"]] for x in same if x["seed"] in bound]
        row["diff_vs_full"] = float(np.mean(diffs)) if diffs and row["method"] != BOUND else None
    return rows


def targets(rows: Sequence[dict[str, Any]]) -> dict[str, bool | None]:
    """DoDNet's targets: mean Dice at least ``separate``'s and within 2 points of ``full`` (None: not run)."""
    dodnet = next((r for r in rows if r["method"] == "dodnet"), None)
    if dodnet is None:
        return {"dodnet_ge_separate": None, "dodnet_within_2_points_of_full": None}
    ge = dodnet["diff_vs_separate"]
    full = dodnet["diff_vs_full"]
    return {
        "dodnet_ge_separate": None if ge is None else bool(ge >= 0),
        "dodnet_within_2_points_of_full": None if full is None else bool(full >= -0.02),
    }


def run_record(run: Path, method: str, seed: int) -> tuple[RunRecord, dict[str, Any]]:
    """The run's ``RunRecord`` and its row of the result JSON."""
    record = read_record(run, method, seed)
    result = json.loads((run / "result.json").read_text())
    scores = structure_scores(run)
    row = {
        "method": method,
        "seed": seed,
        "test_dice": record.mean_dice,
        "test_hd95": _finite_mean([v["hd95"] for v in scores.values()]),
        "structures": scores,
        "steps": record.steps,
        "stopped": result.get("stopped"),
        "best_val_dice": result.get("best_val_dice"),
        "train_seconds": record.train_seconds,
        "case_dice": record.case_dice,
    }
    return record, row


def previous_runs(path: Path) -> tuple[list[RunRecord], list[dict[str, Any]], dict[str, Any]]:
    """The runs of an earlier result JSON of this benchmark (a grid run in parts, in sessions or on machines that
    do not share run folders), as records and rows, each row with the commit it ran at, and where they came from.
    The grid does not run a (method, seed) again that is here."""
    earlier = json.loads(path.read_text())
    if not earlier.get("benchmark", "").startswith("partial_labels_"):
        raise MedsslError(f"{path} is not a result of this benchmark")
    older = (earlier.get("settings") or {}).get("previous") or {}
    # Files written before rows named their commit: a seed joined from the file before it ran at that commit.
    legacy = {seed: older["commit"] for seed in older.get("seeds", [])}
    rows = [
        {**r, "commit": r.get("commit") or legacy.get(r["seed"], earlier["commit"])} for r in earlier["results"]["runs"]
    ]
    records = [
        RunRecord(
            method=r["method"],
            fraction=1.0,
            seed=r["seed"],
            mean_dice=r["test_dice"],
            dice={s: v["dice"] for s, v in r["structures"].items()},
            case_dice=r["case_dice"],
            train_seconds=r["train_seconds"],
            steps=r["steps"],
            stopped=r["stopped"],
            best_val_dice=r["best_val_dice"],
        )
        for r in rows
    ]
    runs = sorted({f"{r['method']}/seed{r['seed']}" for r in rows})
    return records, rows, {"file": path.name, "commit": earlier["commit"], "runs": runs}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--methods", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=3000, help="upper bound of every run")
    parser.add_argument("--val-interval", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5, help="validations without a gain before stopping")
    parser.add_argument("--work", type=Path, required=True, help="run folders (kept; finished runs are reused)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 each when two grids share 2 cores)")
    parser.add_argument("--prepare-only", action="store_true", help="write the split and partial dataset, no runs")
    parser.add_argument(
        "--previous",
        type=Path,
        help="an earlier result JSON whose runs join this one and are not run again (the grid run in parts)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.methods.split(",")) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown method {unknown[0]!r} (methods: {', '.join(SYSTEMS)})")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    try:
        run_grid(args)
    except MedsslError as exc:  # e.g. a method whose system is not registered: one line, no traceback
        raise SystemExit(f"error: {exc}") from None


def run_grid(args: argparse.Namespace) -> None:
    """Prepare the data, then train every (seed, method) not finished, rewriting the result JSON after each."""
    spec = DATASETS[args.dataset]
    source = require(DATA / spec["folder"])
    work = args.work / args.dataset
    partial, split_file, split = prepare(source, work, spec["groups"])
    print(f"partial dataset {partial}, split {split_file}", flush=True)
    if args.prepare_only:
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    records: list[RunRecord] = []
    runs: list[dict[str, Any]] = []
    previous = None
    if args.previous is not None:
        records, runs, previous = previous_runs(args.previous)
    done = {(r["method"], r["seed"]) for r in runs}
    for seed in seeds:
        for method in args.methods.split(","):
            if (method, seed) in done:
                print(f"{method} seed {seed}: in {args.previous}, not run again", flush=True)
                continue
            run = run_one(work, method, seed, source if method == BOUND else partial, split_file, args)
            check_split(run, split)
            record, row = run_record(run, method, seed)
            records.append(record)
            runs.append({**row, "commit": trained_at(run)})
            rows = summarize(records, runs)
            write_result(
                f"partial_labels_{args.dataset}",
                settings={
                    **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    **spec["finetune"],
                    "groups": spec["groups"],
                    "systems": SYSTEMS,
                    "split": {k: len(split[k]) for k in ("train", "val", "test")},
                    "split_seed": 0,
                    "baseline": BASELINE,
                    "previous": previous,
                },
                results={"summary": rows, "targets": targets(rows), "runs": runs},
            )


if __name__ == "__main__":
    main()
