"""Nothing may change in what it computes: what one installed medssl computes on real data, to compare two codes.

Runs, with whatever ``import medssl`` resolves to (so an old checkout through ``PYTHONPATH``), through the api:

- ``s3``: ``medssl segment --method s3`` with its defaults on the first 40 PH2 images by name, scored under the
  best-cluster protocol: per image the cluster map's hash, the scores, the fitting steps and the area ratio;
- ``jsrt``: one fine-tune, 10 % of the labels, seed 0, bounded by steps (300, validation every 100): the logged
  ``train_loss`` and ``val_dice`` per step, the best validation Dice, the test Dice per structure and per case;
- ``hippocampus``: the label-efficiency experiment with ``random`` and ``byol``, 10 % of the labels, seed 0, with
  the settings of ``results/label_efficiency_hippocampus.json`` (300 pretraining and 300 fine-tuning steps, its
  patch, widths and batch): test Dice per method, structure and case, and the loss curves. In 32-bit precision
  by default, not the recorded bf16-mixed: on a CPU without bf16 instructions (AVX2 only) torch emulates bf16
  and a 3D convolution is about 60 times slower; ``--hippocampus-precision bf16-mixed`` where the CPU has them.

Two runs on one machine, with the same threads, must agree exactly (results recorded on another CPU differ in
the last digits: other vector kernels)::

    git worktree add /work/baseline 689d71b       # the code before the change, read-only
    PYTHONPATH=/work/baseline/src nice -n 10 python benchmarks/unchanged.py --out /tmp/unchanged/old.json
    PYTHONPATH=src nice -n 10 python benchmarks/unchanged.py --out /tmp/unchanged/new.json
    python benchmarks/unchanged.py --compare /tmp/unchanged/old.json /tmp/unchanged/new.json   # exit 1: differs

Each part runs in its own process (``--only`` gives the numbers a full run gives). Wall-clock times are recorded
apart from the results and never compared.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from _common import DATA, environment, git_commit, require

PARTS = ("s3", "jsrt", "hippocampus")
SETTINGS: dict[str, dict[str, Any]] = {
    "s3": {"data": "ph2", "images": 40, "method": "s3", "config": "defaults", "protocol": "best-cluster"},
    "jsrt": {"data": "jsrt", "label_fraction": 0.1, "seed": 0, "max_steps": 300, "val_interval": 100},
    "hippocampus": {
        "data": "hippocampus",
        "methods": ["random", "byol"],
        "fractions": [0.1],
        "seeds": 1,
        "pretrain_steps": 300,
        "finetune_steps": 300,
        "precision": "32-true",  # --hippocampus-precision
        "config": {
            "patch_size": [40, 56, 40],
            "channels": [16, 32, 64, 128],
            "batch_size": 2,
            "pretrain": {"warmup_steps": 20},
            "finetune": {"val_interval": 100},
        },
    },
}
CURVES = ("train_loss", "val_dice")
SHOWN = 10  # differing values listed per part


def curves(run: Path) -> dict[str, list[list[float]]]:
    """``[step, value]`` of every logged ``train_loss`` and ``val_dice`` in ``run/logs/metrics.csv``."""
    found: dict[str, list[list[float]]] = {name: [] for name in CURVES}
    with (run / "logs" / "metrics.csv").open() as fh:
        for row in csv.DictReader(fh):
            for name in CURVES:
                if row.get(name):
                    found[name].append([int(row["step"]), float(row[name])])
    return found


def test_cases(run: Path) -> dict[str, dict[str, float | None]]:
    """Per test case and structure, the Dice in ``run/evaluation/test.json``."""
    rows = json.loads((run / "evaluation" / "test.json").read_text())["cases"]
    return {f"{row['case']}/{row['label']}": row.get("dice") for row in rows}


def map_hash(path: Path) -> str:
    """SHA-256 of a cluster map's shape and pixels (not of the PNG bytes, which encoders may change)."""
    pixels = np.ascontiguousarray(np.asarray(Image.open(path)))
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def run_s3(work: Path) -> dict[str, Any]:
    """S3-Net with the defaults of ``medssl segment`` on the first PH2 images, best-cluster scores per image."""
    from medssl import api

    root = require(DATA / "ph2")
    images, masks = work / "ph2" / "images", work / "ph2" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for path in sorted((root / "images").glob("*.png"))[: SETTINGS["s3"]["images"]]:
        (images / path.name).symlink_to(path)
        (masks / path.name).symlink_to(root / "masks" / path.name)
    out = work / "s3"
    api.segment(images, out, method="s3", quiet=True)
    scores = api.evaluate(out, masks, protocol="best-cluster")
    steps = {r["case"]: r["iterations"] for r in json.loads((out / "run.json").read_text())["images"]}
    cases: dict[str, Any] = {}
    for row in scores["cases"]:
        case = row["case"]
        labels = np.asarray(Image.open(out / f"{case}.png"))
        truth = np.asarray(Image.open(masks / f"{case}.png")) > 0
        cases[case] = {
            **{k: v for k, v in row.items() if k not in ("case", "label")},
            "steps": steps[case],
            "area_ratio": float((labels == row["cluster"]).sum() / max(int(truth.sum()), 1)),
            "map_sha256": map_hash(out / f"{case}.png"),
        }
    return {"cases": cases, "mean_dice": float(np.mean([c["dice"] for c in cases.values()]))}


def run_jsrt(work: Path) -> dict[str, Any]:
    """One step-bounded JSRT fine-tune: its curves, best validation Dice and test Dice."""
    from medssl import api

    spec = SETTINGS["jsrt"]
    run = work / "jsrt"
    result = api.finetune(
        require(DATA / spec["data"]),
        run,
        label_fraction=spec["label_fraction"],
        seed=spec["seed"],
        max_steps=spec["max_steps"],
        val_interval=spec["val_interval"],
        precision="32-true",
        quiet=True,
    )
    return {
        "best_val_dice": result.best_val_dice,
        "steps": json.loads((run / "result.json").read_text())["global_step"],
        "test_dice": {label: v.get("dice") for label, v in sorted(result.test_summary.items())},
        "test_cases": test_cases(run),
        "curves": curves(run),
    }


def run_hippocampus(work: Path) -> dict[str, Any]:
    """The label-efficiency experiment, random against BYOL at 10 % of the labels, seed 0."""
    from medssl import api

    spec = SETTINGS["hippocampus"]
    config = work / "hippocampus.yaml"
    config.write_text(json.dumps(spec["config"]))  # JSON is YAML
    out = work / "hippocampus"
    result = api.label_efficiency(
        require(DATA / spec["data"]),
        out,
        methods=spec["methods"],
        fractions=spec["fractions"],
        seeds=spec["seeds"],
        pretrain_steps=spec["pretrain_steps"],
        finetune_steps=spec["finetune_steps"],
        config=config,
        precision=spec["precision"],
        quiet=True,
    )
    runs: dict[str, Any] = {}
    for record in result.runs:
        run = out / "finetune" / record.method / f"frac{record.fraction:g}_seed{record.seed}"
        runs[f"{record.method} {record.fraction:g} seed {record.seed}"] = {
            "mean_dice": record.mean_dice,
            "test_dice": dict(sorted(record.dice.items())),
            "steps": record.steps,
            "test_cases": test_cases(run),
            "curves": curves(run),
        }
    pretraining: dict[str, Any] = {}
    for method in spec["methods"]:
        run = out / "pretrain" / method
        if (run / "result.json").is_file():
            done = json.loads((run / "result.json").read_text())
            pretraining[method] = {
                "steps": done.get("global_step"),
                "final_loss": done.get("final_loss"),
                "train_loss": curves(run)["train_loss"],
            }
    return {"runs": runs, "pretraining": pretraining}


RUNNERS = {"s3": run_s3, "jsrt": run_jsrt, "hippocampus": run_hippocampus}


def source() -> dict[str, Any]:
    """Which medssl this process imports: its folder, version and the commit of the checkout holding it."""
    import medssl

    folder = Path(medssl.__file__).resolve().parent
    return {"file": str(Path(medssl.__file__).resolve()), "version": medssl.__version__, "commit": commit(folder)}


def commit(folder: Path) -> str:
    """The checked-out commit of the git tree holding ``folder``, '+dirty' when a tracked file differs."""
    try:
        sha = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=folder, text=True, stderr=subprocess.DEVNULL)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=folder, stderr=subprocess.DEVNULL).returncode
        return sha.strip() + ("+dirty" if dirty != 0 else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_part(part: str, work: Path, threads: int, out: Path) -> None:
    """One part in this process (a worker): its results, seconds and medssl source into ``out``."""
    import torch

    torch.set_num_threads(threads)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = RUNNERS[part](work)
    seconds = time.perf_counter() - started
    out.write_text(json.dumps({"results": results, "seconds": seconds, "medssl": source()}))


def run_all(parts: list[str], out: Path, workdir: Path, threads: int, keep: bool) -> None:
    """Every part in its own process; one result file with the commit, environment, settings and times."""
    import torch

    torch.set_num_threads(threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="unchanged-", dir=workdir))
    results: dict[str, Any] = {}
    timing: dict[str, float] = {}
    sources: dict[str, Any] = {}
    for part in parts:
        print(f"{part}: running in {work / part}", flush=True)
        part_out = work / f"{part}.json"
        started = time.perf_counter()
        command = [sys.executable, __file__, "--part", part, "--part-out", str(part_out), "--workdir", str(work)]
        precision = ["--hippocampus-precision", SETTINGS["hippocampus"]["precision"]]
        subprocess.run([*command, "--threads", str(threads), *precision], check=True)
        done = json.loads(part_out.read_text())
        results[part], sources[part] = done["results"], done["medssl"]
        timing[part] = round(time.perf_counter() - started, 1)
        print(f"{part}: {timing[part]:.0f} s (medssl from {done['medssl']['file']})", flush=True)
    payload = {
        "benchmark": "unchanged",
        "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "medssl": sources[parts[0]],
        "settings": {"threads": threads, **{part: SETTINGS[part] for part in parts}},
        "results": results,
        "wall_seconds": timing,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if any(s != payload["medssl"] for s in sources.values()):
        payload["medssl_per_part"] = sources
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def leaves(value: Any, path: str = "") -> dict[str, Any]:
    """Every scalar of a JSON value by its path (``a.b[2].c``)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in leaves(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        found = {k: v for i, item in enumerate(value) for k, v in leaves(item, f"{path}[{i}]").items()}
        return found or {path: []}
    return {path: value}


def same(a: Any, b: Any) -> bool:
    """Exactly equal; NaN equals NaN; booleans are not numbers."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_part(old: Any, new: Any) -> tuple[list[str], int, float | None]:
    """(a line per differing value, values compared, max abs difference over differing numbers or None)."""
    a, b = leaves(old), leaves(new)
    lines: list[str] = []
    largest: float | None = None
    for key in [*a, *(k for k in b if k not in a)]:
        if key not in b or key not in a:
            lines.append(f"{key}: only in {'OLD' if key in a else 'NEW'}")
        elif not same(a[key], b[key]):
            if number(a[key]) and number(b[key]):
                diff = abs(float(a[key]) - float(b[key]))
                largest = diff if largest is None or not diff <= largest else largest  # a NaN difference wins
            lines.append(f"{key}: OLD {a[key]!r} NEW {b[key]!r}")
    return lines, len(a.keys() | b.keys()), largest


def compare(old: dict[str, Any], new: dict[str, Any], parts: list[str] | None = None) -> int:
    """Print, per part, identical or what differs (and the largest absolute difference); 1 if anything differs."""
    for name, data in (("OLD", old), ("NEW", new)):
        where = data.get("medssl", {})
        print(f"{name}: medssl {where.get('file')} {where.get('commit')}, {data.get('date')}")
        print(f"{name}: wall seconds {data.get('wall_seconds')}")
    failed = False
    env_a, env_b = old.get("environment", {}), new.get("environment", {})
    for key in ("cpu_model", "cpu_capability", "torch"):
        if env_a.get(key) != env_b.get(key):
            print(f"warning: environment {key} differs ({env_a.get(key)!r}, {env_b.get(key)!r}): not bit-comparable")
    chosen = parts or list(dict.fromkeys([*old.get("results", {}), *new.get("results", {})]))
    setting_a = {k: v for k, v in old.get("settings", {}).items() if k == "threads" or k in chosen}
    setting_b = {k: v for k, v in new.get("settings", {}).items() if k == "threads" or k in chosen}
    for line in compare_part(setting_a, setting_b)[0]:
        print(f"settings differ: {line}")
        failed = True
    for part in chosen:
        if part not in old.get("results", {}) or part not in new.get("results", {}):
            print(f"{part}: MISSING in {'OLD' if part not in old.get('results', {}) else 'NEW'}")
            failed = True
            continue
        lines, count, largest = compare_part(old["results"][part], new["results"][part])
        if not lines:
            print(f"{part}: identical ({count} values)")
            continue
        failed = True
        biggest = "" if largest is None else f", max abs difference {largest:.3g}"
        print(f"{part}: DIFFERS in {len(lines)} of {count} values{biggest}")
        for line in lines[:SHOWN]:
            print(f"  {line}")
        if len(lines) > SHOWN:
            print(f"  ... and {len(lines) - SHOWN} more")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=None, help="result JSON to write")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"), help="scratch folder (a subfolder is made)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (keep it the same for both runs)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders in the scratch folder")
    parser.add_argument(
        "--hippocampus-precision",
        choices=["32-true", "bf16-mixed"],
        default="32-true",
        help="the recorded run used bf16-mixed, emulated (very slow) on CPUs without bf16 instructions",
    )
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two result files")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--only takes parts of {','.join(PARTS)}, got {args.only!r}")
    SETTINGS["hippocampus"]["precision"] = args.hippocampus_precision
    if args.compare:
        old, new = (json.loads(path.read_text()) for path in args.compare)
        return compare(old, new, parts if args.only != ",".join(PARTS) else None)
    if args.part:
        run_part(args.part, args.workdir / args.part, args.threads, args.part_out)
        return 0
    if args.out is None:
        parser.error("give --out PATH.json (or --compare OLD NEW)")
    run_all(parts, args.out, args.workdir, args.threads, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
