"""Rebuild the tables of docs/benchmarks.md from benchmarks/results/*.json (between the marker lines), and
draw the time-to-Dice curves into docs/time_to_dice.png.

    python benchmarks/summarize.py
"""

from __future__ import annotations

import json
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import RESULTS, ROOT

DOC = ROOT / "docs" / "benchmarks.md"


def _load(pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob(pattern))]


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def finetune_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | labels | train cases | steps (time) | structure | Dice | HD95 | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s, res = r["settings"], r["results"]
        steps = res["time_to_dice"][-1]["step"] + 1 if res["time_to_dice"] else "-"
        for i, (label, m) in enumerate(res["test"].items()):
            head = (
                f"| {s['dataset']} | {s['fraction']:.0%} | {s['n_train_labelled']} | {steps} "
                f"({res['train_seconds'] / 60:.1f} min) "
                if i == 0
                else "| | | | "
            )
            lines.append(
                f"{head}| {label} | {_f(m['dice'])} | {_f(m['hd95'], 2)} | {r['commit'][:8] if i == 0 else ''} |"
            )
        lines.append(f"| | | | | **mean** | **{_f(res['mean_dice'])}** | | |")
    return "\n".join(lines)


def speed_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| case | train step ours (s) | reference (s) | ratio | +augmentation | predict ours (s) | reference (s) "
        "| ratio | peak RSS ours / ref (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for case, v in r["results"].items():
            lines.append(
                f"| {case} | {_f(v['train_ours']['median_s'])} | {_f(v['train_reference']['median_s'])} | "
                f"{_f(v['train_ratio'])} | {v['augmentation_overhead']:+.1%} | {_f(v['predict_ours']['median_s'])} | "
                f"{_f(v['predict_reference']['median_s'])} | {_f(v['predict_ratio'])} | "
                f"{v['train_ours']['peak_rss_mb']:.0f} / {v['train_reference']['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def time_to_dice_plot(runs: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        pts = r["results"]["time_to_dice"]
        if pts:
            label = f"{r['settings']['dataset']} {r['settings']['fraction']:.0%} labels"
            ax.plot([p["elapsed_s"] / 60 for p in pts], [p["val_dice"] for p in pts], "o-", ms=3, label=label)
    ax.set(
        xlabel="training time on 2 CPU cores (min)",
        ylabel="validation Dice (mean over structures)",
        ylim=(0, 1),
        title="time to Dice",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "time_to_dice.png", dpi=110)
    plt.close(fig)


def replace_block(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> None:
    finetune = _load("finetune_*.json")
    speed = _load("speed.json")
    text = DOC.read_text()
    text = replace_block(text, "finetune", finetune_table(finetune))
    text = replace_block(text, "speed", speed_table(speed))
    DOC.write_text(text)
    time_to_dice_plot(finetune)
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
