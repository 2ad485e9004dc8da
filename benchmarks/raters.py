"""Several raters: MRNet against its baselines on DRIVE (test images) and STARE, two human raters each.

Per dataset (20 images), one fixed split by ``split_seed`` 0 (10 training, 2 validation, 8 test images, written to
``--work/<dataset>/split.json`` and given to every run), seeds, and methods, each one ``medssl finetune`` run to a
validation plateau (``patience`` validations without a gain, ``max_steps`` the bound):

- ``one-rater``: the plan's U-Net on the first rater's masks (system ``supervised``; the label of the layout);
- ``rater-mean``: the U-Net on the raters' mean (a soft label);
- ``conditioned``: the expertise-conditioned U-Net without reconstruction and perception (``mrnet``,
  ``refine=False``);
- ``mrnet``: the whole MRNet;
- ``conditioned-each-rater``: ``conditioned`` with ``validate="each-rater"``: its plateau is watched on a score
  that includes each rater's one-hot vector against that rater (the others' only on the uniform vector);
- ``mrnet-each-rater``: ``mrnet`` stopped the same way.

Every test image is predicted with the uniform expertise vector and with each rater's one-hot vector (the models
without conditioning give one prediction for all), inside the field of view: hard Dice at 0.5 against each rater
and against the raters' mean, soft Dice against the soft truth (thresholds 0.1 ... 0.9), and the reliability bins
of the probabilities against the soft truth, merged over the test images (ECE; one reliability diagram per
dataset). The raters' agreement (mean Dice between them) is computed on the same test images: the target is that
MRNet with rater r's one-hot vector agrees with rater r at least as well as the raters agree with each other.

Configuration: full resolution (thin vessels do not survive halving), by default 256x256 patches, a 5-level U-Net
16..256 wide, batch 4; ``--patch-size``, ``--channels`` and ``--batch-size`` set a lighter one for 2 CPU cores (an
MRNet step is about eight U-Net passes: more than 20 s at the default size on one CPU thread).

    OMP_NUM_THREADS=2 python benchmarks/raters.py --dataset drive --work /tmp/raters
    python benchmarks/raters.py --dataset stare --methods rater-mean,mrnet --seeds 0 --work /tmp/raters
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import DATA, RESULTS, finetune_once, require, trained_at, write_result
from medssl.data.io import read_image
from medssl.data.layouts import discover
from medssl.data.loading import load_checked_case
from medssl.data.split import make_split
from medssl.engine.reliability_plot import reliability_diagram
from medssl.metrics.calibration import Bins, calibration_bins, merge_bins
from medssl.metrics.raters import rater_agreement, rater_dice, soft_dice, soft_truth
from medssl.segment.predict import TrainedModel, load_trained_model, predict_probabilities

DATASETS = {"drive": "drive/test", "stare": "stare"}
METHODS: dict[str, dict[str, Any]] = {
    "one-rater": {"system": "supervised"},
    "rater-mean": {"system": "rater-mean"},
    "conditioned": {"system": "mrnet", "refine": False},
    "mrnet": {"system": "mrnet"},
    # the conditioned U-Net stopped on a validation score that sees the conditioning (each rater's one-hot vector)
    "conditioned-each-rater": {"system": "mrnet", "refine": False, "validate": "each-rater"},
    "mrnet-each-rater": {"system": "mrnet", "validate": "each-rater"},
}
CONFIG = {"patch_size": [256, 256], "channels": [16, 32, 64, 128, 256], "batch_size": 4}


def fixed_split(ids: list[str], path: Path) -> dict[str, Any]:
    """The split every run uses (written once, then read back so that a rerun keeps it)."""
    if path.is_file():
        split: dict[str, Any] = json.loads(path.read_text())
        return split
    split = make_split(ids, test_fraction=0.4, val_fraction=0.1, split_seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=2))
    return split


def config(args: argparse.Namespace) -> dict[str, Any]:
    """The network and patch settings of every run (``CONFIG`` unless the command line sets them)."""
    return {
        "patch_size": [int(v) for v in args.patch_size.split(",")],
        "channels": [int(v) for v in args.channels.split(",")],
        "batch_size": args.batch_size,
    }


def run_record(run: Path) -> dict[str, Any]:
    """How a run trained: steps, why it stopped, its best validation Dice, seconds, the commit that finished it."""
    result = json.loads((run / "result.json").read_text())
    return {
        "steps": result["global_step"],
        "stopped": result.get("stopped"),
        "best_val_dice": result.get("best_val_dice"),
        "train_seconds": result.get("train_seconds"),
        "commit": trained_at(run),
    }


def train(data: Path, run: Path, method: str, seed: int, split: Path, args: argparse.Namespace) -> Path:
    """One plateau run of ``method`` unless it has finished (an interrupted one is resumed)."""
    return finetune_once(
        data,
        run,
        f"{method} seed {seed}",
        seed=seed,
        max_steps=args.max_steps,
        split_file=split,
        val_interval=args.val_interval,
        patience=args.patience,
        **config(args),
        **METHODS[method],
    )


def test_case(case: Any, index: Any) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """A test image, its geometry, every rater's binary mask ``(R, *S)`` and the field of view."""
    loaded = load_checked_case(case, index, raters=True)
    assert loaded.raters is not None
    fov = read_image(case.fov)[0][0] > 0 if case.fov else np.ones(loaded.raters.shape[1:], bool)
    return loaded.image, loaded.meta, loaded.raters > 0, fov


def conditions(model: TrainedModel, raters: list[str]) -> dict[str, list[float] | None]:
    """The expertise vectors to predict with: uniform and each rater alone (models without conditioning: one)."""
    if not hasattr(model.network, "set_expertise"):
        return {"any": None}
    eye = np.eye(len(raters)).tolist()
    return {"uniform": [1 / len(raters)] * len(raters), **{r: eye[i] for i, r in enumerate(raters)}}


def score_run(run: Path, cases: list[tuple[str, tuple[Any, ...]]], raters: list[str]) -> dict[str, Any]:
    """Per condition: mean hard Dice against each rater and the mean, soft Dice, ECE; and the merged bins."""
    model = load_trained_model(run)
    out: dict[str, Any] = {}
    for name, c in conditions(model, raters).items():
        if c is not None:
            model.network.set_expertise(c)  # type: ignore[operator]
        dices, softs, bins = [], [], []
        for _, (image, meta, masks, fov) in cases:
            with torch.no_grad():
                prob = predict_probabilities(model, image, meta).numpy()[1]  # the foreground class
            dices.append(rater_dice(prob, masks, mask=fov, names=raters))
            softs.append(soft_dice(prob, soft_truth(masks), mask=fov))
            bins.append(calibration_bins(prob, soft_truth(masks), mask=fov))
        merged = merge_bins(bins)
        out[name] = {
            "dice": {k: float(np.mean([d[k] for d in dices])) for k in dices[0]},
            "soft_dice": float(np.mean(softs)),
            "ece": merged.ece(),
            "bins": {
                "count": merged.counts.tolist(),
                "confidence": _finite(merged.confidence),
                "frequency": _finite(merged.frequency),
            },
        }
        out[name]["_bins"] = merged
    return out


def _finite(values: np.ndarray) -> list[float | None]:
    """JSON-safe: an empty bin's NaN as null."""
    return [float(v) if np.isfinite(v) else None for v in values]


def summarize(scores: dict[str, dict[int, dict[str, Any]]], raters: list[str], agreement: float) -> dict[str, Any]:
    """Mean over seeds per method and condition, and the three targets."""
    rows: dict[str, Any] = {}
    for method, by_seed in scores.items():
        per: dict[str, Any] = {}
        for cond in next(iter(by_seed.values())):
            values = [s[cond] for s in by_seed.values()]
            per[cond] = {
                "dice": {k: float(np.mean([v["dice"][k] for v in values])) for k in values[0]["dice"]},
                "dice_per_seed": {k: [v["dice"][k] for v in values] for k in values[0]["dice"]},
                "soft_dice": float(np.mean([v["soft_dice"] for v in values])),
                "ece": float(np.mean([v["ece"] for v in values])),
                "ece_per_seed": [v["ece"] for v in values],
                "seeds": len(values),
            }
        rows[method] = per
    targets: dict[str, Any] = {"agreement": agreement}
    if "mrnet" in rows:
        m = rows["mrnet"]
        targets["onehot_dice_vs_own_rater"] = {r: m[r]["dice"][r] for r in raters if r in m}
        targets["onehot_at_least_agreement"] = all(m[r]["dice"][r] >= agreement for r in raters if r in m)
        targets["onehot_prefers_own_rater"] = all(
            m[r]["dice"][r] > m[r]["dice"][o] for r in raters for o in raters if o != r and r in m
        )
        if "rater-mean" in rows:
            targets["uniform_ece_below_rater_mean"] = m["uniform"]["ece"] < rows["rater-mean"]["any"]["ece"]
    # How far each one-hot vector moves the output towards its rater: Dice against rater r with r's vector minus
    # with another rater's. The target above also needs rater r to be easier to match than the others, which a
    # U-Net trained on one rater alone need not be (``one-rater``, on the first rater, is the reference).
    contrast = {m: onehot_contrast(row, raters) for m, row in rows.items() if raters[0] in row}
    if contrast:
        targets["onehot_contrast"] = contrast
        if "mrnet" in contrast:
            targets["onehot_moves_towards_own_rater"] = all(v > 0 for v in contrast["mrnet"].values())
    if "one-rater" in rows:
        first = rows["one-rater"]["any"]["dice"]
        targets["one_rater_unet_prefers_its_rater"] = all(first[raters[0]] > first[o] for o in raters[1:])
    return {"methods": rows, "targets": targets}


def onehot_contrast(row: dict[str, Any], raters: list[str]) -> dict[str, float]:
    """Per rater r: Dice against r with r's one-hot vector minus the mean Dice against r with the others'."""
    return {r: row[r]["dice"][r] - float(np.mean([row[o]["dice"][r] for o in raters if o != r])) for r in raters}


def previous_runs(path: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The scored runs and training records of an earlier result JSON of this benchmark (the grid run in parts,
    in sessions that do not share run folders), with each condition's bins rebuilt, and where they came from.
    Refused when the dataset, split or network settings differ (runs of two configurations are not one grid)."""
    earlier = json.loads(path.read_text())
    if earlier.get("benchmark") != f"raters_{settings['dataset']}":
        raise SystemExit(f"error: {path} is not a result of this benchmark on {settings['dataset']}")
    for key in ("patch_size", "channels", "batch_size", "split", "raters", "max_steps", "val_interval", "patience"):
        if earlier["settings"].get(key) != settings[key]:
            raise SystemExit(
                f"error: {path} was run with {key} {earlier['settings'].get(key)!r}, not {settings[key]!r}"
            )
    scores: dict[str, Any] = {}
    for method, by_seed in earlier["results"]["runs"].items():
        for seed, conditions in by_seed.items():
            scores.setdefault(method, {})[int(seed)] = {
                c: {**v, "_bins": _bins(v["bins"])} for c, v in conditions.items()
            }
    training = {m: {int(k): v for k, v in r.items()} for m, r in earlier["results"]["training"].items()}
    source = {
        "file": path.name,
        "commit": earlier["commit"],
        "runs": sorted(f"{m}/seed{k}" for m in scores for k in scores[m]),
    }
    return scores, training, source


def _bins(record: dict[str, Any]) -> Bins:
    """Reliability bins back from their JSON record (counts, mean confidence and frequency per bin)."""
    counts = np.asarray(record["count"], dtype=np.int64)
    mean = [np.nan_to_num(np.asarray(record[k], dtype=np.float64)) for k in ("confidence", "frequency")]
    return Bins(Bins.empty(counts.size).edges, counts, mean[0] * counts, mean[1] * counts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-steps", type=int, default=3000, help="upper bound of every fine-tune")
    parser.add_argument("--val-interval", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5, help="validations without a gain before stopping")
    parser.add_argument("--patch-size", default=",".join(map(str, CONFIG["patch_size"])))
    parser.add_argument("--channels", default=",".join(map(str, CONFIG["channels"])))
    parser.add_argument("--batch-size", type=int, default=CONFIG["batch_size"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="run folders (kept; finished runs are reused)")
    parser.add_argument(
        "--previous",
        type=Path,
        help="an earlier result JSON whose runs join this one and are not run again (the grid run in parts)",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        parser.error(f"unknown method {unknown[0]!r} (methods: {', '.join(METHODS)})")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    data = require(DATA / DATASETS[args.dataset])
    index = discover(data)
    raters = list(index.observers or [])
    work = args.work / args.dataset
    split = fixed_split(sorted(c.case_id for c in index.cases), work / "split.json")
    settings = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **config(args),
        "raters": raters,
        "split": {k: split[k] for k in ("train_labelled", "val", "test")},
    }
    by_id = {c.case_id: c for c in index.cases}
    cases = [(i, test_case(by_id[i], index)) for i in split["test"]]
    agreement = float(np.mean([rater_agreement(masks, mask=fov) for _, (_, _, masks, fov) in cases]))
    scores: dict[str, dict[int, dict[str, Any]]] = {}
    training: dict[str, dict[int, dict[str, Any]]] = {}
    if args.previous is not None:
        scores, training, settings["previous"] = previous_runs(args.previous, settings)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            if seed in scores.get(method, {}):
                print(f"{method} seed {seed}: in {args.previous}, not run again", flush=True)
                continue
            run = train(data, work / method / f"seed{seed}", method, seed, work / "split.json", args)
            scores.setdefault(method, {})[seed] = score_run(run, cases, raters)
            training.setdefault(method, {})[seed] = run_record(run)
    first = {m: s[min(s)] for m, s in scores.items()}
    diagram: dict[str, Bins] = {
        f"{m} ({'uniform' if 'uniform' in v else 'its output'})": v.get("uniform", v.get("any"))["_bins"]
        for m, v in first.items()
    }
    reliability_diagram(diagram, RESULTS / f"raters_{args.dataset}_reliability.png", title=f"{args.dataset}: test")
    for by_seed in scores.values():
        for s in by_seed.values():
            for v in s.values():
                v.pop("_bins")
    write_result(
        f"raters_{args.dataset}",
        settings=settings,
        results={**summarize(scores, raters, agreement), "runs": scores, "training": training},
    )


if __name__ == "__main__":
    main()
