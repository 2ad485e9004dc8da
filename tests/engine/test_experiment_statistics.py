"""Label-efficiency statistics without training: bootstrap interval, crossover, loss movement, the two-panel plot,
the grid of labelled counts and its nested subsets."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medssl.config import LabelEfficiencyConfig
from medssl.data.split import make_split
from medssl.engine import experiment_report
from medssl.engine.experiment import amounts
from medssl.engine.experiment_report import RunRecord, plot_label_efficiency, pretraining_records, summarize_runs
from medssl.engine.experiment_statistics import crossover, loss_movement, paired_bootstrap
from medssl.errors import MedsslError


def test_bootstrap_resamples_test_cases_of_seed_averaged_differences() -> None:
    # Each case's differences average to 1 over its seeds: every resample has mean 1, however the seeds differ.
    assert paired_bootstrap({"a": [0.0, 2.0], "b": [1.0, 1.0]}) == pytest.approx((1.0, 1.0))
    # Two cases 0 and 1: resampled means are 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so the 2.5th and 97.5th
    # percentiles are the extremes.
    assert paired_bootstrap({"a": [0.0], "b": [1.0]}) == pytest.approx((0.0, 1.0))
    assert paired_bootstrap({}) is None


def test_bootstrap_is_seeded_and_widens_with_spread() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(size=30)
    narrow = {f"c{i}": [0.02 + 0.01 * x] for i, x in enumerate(noise)}
    wide = {f"c{i}": [0.02 + 0.1 * x] for i, x in enumerate(noise)}
    low, high = paired_bootstrap(narrow, seed=7) or (0, 0)
    assert paired_bootstrap(narrow, seed=7) == (low, high)
    assert low < float(np.mean([v[0] for v in narrow.values()])) < high
    wide_low, wide_high = paired_bootstrap(wide, seed=7) or (0, 0)
    assert wide_high - wide_low == pytest.approx(10 * (high - low), rel=1e-6)  # the same draws, ten times the spread


def test_summary_interval_by_hand() -> None:
    def record(method: str, seed: int, cases: dict[str, float]) -> RunRecord:
        return RunRecord(method, 0.5, seed, float(np.mean(list(cases.values()))), {"a": 0.0}, cases, 1.0, 3, 4)

    records = [
        record("random", 0, {"x": 0.5, "y": 0.7}),
        record("random", 1, {"x": 0.6, "y": 0.6}),
        record("simclr", 0, {"x": 0.7, "y": 0.8}),
        record("simclr", 1, {"x": 0.5, "y": 0.9}),
    ]
    rows = {r["method"]: r for r in summarize_runs(records)}
    # Case x: +0.2, -0.1 over the seeds -> 0.05; case y: +0.1, +0.3 -> 0.2. Two cases: the interval is their range.
    assert (rows["simclr"]["ci_low"], rows["simclr"]["ci_high"]) == pytest.approx((0.05, 0.2))
    assert rows["simclr"]["labelled"] == 4 and rows["simclr"]["mean_steps"] == 3
    assert rows["random"]["ci_low"] is None


def _row(method: str, n: int, diff: float | None, ci_low: float | None = None) -> dict[str, Any]:
    return {"method": method, "labelled": n, "diff_vs_random": diff, "ci_low": ci_low}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # Gains at 1 and 2, none from 5 on.
        ([_row("a", 1, 0.05, 0.01), _row("a", 2, 0.03, 0.001), _row("a", 5, 0.01, -0.01), _row("a", 10, 0, -0.02)], 5),
        # Still a gain at the largest N: no crossover.
        ([_row("a", 1, 0.05, 0.01), _row("a", 10, 0.02, 0.005)], None),
        # A gain at 5 after none at 2: from 10 on.
        ([_row("a", 1, 0.05, 0.01), _row("a", 2, 0.0, -0.1), _row("b", 5, 0.02, 0.01), _row("a", 10, 0.01, -0.01)], 10),
        # A positive mean whose interval reaches below 0 is no gain: no gain anywhere, the smallest N.
        ([_row("a", 2, 0.05, -0.01), _row("a", 5, 0.01, -0.02)], 2),
        # A negative difference above... never a gain, whatever its interval.
        ([_row("a", 2, -0.05, 0.01), _row("a", 5, 0.01, -0.02)], 2),
        # Nothing compared (random alone).
        ([_row("random", 2, None), _row("random", 5, None)], None),
    ],
)
def test_crossover(rows: list[dict[str, Any]], expected: int | None) -> None:
    assert crossover(rows + [_row("random", r["labelled"], None) for r in rows]) == expected


@pytest.mark.parametrize(
    ("losses", "left"),
    [
        (np.linspace(2.0, 1.0, 20), True),
        ([1.0] * 20, False),
        (np.linspace(1.0, 0.96, 20), False),  # 4 % lower: still its starting plateau
        (np.linspace(1.0, 0.93, 20), True),
        (np.linspace(-1.0, -1.2, 20), True),  # a negative loss (e.g. a similarity) that falls
        (np.linspace(1.0, 1.5, 20), False),
    ],
)
def test_loss_movement(losses: Any, left: bool) -> None:
    moved = loss_movement(list(range(1, len(losses) + 1)), list(losses))
    assert moved["left_plateau"] is left
    assert moved["first_mean"] == pytest.approx(float(np.mean(losses[:2])))  # the first 10 %: 2 of 20
    assert moved["last_mean"] == pytest.approx(float(np.mean(losses[-2:])))


def test_pretraining_records_read_the_loss_log(tmp_path: Path) -> None:
    logs = tmp_path / "pretrain" / "vae" / "logs"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("step,train_loss\n" + "".join(f"{s},{10 - s}\n" for s in range(10)))
    records = pretraining_records(tmp_path, ["random", "vae"])
    assert list(records) == ["vae"]
    assert records["vae"]["curve"]["steps"] == list(range(1, 11)) and records["vae"]["left_plateau"] is True
    assert records["vae"]["first_mean"] == 10 and records["vae"]["last_mean"] == 1


def _capture_figure(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    figures: list[Any] = []
    subplots = experiment_report.plt.subplots

    def keep(*args: Any, **kwargs: Any) -> Any:
        fig, axes = subplots(*args, **kwargs)
        figures.append(fig)
        return fig, axes

    monkeypatch.setattr(experiment_report.plt, "subplots", keep)
    return figures


@pytest.mark.parametrize(("key", "ticks"), [("labelled", ["1", "5", "20"]), ("fraction", ["10%", "50%", "100%"])])
def test_plot_has_dice_above_and_gain_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, ticks: list[str]
) -> None:
    figures = _capture_figure(monkeypatch)
    values = {"labelled": [1, 5, 20], "fraction": [0.1, 0.5, 1.0]}[key]
    summary = []
    for method in ("random", "simclr"):
        for k, amount in enumerate(values):
            paired = method != "random"
            summary.append(
                {
                    "method": method,
                    "fraction": amount if key == "fraction" else amount / 20,
                    "labelled": amount if key == "labelled" else None,
                    "mean_dice": 0.5 + 0.1 * k,
                    "std_dice": 0.01,
                    "diff_vs_random": 0.02 if paired else None,
                    "ci_low": 0.01 if paired else None,
                    "ci_high": 0.04 if paired else None,
                }
            )
    out = plot_label_efficiency(summary, tmp_path / "plot.png")
    assert out.stat().st_size > 5000
    top, below = figures[0].axes
    assert top.get_xscale() == below.get_xscale() == "log"
    assert [t.get_text() for t in below.get_xticklabels()] == ticks
    assert any(list(line.get_ydata()) == [0, 0] for line in below.get_lines())  # the zero line
    (gain,) = [c for c in below.containers if c.get_label() == "simclr"]
    data_line, _, (bars,) = gain.lines
    assert list(data_line.get_ydata()) == pytest.approx([2.0, 2.0, 2.0])  # Dice points
    # Error bars from the bootstrap interval (1 to 4 points), not the standard deviation.
    assert np.allclose([sorted(seg[:, 1]) for seg in bars.get_segments()], [[1.0, 4.0]] * 3)
    assert [c.get_label() for c in top.containers] == ["random", "simclr"]


def test_labelled_counts_label_exactly_n_nested_cases_with_the_same_test_cases() -> None:
    for n_cases in (8, 13, 30, 57):
        ids = [f"c{i:02d}" for i in range(n_cases)]
        base = make_split(ids, test_fraction=0.2, val_fraction=0.1)
        n_train = len(base["train"])
        grid = amounts(LabelEfficiencyConfig(labelled=[*range(1, n_train), "all"]), n_train)
        for seed in (0, 1):
            splits = [
                make_split(ids, test_fraction=0.2, val_fraction=0.1, label_fraction=a.fraction, seed=seed) for a in grid
            ]
            assert [len(s["train_labelled"]) for s in splits] == [*range(1, n_train), n_train]
            for smaller, larger in itertools.pairwise(splits):
                assert set(smaller["train_labelled"]) < set(larger["train_labelled"])
            assert all(s["test"] == base["test"] and s["val"] == base["val"] for s in splits)


@pytest.mark.parametrize(
    ("labelled", "message"),
    [([1, 8], "labelled 8 is more than the 7 training cases"), ([7, "all"], "7 and all are the same 7")],
)
def test_counts_beyond_the_training_cases_are_refused(labelled: list[Any], message: str) -> None:
    with pytest.raises(MedsslError, match=message):
        amounts(LabelEfficiencyConfig(labelled=labelled), 7)
    grid = amounts(LabelEfficiencyConfig(labelled=["all", 2]), 7)
    assert [(a.labelled, a.name(1)) for a in grid] == [(2, "n002_seed1"), (7, "nall_seed1")]
