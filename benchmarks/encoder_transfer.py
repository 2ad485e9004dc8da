"""How far did pretraining move the encoder from its initialisation, and how far did fine-tuning move it after?

    python benchmarks/encoder_transfer.py --experiment benchmarks/work/label_efficiency_jsrt

Reads a label-efficiency experiment folder (no training). Compares convolution weights per encoder stage
(flattened and concatenated), as cosine and relative change ``|end - start| / |start|``:
- pretraining: ``pretrain/<method>/encoder.pt`` against the encoder the method started from, rebuilt exactly
  as ``medssl pretrain`` builds it (``seed_everything(seed)`` then the registry's ``create``);
- fine-tuning: every finished run's encoder at the end (``checkpoints/last.ckpt``) against its start (the
  method's pretrained encoder, or for random init the encoder ``medssl finetune`` builds with the run's seed),
  with a control: the cosine against a random initialisation no run used (chance level).
It also records whether the pretraining start equals a random-init run's start (the same seed builds the same
encoder). Writes ``benchmarks/results/encoder_transfer_<folder>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from torch import Tensor

from _common import ROOT, require, write_result
from medssl.data.plan import Plan
from medssl.engine.experiment import RANDOM
from medssl.networks.weights import load_checkpoint_file
from medssl.pretrain import create
from medssl.segment.predict import build_network

STAGE = re.compile(r"stages\.(\d+)\..*conv\.weight$")
UNUSED_SEED = 12345  # a random initialisation no run of the experiment used: the control
Weights = dict[int, Tensor]


def stage_weights(state: dict[str, Tensor], prefix: str = "") -> Weights:
    """The convolution weights of each encoder stage, flattened and concatenated: ``{stage: vector}``."""
    parts: dict[int, list[Tensor]] = defaultdict(list)
    for key in sorted(state):
        match = STAGE.search(key[len(prefix) :]) if key.startswith(prefix) else None
        if match:
            parts[int(match.group(1))].append(state[key].detach().float().flatten())
    return {stage: torch.cat(vectors) for stage, vectors in sorted(parts.items())}


def finetune_start(plan: Plan, seed: int) -> Weights:
    """The encoder a random-init ``medssl finetune`` run with this seed starts from."""
    L.seed_everything(seed, workers=True, verbose=False)
    return stage_weights(build_network(plan).encoder.state_dict())


def pretrain_start(run: Path) -> Weights:
    """The encoder a ``medssl pretrain`` run started from (its seed, method, options and plan)."""
    command = json.loads((run / "command.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    plan = Plan.load(run / "plan.json")
    L.seed_everything(command["seed"], workers=True, verbose=False)
    method = create(
        command["method"],
        spatial_dims=plan.spatial_dims,
        in_channels=plan.in_channels,
        channels=plan.channels,
        **config.get("method_options", {}),
    )
    return stage_weights(method.export_encoder().state_dict())


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def movement(end: Weights, start: Weights) -> dict[str, list[float]]:
    """Per stage: cosine(end, start) and |end - start| / |start|."""
    return {
        "cos_start": [round(cosine(end[s], start[s]), 4) for s in sorted(end)],
        "relative_change": [round(float((end[s] - start[s]).norm() / start[s].norm()), 4) for s in sorted(end)],
    }


def mean_rows(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, list[float]]:
    return {key: np.mean([r[key] for r in rows], axis=0).round(4).tolist() for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", type=Path, default=ROOT / "benchmarks" / "work" / "label_efficiency_jsrt")
    args = parser.parse_args()
    root = require(args.experiment)

    pretrained: dict[str, Weights] = {}
    starts: dict[str, Weights] = {}
    pretraining: dict[str, dict[str, Any]] = {}
    for encoder_file in sorted((root / "pretrain").glob("*/encoder.pt")):
        method = encoder_file.parent.name
        pretrained[method] = stage_weights(load_checkpoint_file(encoder_file)["state_dict"])
        starts[method] = pretrain_start(encoder_file.parent)
        seed = json.loads((encoder_file.parent / "command.json").read_text())["seed"]
        pretraining[method] = {"seed": seed, **movement(pretrained[method], starts[method])}
        print(f"pretraining {method:12s} cos(end, start) {pretraining[method]['cos_start']}")
        print(f"{'':24s}|end - start| / |start| {pretraining[method]['relative_change']}")

    runs = []
    same_start: dict[str, bool] = {}
    controls: dict[str, Weights] = {}  # by plan: the runs of one experiment share it
    for last in sorted((root / "finetune").glob("*/*/checkpoints/last.ckpt")):
        run = last.parents[1]
        match = re.fullmatch(r"frac([\d.]+)_seed(\d+)", run.name)
        if match is None or not (run / "result.json").is_file():
            continue  # not a finished run
        method, fraction, seed = run.parent.name, float(match.group(1)), int(match.group(2))
        plan_text = (run / "plan.json").read_text()
        plan = Plan.load(run / "plan.json")
        end = stage_weights(load_checkpoint_file(last)["state_dict"], "model.encoder.")
        if method == RANDOM:
            start = finetune_start(plan, seed)
            for name, info in pretraining.items():
                if info["seed"] == seed:
                    pre = starts[name]
                    same_start[f"{name} / random seed {seed}"] = all(torch.equal(pre[s], start[s]) for s in pre)
        else:
            start = pretrained[method]
        if plan_text not in controls:
            controls[plan_text] = finetune_start(plan, UNUSED_SEED)
        control = controls[plan_text]
        runs.append(
            {
                "method": method,
                "fraction": fraction,
                "seed": seed,
                **movement(end, start),
                "cos_control": [round(abs(cosine(end[s], control[s])), 4) for s in sorted(end)],
            }
        )
    if not runs:
        raise SystemExit(f"no finished fine-tuning run in {root}")

    summary = []
    keys = ("cos_start", "relative_change", "cos_control")
    for method in sorted({r["method"] for r in runs}, key=lambda m: (m != RANDOM, m)):
        for fraction in sorted({r["fraction"] for r in runs if r["method"] == method}):
            mine = [r for r in runs if r["method"] == method and r["fraction"] == fraction]
            row = {"method": method, "fraction": fraction, "n_runs": len(mine), **mean_rows(mine, keys)}
            summary.append(row)
            print(
                f"fine-tuning {method:12s} {fraction:5g} n={len(mine)}  cos(end, start) {row['cos_start']}\n"
                f"{'':30s}|end - start| / |start| {row['relative_change']}\n"
                f"{'':30s}|cos(end, unused init)| {row['cos_control']}"
            )
    print("same encoder start:", same_start)
    write_result(
        f"encoder_transfer_{root.name}",
        settings={"experiment": root.name, "weights": "checkpoints/last.ckpt", "control_seed": UNUSED_SEED},
        results={"pretraining": pretraining, "same_start": same_start, "finetuning": summary, "runs": runs},
    )


if __name__ == "__main__":
    main()
