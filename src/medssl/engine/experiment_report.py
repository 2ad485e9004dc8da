"""Tables and the figure of the label-efficiency experiment, from its fine-tuning run folders.

Statistics, per method and label fraction:
- ``mean_dice`` / ``std_dice``: mean and sample standard deviation over seeds of each run's test Dice (the mean over
  structures of the per-structure means over test cases); the standard deviations are None for a single seed,
  which has no spread to report;
- ``diff_vs_random``: the paired difference to random initialisation with the same seed (same labelled subset,
  same decoder initialisation), averaged over seeds, with its standard deviation;
- ``p_seeds``: two-sided paired t-test of the per-seed differences (None below 2 seeds). The run is the unit of
  randomness (initialisation, labelled subset, batch order), so this is the p-value to read when runs differ a
  lot, e.g. when a small structure is learned in one run and not in another;
- ``p_wilcoxon``: Wilcoxon signed-rank test over every (seed, test case) pair of per-case mean Dice, the two
  methods scored on the same cases. The cases of one run share its network, so with few seeds this p-value
  overstates the certainty of a difference between runs; ``wins``: share of those pairs where the method is better.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medssl.errors import MedsslError

__all__ = ["RANDOM", "RunRecord", "plot_label_efficiency", "read_run", "spread_text", "summarize_runs", "write_report"]

RANDOM = "random"
"""The baseline's name: fine-tuning from random initialisation."""


@dataclass
class RunRecord:
    """One fine-tuning run of the experiment and its test scores.

    Attributes:
        method, fraction, seed: what was run.
        mean_dice: mean over structures of the per-structure test Dice.
        dice: per structure, the mean test Dice.
        case_dice: per test case, the mean Dice over its structures (for paired tests).
        train_seconds, steps: training cost.
    """

    method: str
    fraction: float
    seed: int
    mean_dice: float
    dice: dict[str, float]
    case_dice: dict[str, float] = field(repr=False)
    train_seconds: float
    steps: int


def read_run(run: Path, method: str, fraction: float, seed: int) -> RunRecord:
    """Read a finished ``medssl finetune`` run folder (``result.json`` and ``evaluation/test.json``).

    Raises:
        MedsslError: the run is unfinished or has no test evaluation.
    """
    result_file, evaluation_file = run / "result.json", run / "evaluation" / "test.json"
    if not result_file.is_file() or not evaluation_file.is_file():
        raise MedsslError(f"run {run} is unfinished or has no test evaluation")
    result = json.loads(result_file.read_text())
    evaluation = json.loads(evaluation_file.read_text())
    dice = {label: float(v["dice"]) for label, v in evaluation["summary"].items() if v.get("dice") is not None}
    per_case: dict[str, list[float]] = {}
    for row in evaluation["cases"]:
        if row.get("dice") is not None:
            per_case.setdefault(row["case"], []).append(float(row["dice"]))
    return RunRecord(
        method=method,
        fraction=fraction,
        seed=seed,
        mean_dice=float(np.mean(list(dice.values()))) if dice else math.nan,
        dice=dice,
        case_dice={case: float(np.mean(values)) for case, values in per_case.items()},
        train_seconds=float(result.get("train_seconds", math.nan)),
        steps=int(result.get("global_step", 0)),
    )


def summarize_runs(records: Sequence[RunRecord], baseline: str = RANDOM) -> list[dict[str, Any]]:
    """One row per (method, fraction), in the order methods and fractions first appear (see module docstring)."""
    from scipy.stats import ttest_1samp, wilcoxon

    groups: dict[tuple[str, float], dict[int, RunRecord]] = {}
    for r in records:
        groups.setdefault((r.method, r.fraction), {})[r.seed] = r
    rows = []
    for (method, fraction), by_seed in groups.items():
        values = np.array([r.mean_dice for r in by_seed.values()])
        labels = sorted({label for r in by_seed.values() for label in r.dice})
        row: dict[str, Any] = {
            "method": method,
            "fraction": fraction,
            "n_seeds": len(by_seed),
            "mean_dice": float(values.mean()),
            "std_dice": _sample_std(values),
            **{
                f"dice_{label}": float(np.mean([r.dice[label] for r in by_seed.values() if label in r.dice]))
                for label in labels
            },
            "mean_train_seconds": float(np.mean([r.train_seconds for r in by_seed.values()])),
            "diff_vs_random": None,
            "diff_std": None,
            "p_seeds": None,
            "p_wilcoxon": None,
            "wins": None,
            "n_pairs": 0,
        }
        base = groups.get((baseline, fraction))
        if method != baseline and base:
            seeds = sorted(set(by_seed) & set(base))
            diffs = np.array([by_seed[s].mean_dice - base[s].mean_dice for s in seeds])
            pairs = np.array(
                [
                    by_seed[s].case_dice[c] - base[s].case_dice[c]
                    for s in seeds
                    for c in sorted(set(by_seed[s].case_dice) & set(base[s].case_dice))
                ]
            )
            if len(diffs):
                row["diff_vs_random"] = float(diffs.mean())
                row["diff_std"] = _sample_std(diffs)
            if len(diffs) > 1:
                # Identical differences have no spread: the t statistic is undefined unless they are all zero.
                spread = bool(np.ptp(diffs) > 0)
                row["p_seeds"] = float(ttest_1samp(diffs, 0.0).pvalue) if spread else (1.0 if diffs[0] == 0 else None)
            if len(pairs):
                row["n_pairs"] = len(pairs)
                row["wins"] = float((pairs > 0).mean())
                row["p_wilcoxon"] = float(wilcoxon(pairs).pvalue) if np.any(pairs != 0) else 1.0
        rows.append(row)
    return rows


def _sample_std(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def spread_text(std: float | None, digits: int = 4, scale: float = 1.0) -> str:
    """`` ± std`` for tables, scaled (100 for Dice points); nothing for a single seed, whose spread is None."""
    return "" if std is None else f" ± {scale * std:.{digits}f}"


def write_report(records: Sequence[RunRecord], out: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``runs.csv/json``, ``summary.csv/json`` and ``label_efficiency.png`` into ``out``."""
    summary = summarize_runs(records)
    runs = [{k: v for k, v in vars(r).items() if k != "case_dice"} for r in records]
    files = {}
    for name, rows in (("runs", runs), ("summary", summary)):
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
        (out / f"{name}.csv").write_text(_csv(rows))
        files[name] = str(out / f"{name}.csv")
    files["figure"] = str(plot_label_efficiency(summary, out / "label_efficiency.png"))
    return summary, files


def plot_label_efficiency(summary: Sequence[dict[str, Any]], out_png: Path) -> Path:
    """Left: test Dice against label fraction, one line per method, error bars one standard deviation over
    seeds. Right: the paired difference to random initialisation, with a zero line."""
    methods = list(dict.fromkeys(row["method"] for row in summary))
    fractions = sorted({row["fraction"] for row in summary})
    has_diff = any(row["diff_vs_random"] is not None for row in summary)
    fig, axes = plt.subplots(1, 2 if has_diff else 1, figsize=(11 if has_diff else 5.5, 4), squeeze=False)
    for k, method in enumerate(methods):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r["fraction"])
        x = np.array([r["fraction"] for r in rows]) * (1 + 0.03 * (k - len(methods) / 2))  # dodge the error bars
        axes[0][0].errorbar(
            x,
            [r["mean_dice"] for r in rows],
            yerr=[r["std_dice"] or 0.0 for r in rows],
            marker="o",
            capsize=3,
            label=method,
            color=f"C{k}",
        )
        paired = [r for r in rows if r["diff_vs_random"] is not None]
        if has_diff and paired:
            xp = np.array([r["fraction"] for r in paired]) * (1 + 0.03 * (k - len(methods) / 2))
            axes[0][1].errorbar(
                xp,
                [100 * r["diff_vs_random"] for r in paired],
                yerr=[100 * (r["diff_std"] or 0.0) for r in paired],
                marker="o",
                capsize=3,
                color=f"C{k}",
                label=method,
            )
    axes[0][0].set(ylabel="test Dice (mean over structures)", title="Dice against label fraction")
    if has_diff:
        axes[0][1].axhline(0, color="k", lw=0.8)
        axes[0][1].set(ylabel="Dice points vs random init (paired by seed)", title="gain over random init")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)  # room for the dodged error bars, also for one fraction
        ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("share of training labels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    return buffer.getvalue()
