"""Tune the ground-truth-free `lesion` rule on cached cluster maps of the tuning images (PH2's first 40).

The rule runs after clustering, so its constants can be compared without clustering again: ``cache`` segments
the first 40 PH2 pictures (clean and each seeded artefact, ``labelfree_robustness.py``'s sets) with the k-means
pipeline and keeps, per picture, the cluster map, the lightness and the truth; ``score`` runs the rule on every
cached map, once per value of one constant of ``medssl.labelfree.lesion``, and writes the mean Dice per set and
seed, and the pictures whose Dice moves, to ``labelfree_rule_maps.json`` (or ``--out``), with the commit the
maps were made at (``maps.json`` in the cache folder; one folder holds maps of one commit). Only the first 40
pictures are offered: this is for tuning, and results are reported on the other 160 with
``labelfree_robustness.py``.

    python benchmarks/labelfree_rule_maps.py cache --cache /tmp/maps --sets 0:clean,patch,border 1:border
    python benchmarks/labelfree_rule_maps.py score --cache /tmp/maps --constant _PRESENT_CONTRAST --values 0 0.3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import git_commit, write_result
from labelfree_robustness import ph2_cases, truth_of, write_sets
from medssl.data.io import read_image
from medssl.errors import MedsslError
from medssl.labelfree import lesion
from medssl.labelfree.config import resolve_method_config
from medssl.labelfree.preprocess import image_lightness
from medssl.labelfree.segment import segment_image
from medssl.metrics.label_maps import binary_metrics

MOVED = 0.02  # a picture whose Dice spans more than this over the values is listed
PROVENANCE = "maps.json"  # in the cache folder: the commit the maps were made at


def parse_sets(items: list[str]) -> list[tuple[int, list[str]]]:
    """``seed:set,set`` items -> [(seed, [set, ...])]."""
    parsed = []
    for item in items:
        seed, sep, names = item.partition(":")
        if not sep or not seed.isdigit() or not names:
            raise MedsslError(f"--sets takes seed:set[,set...] (e.g. 0:clean,border), not {item!r}")
        parsed.append((int(seed), names.split(",")))
    return parsed


def cache(folder: Path, sets: list[tuple[int, list[str]]], limit: int | None) -> None:
    """Segment each (seed, set) of the first 40 pictures once; maps already in ``folder`` are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    made = folder / PROVENANCE
    commit = git_commit()
    if made.exists() and json.loads(made.read_text())["commit"] != commit:
        raise MedsslError(f"{folder} holds maps made at another commit ({made}); use a new folder")
    made.write_text(json.dumps({"commit": commit}))
    cases = ph2_cases("first40")[:limit]
    config = resolve_method_config("kmeans", None)
    for seed, names in sets:
        with tempfile.TemporaryDirectory() as work:
            for name, items in write_sets(cases, Path(work), seed, names).items():
                for case, image_path, mask_paths in items:
                    target = folder / f"{name}_{seed}_{case}.npz"
                    if target.exists():
                        continue
                    image, _ = read_image(image_path)
                    labels = segment_image(image, "kmeans", config).labels
                    lightness = image_lightness(image).astype(np.float32)
                    truth = truth_of(mask_paths)
                    np.savez_compressed(target, labels=labels.astype(np.uint8), lightness=lightness, truth=truth)
                    print(f"cached {target.name}", flush=True)


def score(folder: Path, constant: str, values: list[float]) -> dict[str, Any]:
    """Dice of the rule on every cached map under each value of ``lesion.<constant>``: per (set, seed) means and
    the pictures that move."""
    if not hasattr(lesion, constant):
        raise MedsslError(f"medssl.labelfree.lesion has no constant {constant!r}")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise MedsslError(f"no cached maps in {folder}; run the cache command first")
    original = getattr(lesion, constant)
    per_set: dict[str, list[list[float]]] = defaultdict(list)
    moved = []
    try:
        for path in files:
            name, seed, case = path.stem.split("_")
            with np.load(path) as maps:  # each item access decompresses: read once, not once per value
                labels, truth = maps["labels"].astype(np.int64), maps["truth"]
                lightness = maps["lightness"].astype(np.float64)
            dices = []
            for value in values:
                setattr(lesion, constant, value)
                _, mask = lesion.lesion_mask(labels, lightness)
                dices.append(float(binary_metrics(mask, truth)["dice"] or 0.0))
            per_set[f"{name} seed {seed}"].append(dices)
            if max(dices) - min(dices) > MOVED:
                moved.append({"set": name, "seed": int(seed), "case": case, "dice": dices})
    finally:
        setattr(lesion, constant, original)
    means = {
        key: dict(zip(map(str, values), np.mean(rows, axis=0).tolist(), strict=True)) for key, rows in per_set.items()
    }
    for key, row in sorted(means.items()):
        print(key, " ".join(f"{v}={d:.4f}" for v, d in row.items()))
    made = folder / PROVENANCE
    maps_commit = json.loads(made.read_text())["commit"] if made.exists() else "unknown"
    return {"n_maps": len(files), "maps_commit": maps_commit, "mean_dice": means, "moved": moved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["cache", "score"])
    parser.add_argument("--cache", type=Path, required=True, help="folder of the cached maps")
    parser.add_argument("--sets", nargs="+", default=["0:clean"], help="cache: seed:set[,set...] items")
    parser.add_argument("--limit", type=int, default=None, help="cache: the first N pictures only (a smoke run)")
    parser.add_argument("--constant", default="_PRESENT_CONTRAST", help="score: a constant of the lesion module")
    parser.add_argument("--values", nargs="+", type=float, default=None, help="score: values (default: current)")
    parser.add_argument("--out", default="labelfree_rule_maps", help="score: result name in benchmarks/results")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        if args.command == "cache":
            cache(args.cache, parse_sets(args.sets), args.limit)
            return
        values = args.values if args.values is not None else [float(getattr(lesion, args.constant, 0.0))]
        results = score(args.cache, args.constant, values)
    except MedsslError as exc:
        raise SystemExit(f"error: {exc}") from None
    settings = {"cache": str(args.cache), "constant": args.constant, "values": values, "images": "first40"}
    write_result(args.out, settings=settings, results=results)


if __name__ == "__main__":
    main()
