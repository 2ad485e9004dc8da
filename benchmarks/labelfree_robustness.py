"""Label-free segmentation on clean and corrupted dermoscopy: PH2 with each seeded artefact, and JSRT lungs.

    OMP_NUM_THREADS=2 python benchmarks/labelfree_robustness.py ph2                  # the 160 held-out images
    OMP_NUM_THREADS=2 python benchmarks/labelfree_robustness.py ph2 --images first40 # the tuning images
    OMP_NUM_THREADS=2 python benchmarks/labelfree_robustness.py jsrt                 # clean only
    python benchmarks/labelfree_robustness.py ph2 --limit 4 --out-dir /tmp/robust    # a smoke run
    python benchmarks/labelfree_robustness.py ph2 --methods s3 --sets clean --tag s3-clean   # one method, one set
    python benchmarks/labelfree_robustness.py ph2 --plain --set kmeans.min_region=0 --config my.yaml

Every PH2 image gets one corrupted copy per artefact of ``medssl.labelfree.artefacts`` (seed 0, seeded by the
image's name), written as PNGs with their masks to a work folder. The registered methods ``kmeans`` and ``s3``
run through the public pipeline (``resolve_method_config`` + ``segment_image``) with the pipeline's defaults as
they are when this runs, changed only by ``--config`` (YAML) and ``--set [method.]key=value``, so that any step
can be switched off; ``--plain`` adds k-means with every pre-processing step off. Each cluster map is scored by
best-cluster Dice (needs the truth) and by every ground-truth-free rule that is registered; the headline rule
(``--rule``) is the one a user would run. Settings are to be tuned only on ``--images first40`` (and their
corrupted copies); results are reported on ``rest`` (the other 160) by default. Writes
``labelfree_robustness_<dataset>.json``, a per-image CSV and a figure with one image per set into the results
folder (``--out-dir``, default benchmarks/results).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from scipy import ndimage

import _common
from _common import DATA, require, write_result
from medssl.config import load_yaml
from medssl.data.io import read_image, read_label, stem
from medssl.errors import MedsslError
from medssl.labelfree import protocols
from medssl.labelfree.artefacts import ARTEFACTS, corrupt
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, resolve_method_config
from medssl.labelfree.preprocess import image_lightness
from medssl.labelfree.segment import segment_image
from medssl.metrics.label_maps import binary_metrics

METHODS = ("kmeans", "s3")
METRICS = ("dice", "hd95")
TUNING_IMAGES = 40
# The k-means fields that existed before artefact handling; --plain also turns off every newer on/off step.
PLAIN = {"colour_space": "rgb", "field_of_view": False, "hair_size": 0, "smooth_sigma": 0.0, "min_region": 0.0}
KNOWN_FIELDS = {*PLAIN, "clusters", "size", "position_weight", "seed", "iterations", "restarts"}
# Per dataset, what the pipeline cannot know: no hair removal on X-rays (it would erase thin structures).
DATASET_SETTINGS: dict[str, dict[str, Any]] = {"ph2": {}, "jsrt": {"hair_size": 0}}


Case = tuple[str, Path, list[Path]]  # (case, image, masks whose union is the structure)


def ph2_cases(images: str) -> list[Case]:
    """(case, image, [mask]) of PH2 sorted by name: the first 40 (tuning), the rest, or all."""
    root = require(DATA / "ph2")
    found = [(stem(p), p, [root / "masks" / p.name]) for p in sorted((root / "images").glob("*.png"))]
    return {"first40": found[:TUNING_IMAGES], "rest": found[TUNING_IMAGES:], "all": found}[images]


def jsrt_cases() -> list[Case]:
    """(case, image, [left lung mask, right lung mask]) of JSRT, sorted by name."""
    root = require(DATA / "jsrt")
    return [
        (stem(p), p, [root / "masks" / side / p.name for side in ("left_lung", "right_lung")])
        for p in sorted((root / "images").glob("*.png"))
    ]


def write_sets(
    cases: list[Case], work: Path, seed: int, kinds: Sequence[str] = ("clean", *ARTEFACTS)
) -> dict[str, list[Case]]:
    """The clean set and, per artefact, one corrupted copy of every case written to ``work/<artefact>/`` (of
    ``kinds`` only)."""
    sets: dict[str, list[Case]] = {"clean": cases} if "clean" in kinds else {}
    for kind in (k for k in ARTEFACTS if k in kinds):
        (work / kind / "images").mkdir(parents=True, exist_ok=True)
        (work / kind / "masks").mkdir(parents=True, exist_ok=True)
        sets[kind] = []
        for case, image_path, mask_paths in cases:
            image = np.asarray(Image.open(image_path).convert("RGB"))
            out_image, out_mask = corrupt(image, truth_of(mask_paths), kind, seed, key=case)
            image_out, mask_out = work / kind / "images" / f"{case}.png", work / kind / "masks" / f"{case}.png"
            Image.fromarray(out_image).save(image_out)
            Image.fromarray((out_mask * 255).astype(np.uint8)).save(mask_out)
            sets[kind].append((case, image_out, [mask_out]))
    return sets


def truth_of(paths: list[Path]) -> np.ndarray:
    """The union of the masks (0: background), as ``(H, W)`` bool."""
    return np.logical_or.reduce([read_label(p)[0] > 0 for p in paths])


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``[method.]key=value`` items -> {method or "*": {key: value}}; values are read as YAML (``0``, ``false``)."""
    parsed: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MedsslError(f"--set takes key=value or method.key=value, not {item!r}")
        method, _, name = key.rpartition(".")
        parsed.setdefault(method or "*", {})[name] = yaml.safe_load(value)
    return parsed


def build_configs(
    dataset: str, config_file: Path | None, overrides: dict[str, dict[str, Any]], plain: bool
) -> dict[str, tuple[str, LabelFreeConfig]]:
    """name -> (registered method, resolved settings): the pipeline's defaults < dataset settings < YAML <
    ``--set``. A key without a method (``--set key=value``, or a YAML without ``method:``) applies to each
    method that has the field; a YAML with ``method:`` (an output folder's ``config.yaml``) to that method."""
    names = {**{m: m for m in METHODS}, **({"kmeans-plain": "kmeans"} if plain else {})}
    unknown = set(overrides) - {"*", *names}
    if unknown:
        raise MedsslError(f"--set names unknown method(s) {sorted(unknown)}; use one of {sorted(names)}")
    from_file = dict(load_yaml(config_file)) if config_file is not None else {}
    own = from_file.pop("method", None)
    if own is not None and own not in names:
        raise MedsslError(f"{config_file} is for method {own!r}; this benchmark runs {', '.join(names)}")
    overrides = {**overrides, "*": {**({} if own else from_file), **overrides.get("*", {})}}
    if own:
        overrides[own] = {**from_file, **overrides.get(own, {})}
    every = overrides["*"]
    fields_of = {m: {f.name for f in dataclasses.fields(resolve_method_config(m))} for m in METHODS}
    for key in every:
        if not any(key in names_ for names_ in fields_of.values()):
            raise MedsslError(f"--set {key}: no method has this setting")
    configs: dict[str, tuple[str, LabelFreeConfig]] = {}
    for name, method in names.items():
        values = {k: v for k, v in {**DATASET_SETTINGS[dataset], **every}.items() if k in fields_of[method]}
        if name == "kmeans-plain":
            values.update(plain_settings())
        values.update(overrides.get(name, {}))
        configs[name] = (method, resolve_method_config(method, None, **values))
    return configs


def plain_settings() -> dict[str, Any]:
    """k-means without pre-processing: today's steps off, two clusters, and every newer boolean step that is on
    by default turned off."""
    newer = {
        f.name: False for f in dataclasses.fields(KMeansConfig) if f.name not in KNOWN_FIELDS and f.default is True
    }
    return {**PLAIN, "clusters": 2, **newer}


def headline_rule(rule: str) -> str:
    """The ground-truth-free rule reported as the headline: ``auto`` takes the pipeline's default rule
    (``protocols.DEFAULT_RULE``), else the one registered rule that is neither ``border`` nor ``darkest``,
    else ``border``."""
    rules = protocols.cluster_protocols(without_truth=True)
    if rule != "auto":
        if rule not in rules:
            raise MedsslError(f"unknown rule {rule!r}; choose auto or one of {', '.join(rules)}")
        return rule
    default = getattr(protocols, "DEFAULT_RULE", None)
    if default in rules:
        return str(default)
    newer = [r for r in rules if r not in ("border", "darkest")]
    return newer[0] if len(newer) == 1 else "border"


def predict(rule: str, labels: np.ndarray, truth: np.ndarray, lightness: np.ndarray) -> tuple[int, np.ndarray]:
    """The cluster and mask a rule predicts (a region rule's region where the protocols can give one)."""
    select_mask = getattr(protocols, "select_mask", None)
    if select_mask is not None:
        cluster, mask = select_mask(rule, labels, truth, lightness)
        return int(cluster), np.asarray(mask, dtype=bool)
    cluster = protocols.select_cluster(rule, labels, truth, lightness)
    return cluster, (labels == cluster) if cluster else np.zeros(truth.shape, dtype=bool)


def score_case(
    image: np.ndarray, truth: np.ndarray, method: str, config: LabelFreeConfig
) -> tuple[dict[str, dict[str, Any]], float, dict[str, np.ndarray]]:
    """Segment one picture and score it: {rule: {"dice", "hd95", "cluster", "n_clusters"}}, the seconds, and
    the mask each rule predicts."""
    start = time.perf_counter()
    result = segment_image(image, method, config)
    seconds = time.perf_counter() - start
    lightness = image_lightness(image)
    scores: dict[str, dict[str, Any]] = {}
    masks: dict[str, np.ndarray] = {}
    n_clusters = len(protocols.cluster_ids(result.labels))
    for rule in ["best-cluster", *protocols.cluster_protocols(without_truth=True)]:
        cluster, masks[rule] = predict(rule, result.labels, truth, lightness)
        found = binary_metrics(masks[rule], truth)
        scores[rule] = {**{m: found[m] for m in METRICS}, "cluster": cluster, "n_clusters": n_clusters}
    return scores, seconds, masks


def run_sets(
    sets: dict[str, list[Case]], configs: dict[str, tuple[str, LabelFreeConfig]], rule: str
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per method, set and case: the scores and seconds; and per method and set, the first case's picture, truth
    and prediction under ``rule`` (for the figure)."""
    rows: list[dict[str, Any]] = []
    examples: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, (method, config) in configs.items():
        for set_name, cases in sets.items():
            for case, image_path, mask_paths in cases:
                image, _ = read_image(image_path)
                truth = truth_of(mask_paths)
                scores, seconds, masks = score_case(image, truth, method, config)
                rows.append({"method": name, "set": set_name, "case": case, "seconds": seconds, "scores": scores})
                if (name, set_name) not in examples:
                    examples[name, set_name] = (image, truth, masks[rule])
                line = " ".join(f"{r}={s['dice']:.3f}" for r, s in scores.items() if s["dice"] is not None)
                print(f"{name} {set_name} {case} {seconds:.2f}s {line}", flush=True)
    return rows, examples


def summarise(rows: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """Per method and set: mean and median of each metric under each rule, the seconds per image, and the
    headline (best-cluster and ``rule`` Dice, their gap, and the change from the clean set)."""
    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        summary[method] = {}
        for set_name in dict.fromkeys(r["set"] for r in rows if r["method"] == method):
            chosen = [r for r in rows if r["method"] == method and r["set"] == set_name]
            per_rule: dict[str, Any] = {}
            for name in chosen[0]["scores"]:
                per_rule[name] = {}
                for metric in METRICS:
                    values = [r["scores"][name][metric] for r in chosen if r["scores"][name][metric] is not None]
                    per_rule[name][metric] = float(np.mean(values)) if values else None
                    per_rule[name][f"{metric}_median"] = float(np.median(values)) if values else None
                    per_rule[name][f"n_undefined_{metric}"] = len(chosen) - len(values)
            seconds = [r["seconds"] for r in chosen]
            summary[method][set_name] = {
                "n_images": len(chosen),
                "headline": {
                    "best_cluster_dice": per_rule["best-cluster"]["dice"],
                    "ground_truth_free_dice": per_rule.get(rule, {}).get("dice"),
                    "ground_truth_free_hd95": per_rule.get(rule, {}).get("hd95"),
                },
                "rules": per_rule,
                "seconds_per_image": {"mean": float(np.mean(seconds)), "median": float(np.median(seconds))},
            }
        _add_gaps(summary[method])
    return summary


def _add_gaps(per_set: dict[str, Any]) -> None:
    """Add to each headline the ground-truth-free Dice minus best-cluster Dice, and minus the clean set's."""
    clean = per_set.get("clean", {}).get("headline", {}).get("ground_truth_free_dice")
    for entry in per_set.values():
        head = entry["headline"]
        free, best = head["ground_truth_free_dice"], head["best_cluster_dice"]
        head["free_minus_best_cluster"] = None if free is None or best is None else free - best
        head["free_minus_clean"] = None if free is None or clean is None else free - clean


def write_cases_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """One row per method, set and image: seconds, and Dice and HD95 under every rule."""
    rules = list(rows[0]["scores"])
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["method", "set", "case", "seconds", *[f"{r}_{m}" for r in rules for m in METRICS]])
        for row in rows:
            values = [row["scores"].get(r, {}).get(m) for r in rules for m in METRICS]
            cells = ["" if v is None else f"{v:.4g}" for v in values]
            writer.writerow([row["method"], row["set"], row["case"], f"{row['seconds']:.3f}", *cells])
    print(f"wrote {path}")


def save_figure(
    path: Path, examples: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]], title: str
) -> None:
    """A row per method, a panel per set: the picture with the truth's outline (green) and the prediction's
    (magenta)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(name for name, _ in examples))
    sets = list(dict.fromkeys(set_name for _, set_name in examples))
    fig, axes = plt.subplots(len(methods), len(sets), figsize=(2.6 * len(sets), 2.3 * len(methods)), squeeze=False)
    for (name, set_name), (image, truth, pred) in examples.items():
        ax = axes[methods.index(name), sets.index(set_name)]
        shown = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
        shown = np.moveaxis(shown, 0, -1).astype(np.float64)
        shown = (shown - shown.min()) / max(float(np.ptp(shown)), 1e-9)
        for mask, colour in ((truth, (0.0, 1.0, 0.0)), (pred, (1.0, 0.0, 1.0))):
            shown[mask & ~ndimage.binary_erosion(mask, iterations=2)] = colour
        ax.imshow(shown)
        ax.set_title(f"{name}: {set_name}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["ph2", "jsrt"])
    parser.add_argument("--images", choices=["first40", "rest", "all"], default="rest", help="PH2 images (sorted)")
    parser.add_argument("--limit", type=int, default=None, help="first N of those images only (a smoke run)")
    parser.add_argument("--methods", nargs="+", default=None, help="subset of kmeans, s3 (and kmeans-plain)")
    parser.add_argument("--sets", nargs="+", default=None, help=f"subset of clean, {', '.join(ARTEFACTS)}")
    parser.add_argument("--tag", default="", help="results file suffix: labelfree_robustness_<dataset>_<tag>")
    parser.add_argument("--plain", action="store_true", help="also k-means with every pre-processing step off")
    parser.add_argument("--config", type=Path, default=None, help="YAML settings for every method")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="[method.]key=value")
    parser.add_argument("--rule", default="auto", help="headline ground-truth-free rule (auto: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the artefacts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the corrupted PNGs here")
    args = parser.parse_args()
    try:
        run(args)
    except MedsslError as exc:
        raise SystemExit(f"error: {exc}") from None


def run(args: argparse.Namespace) -> None:
    """Build the sets and settings, run every method on every set, and write the results."""
    torch.set_num_threads(args.threads)
    if args.out_dir is not None:
        _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS
    results_dir = _common.RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    configs = build_configs(args.dataset, args.config, parse_overrides(args.overrides), args.plain)
    if args.methods:
        missing = set(args.methods) - set(configs)
        if missing:
            raise MedsslError(f"unknown method(s) {sorted(missing)}; choose from {sorted(configs)}")
        configs = {name: configs[name] for name in args.methods}
    kinds = args.sets or ["clean", *ARTEFACTS]
    unknown = set(kinds) - {"clean", *ARTEFACTS}
    if unknown or (args.dataset == "jsrt" and kinds != ["clean"] and args.sets):
        raise MedsslError(f"--sets: {sorted(unknown) or kinds} not available for {args.dataset}")
    rule = headline_rule(args.rule)
    cases = ph2_cases(args.images) if args.dataset == "ph2" else jsrt_cases()
    cases = cases[: args.limit] if args.limit else cases
    name = f"labelfree_robustness_{args.dataset}" + (f"_{args.tag}" if args.tag else "")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        sets = write_sets(cases, work, args.seed, kinds) if args.dataset == "ph2" else {"clean": cases}
        rows, examples = run_sets(sets, configs, rule)
    write_cases_csv(results_dir / f"{name}_cases.csv", rows)
    save_figure(results_dir / f"{name}.png", examples, f"truth green, {rule} rule magenta")
    settings = {
        "dataset": args.dataset,
        "images": args.images if args.dataset == "ph2" else "all",
        "limit": args.limit,
        "n_images": len(cases),
        "tuning": "settings are tuned only on the first 40 PH2 images by name and their corrupted copies "
        "(--images first40); reported here on the images named by 'images' (rest: the other 160)",
        "artefacts": [k for k in ARTEFACTS if k in kinds] if args.dataset == "ph2" else [],
        "sets": list(sets),
        "artefact_seed": args.seed,
        "headline_rule": rule,
        "rules": ["best-cluster", *protocols.cluster_protocols(without_truth=True)],
        "dataset_settings": DATASET_SETTINGS[args.dataset],
        "overrides": args.overrides,
        "config_file": str(args.config) if args.config else None,
        "threads": args.threads,
        "cases_csv": f"{name}_cases.csv",
        "figure": f"{name}.png",
    }
    results = {
        method: {"method": configs[method][0], "config": dataclasses.asdict(configs[method][1]), "sets": per_set}
        for method, per_set in summarise(rows, rule).items()
    }
    write_result(name, settings, results)


if __name__ == "__main__":
    main()
