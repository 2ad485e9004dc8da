"""Statistics of the label-efficiency experiment beyond the per-seed ones: the bootstrap interval of a paired gain,
the crossover number of labelled cases, and whether a pretraining loss left its starting plateau.

Bootstrap (``paired_bootstrap``): the unit resampled is the test case. For each test case, the paired difference
of its mean Dice over structures (method minus random initialisation, same seed) is averaged over the seeds that
scored it; the test cases are then drawn with replacement (as many as there are), the mean of their averaged
differences taken, ``resamples`` times with a fixed seed, and the 2.5th and 97.5th percentiles of these means are
the 95 % interval. It says how much the gain depends on which test cases were drawn; the spread between runs is the
seed-level paired t-test's (``p_seeds``).

Crossover (``crossover``): the smallest amount of labels (number of cases, or fraction) from which on, at it and at
every larger amount of the experiment, no method gains over random initialisation, a gain being a positive mean
paired difference whose bootstrap interval lies above 0. ``None`` when some method still gains at the largest
amount, or when nothing was compared.

Pretraining plateau (``loss_movement``): the mean of the first and of the last 10 % of the logged training losses
(at least one value each); the loss left its starting plateau when the last mean lies below the first by more than
5 % of the first's magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_RESAMPLES", "crossover", "loss_movement", "paired_bootstrap"]

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the bootstrap interval (its percentiles move by well under 0.1 Dice point between seeds)."""

WINDOW = 0.1
"""Share of the logged losses averaged at the start and at the end of a pretraining run."""

MOVED = 0.05
"""Relative drop of the loss (last window against first) above which pretraining left its starting plateau."""


def paired_bootstrap(
    case_differences: Mapping[str, Sequence[float]],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean paired difference over test cases (see the module docstring).

    Args:
        case_differences: per test case, its paired differences, one per seed that scored it.
        resamples: bootstrap resamples.
        seed: seed of the resampling (the same seed gives the same interval).
        level: coverage of the interval.

    Returns:
        ``(low, high)``, or None without a test case.
    """
    per_case = np.array([np.mean(d) for d in case_differences.values() if len(d)], dtype=float)
    if per_case.size == 0:
        return None
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, per_case.size, size=(resamples, per_case.size))
    means = per_case[drawn].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def crossover(summary: Sequence[Mapping[str, Any]], amount: str = "labelled") -> float | None:
    """The smallest amount of labels from which on no method gains over random initialisation (module docstring).

    Args:
        summary: rows with ``method``, ``amount``, ``diff_vs_random`` and ``ci_low`` (``summarize_runs``).
        amount: the row key of the amount of labels: ``labelled`` (cases) or ``fraction``.

    Returns:
        That amount, or None when a method gains at the largest amount or no method was compared.
    """
    compared = [r for r in summary if r.get("diff_vs_random") is not None and r.get(amount) is not None]
    if not compared:
        return None
    amounts = sorted({r[amount] for r in compared})
    gains = {r[amount] for r in compared if r["diff_vs_random"] > 0 and (r.get("ci_low") or 0.0) > 0}
    if amounts[-1] in gains:
        return None
    later_gain = [a for a in amounts if a in gains]
    above = [a for a in amounts if not later_gain or a > later_gain[-1]]
    return above[0]


def loss_movement(steps: Sequence[int], losses: Sequence[float]) -> dict[str, Any]:
    """How far a pretraining loss moved: first and last window means and whether it left its starting plateau.

    Args:
        steps: the optimiser step of each logged loss.
        losses: the logged losses.

    Returns:
        ``{"logged", "last_step", "first_mean", "last_mean", "relative_change", "left_plateau"}``; the means and
        the verdict are None without a logged loss.
    """
    values = np.asarray(losses, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {
            "logged": 0,
            "last_step": None,
            "first_mean": None,
            "last_mean": None,
            "relative_change": None,
            "left_plateau": None,
        }
    window = max(1, int(np.ceil(WINDOW * values.size)))
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    scale = abs(first) if first != 0 else 1.0  # a loss that starts at 0 is compared in absolute terms
    change = (last - first) / scale
    return {
        "logged": int(values.size),
        "last_step": int(steps[-1]) if len(steps) else None,
        "first_mean": first,
        "last_mean": last,
        "relative_change": change,
        "left_plateau": bool(values.size > 1 and change < -MOVED),
    }
