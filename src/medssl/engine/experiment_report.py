"""Tables and the figure of the label-efficiency experiment, from its fine-tuning run folders.

Statistics, per method and amount of labels (a number of labelled cases ``labelled``, or a label ``fraction``):
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
  overstates the certainty of a difference between runs; ``wins``: share of those pairs where the method is better;
- ``ci_low`` / ``ci_high``: bootstrap 95 % interval of ``diff_vs_random`` over test cases, and ``crossover``: the
  smallest amount of labels from which on no method gains (``medssl.engine.experiment_statistics``);
- ``mean_steps`` and ``plateau_stops``: fine-tuning steps taken, averaged over seeds, and how many runs of the row
  stopped at a validation plateau (the others at their maximum).
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

from medssl.engine.experiment_statistics import BOOTSTRAP_RESAMPLES, crossover, loss_movement, paired_bootstrap
from medssl.engine.plots import read_curves
from medssl.engine.run_folder import metric_logs
from medssl.errors import MedsslError

__all__ = [
    "ALL",
    "RANDOM",
    "Amount",
    "RunRecord",
    "plot_label_efficiency",
    "pretraining_records",
    "read_run",
    "run_name",
    "spread_text",
    "summarize_runs",
    "write_report",
]

RANDOM = "random"
"""The baseline's name: fine-tuning from random initialisation."""

ALL = "all"
"""``labelled`` entry meaning every training case."""


@dataclass(frozen=True)
class Amount:
    """One amount of labels of the grid: the ``label_fraction`` a run gets, and N when counted in cases."""

    fraction: float
    labelled: int | None = None
    all_cases: bool = False

    def name(self, seed: int) -> str:
        """The run folder's name for ``seed``."""
        if self.labelled is None:
            return run_name(self.fraction, seed)
        return f"n{ALL if self.all_cases else f'{self.labelled:03d}'}_seed{seed}"

    def __str__(self) -> str:
        if self.labelled is None:
            return f"{self.fraction:g} of the labels"
        return f"{self.labelled} labelled case{'s' * (self.labelled != 1)}{' (all)' * self.all_cases}"


def run_name(fraction: float, seed: int) -> str:
    """Folder name of one fine-tuning run by label fraction, e.g. ``frac0.05_seed2``."""
    return f"frac{fraction:g}_seed{seed}"


@dataclass
class RunRecord:
    """One fine-tuning run of the experiment and its test scores.

    Attributes:
        method, fraction, seed: what was run.
        mean_dice: mean over structures of the per-structure test Dice.
        dice: per structure, the mean test Dice.
        case_dice: per test case, the mean Dice over its structures (for paired tests).
        train_seconds, steps: training cost.
        labelled: the number of labelled training cases (None in an experiment by label fraction).
        stopped: why training ended: ``plateau`` (validation Dice stopped improving) or ``max_steps``.
        best_val_dice: the best validation Dice (the checkpoint scored on the test cases).
        validation_curve: ``{"steps": [...], "values": [...]}`` of the validation Dice.
    """

    method: str
    fraction: float
    seed: int
    mean_dice: float
    dice: dict[str, float]
    case_dice: dict[str, float] = field(repr=False)
    train_seconds: float
    steps: int
    labelled: int | None = None
    stopped: str | None = None
    best_val_dice: float | None = None
    validation_curve: dict[str, list[float]] = field(default_factory=dict, repr=False)


def read_run(run: Path, method: str, fraction: float, seed: int, labelled: int | None = None) -> RunRecord:
    """Read a finished ``medssl finetune`` run folder (``result.json`` and ``evaluation/test.json``).

    Raises:
        MedsslError: the run is unfinished or has no test evaluation.
    """
    result_file, evaluation_file = run / "result.json", run / "evaluation" / "test.json"
    if not result_file.is_file() or not evaluation_file.is_file():
        raise MedsslError(f"run {run} is unfinished or has no test evaluation")
    result = json.loads(result_file.read_text())
    evaluation = json.loads(evaluation_file.read_text())
    curve = result.get("validation_curve") or {}
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
        labelled=labelled,
        stopped=result.get("stopped"),
        best_val_dice=_best_finite(curve.get("values", [])),
        validation_curve={"steps": list(curve.get("steps", [])), "values": list(curve.get("values", []))},
    )


def _best_finite(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return max(finite) if finite else None


def summarize_runs(records: Sequence[RunRecord], baseline: str = RANDOM) -> list[dict[str, Any]]:
    """One row per (method, amount of labels), in the order methods and amounts first appear (module docstring)."""
    groups: dict[tuple[str, float], dict[int, RunRecord]] = {}
    for r in records:
        groups.setdefault((r.method, r.fraction), {})[r.seed] = r
    rows = []
    for (method, fraction), by_seed in groups.items():
        runs = list(by_seed.values())
        values = np.array([r.mean_dice for r in runs])
        labels = sorted({label for r in runs for label in r.dice})
        row: dict[str, Any] = {
            "method": method,
            "fraction": fraction,
            "labelled": runs[0].labelled,
            "n_seeds": len(by_seed),
            "mean_dice": float(values.mean()),
            "std_dice": _sample_std(values),
            **{f"dice_{label}": float(np.mean([r.dice[label] for r in runs if label in r.dice])) for label in labels},
            "mean_train_seconds": float(np.mean([r.train_seconds for r in runs])),
            "mean_steps": float(np.mean([r.steps for r in runs])),
            "plateau_stops": sum(r.stopped == "plateau" for r in runs),
        }
        base = groups.get((baseline, fraction))
        row |= _paired(by_seed, base if method != baseline and base else {})
        rows.append(row)
    return rows


def _paired(by_seed: dict[int, RunRecord], base: dict[int, RunRecord]) -> dict[str, Any]:
    """The paired statistics of one row against the baseline's runs with the same seeds (none without them)."""
    from scipy.stats import ttest_1samp, wilcoxon

    row: dict[str, Any] = dict.fromkeys(("diff_vs_random", "diff_std", "p_seeds", "p_wilcoxon", "wins"))
    row |= {"n_pairs": 0, "ci_low": None, "ci_high": None, "bootstrap_resamples": None}
    seeds = sorted(set(by_seed) & set(base))
    diffs = np.array([by_seed[s].mean_dice - base[s].mean_dice for s in seeds])
    per_case: dict[str, list[float]] = {}
    for s in seeds:
        for c in sorted(set(by_seed[s].case_dice) & set(base[s].case_dice)):
            per_case.setdefault(c, []).append(by_seed[s].case_dice[c] - base[s].case_dice[c])
    pairs = np.array([d for c in per_case for d in per_case[c]])
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
        interval = paired_bootstrap(per_case)
        if interval is not None:
            row["ci_low"], row["ci_high"] = interval
            row["bootstrap_resamples"] = BOOTSTRAP_RESAMPLES
    return row


def _sample_std(values: np.ndarray) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def spread_text(std: float | None, digits: int = 4, scale: float = 1.0) -> str:
    """`` ± std`` for tables, scaled (100 for Dice points); nothing for a single seed, whose spread is None."""
    return "" if std is None else f" ± {scale * std:.{digits}f}"


def amount_key(rows: Sequence[dict[str, Any]]) -> str:
    """``labelled`` when every row has a number of labelled cases (an experiment by cases), else ``fraction``."""
    return "labelled" if rows and all(r.get("labelled") is not None for r in rows) else "fraction"


def write_report(
    records: Sequence[RunRecord], out: Path, extra: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write ``runs.csv/json``, ``summary.csv/json``, ``label_efficiency.png`` and ``experiment.json`` into ``out``.

    Args:
        records: every fine-tuning run.
        out: the experiment folder.
        extra: more entries of ``experiment.json`` (the settings, the pretraining curves).

    Returns:
        The summary rows, and the files written by kind.
    """
    summary = summarize_runs(records)
    runs = [vars(r) | {"case_dice": dict(sorted(r.case_dice.items()))} for r in records]
    flat = [{k: v for k, v in run.items() if k not in ("case_dice", "validation_curve")} for run in runs]
    files = {}
    for name, rows, table in (("runs", runs, flat), ("summary", summary, summary)):
        (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
        (out / f"{name}.csv").write_text(_csv(table))
        files[name] = str(out / f"{name}.csv")
    key = amount_key(summary)
    everything = {
        **(extra or {}),
        "amount": key,
        "crossover": crossover(summary, key),
        "summary": summary,
        "runs": runs,
    }
    (out / "experiment.json").write_text(json.dumps(everything, indent=2))
    files["experiment"] = str(out / "experiment.json")
    files["figure"] = str(plot_label_efficiency(summary, out / "label_efficiency.png"))
    return summary, files


def plot_label_efficiency(summary: Sequence[dict[str, Any]], out_png: Path) -> Path:
    """Top: test Dice against the number of labelled cases (or the label fraction, in %), log axis, one line per
    method, error bars one standard deviation over seeds. Below: each method's paired gain over random
    initialisation in Dice points, error bars its bootstrap 95 % interval over test cases, and a zero line."""
    key = amount_key(summary)
    methods = list(dict.fromkeys(row["method"] for row in summary))
    amounts = sorted({row[key] for row in summary})
    fig, (top, below) = plt.subplots(2, 1, figsize=(6.5, 7.5), sharex=True, height_ratios=(3, 2))
    for k, method in enumerate(methods):
        rows = sorted((r for r in summary if r["method"] == method), key=lambda r: r[key])
        dodge = 1 + 0.03 * (k - len(methods) / 2)  # keeps the error bars of the methods apart
        x = np.array([r[key] for r in rows], dtype=float) * dodge
        std = [r["std_dice"] or 0.0 for r in rows]
        top.errorbar(x, [r["mean_dice"] for r in rows], yerr=std, marker="o", capsize=3, label=method, color=f"C{k}")
        _plot_gain(below, [r for r in rows if r["diff_vs_random"] is not None], key, dodge, f"C{k}", method)
    top.set(ylabel="test Dice (mean over structures)", title="test Dice (error bars: std over seeds)")
    below.axhline(0, color="k", lw=0.8)
    below.set(ylabel="gain over random init (Dice points)", title="paired gain (error bars: bootstrap 95 % interval)")
    below.set_xscale("log")
    below.set_xlim(min(amounts) / 1.5, max(amounts) * 1.5)  # room for the dodged error bars, also for one amount
    ticks = [f"{a:g}" for a in amounts] if key == "labelled" else [f"{100 * a:g}%" for a in amounts]
    below.set_xticks(amounts, ticks)
    below.minorticks_off()
    below.set_xlabel("labelled training cases" if key == "labelled" else "share of training labels")
    for ax in (top, below):
        ax.grid(alpha=0.3)
        if ax.has_data() and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def _plot_gain(ax: Any, rows: Sequence[dict[str, Any]], key: str, dodge: float, colour: str, method: str) -> None:
    """One method's paired gain in Dice points with its bootstrap interval (none drawn where there is none)."""
    if not rows:
        return
    gain = np.array([100 * r["diff_vs_random"] for r in rows])
    low = np.array([100 * r["ci_low"] if r.get("ci_low") is not None else g for r, g in zip(rows, gain, strict=True)])
    high = np.array(
        [100 * r["ci_high"] if r.get("ci_high") is not None else g for r, g in zip(rows, gain, strict=True)]
    )
    x = np.array([r[key] for r in rows], dtype=float) * dodge
    ax.errorbar(
        x, gain, yerr=np.clip([gain - low, high - gain], 0, None), marker="o", capsize=3, color=colour, label=method
    )


def pretraining_records(root: Path, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per pretrained method, its training loss curve and how far it moved (``experiment_statistics.loss_movement``:
    first and last 10 % window means, and whether it left its starting plateau)."""
    records: dict[str, dict[str, Any]] = {}
    for method in [m for m in methods if m != RANDOM]:
        run = root / "pretrain" / method
        steps, values = read_curves(metric_logs(run)).get("train_loss", ([], []))
        records[method] = {**loss_movement(steps, values), "curve": {"steps": steps, "values": values}}
    return records


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    return buffer.getvalue()
