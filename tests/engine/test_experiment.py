"""``medssl experiment label-efficiency``: one split for every run, paired statistics, resume, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medssl import api
from medssl.engine.experiment_report import RunRecord, summarize_runs, write_report
from medssl.errors import MedsslError

FAST: dict[str, Any] = {
    "pretrain_steps": 2,
    "finetune_steps": 2,
    "channels": [4, 8],
    "batch_size": 2,
    "finetune": {"val_interval": 2, "max_val_cases": 1, "overlay_cases": 1},
}


def _config(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**FAST, **changes}))
    return path


def _run(data: Path, out: Path, config: Path, **kwargs: Any) -> Any:
    return api.label_efficiency(data, out, config=config, accelerator="cpu", quiet=True, **kwargs)


def test_every_run_shares_the_split_and_the_summary_is_paired(paired_2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = _config(tmp_path, methods=["random", "autoencoder"], fractions=[0.5, 1.0], seeds=2)
    result = _run(paired_2d, out, config)

    assert len(result.runs) == 2 * 2 * 2
    for name in ("experiment.yaml", "split.json", "plan.json", "runs.csv", "summary.csv", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "label_efficiency.png").stat().st_size > 5000
    assert (out / "pretrain" / "autoencoder" / "encoder.pt").is_file()
    assert not (out / "pretrain" / "random").exists()

    split = json.loads((out / "split.json").read_text())
    pretrained_on = json.loads((out / "pretrain" / "autoencoder" / "command.json").read_text())["cases"]
    assert pretrained_on == split["train"] and not set(pretrained_on) & set(split["test"])
    for run in (out / "finetune").glob("*/*"):
        run_split = json.loads((run / "split.json").read_text())
        assert run_split["test"] == split["test"] and run_split["val"] == split["val"]
        assert set(run_split["train_labelled"]) <= set(split["train"])
        command = json.loads((run / "command.json").read_text())
        assert (command["init"] is None) == (run.parent.name == "random")
    # Same seed: the same labelled subset for every method.
    for fraction_seed in ("frac0.5_seed0", "frac0.5_seed1"):
        subsets = {
            json.dumps(json.loads((out / "finetune" / m / fraction_seed / "split.json").read_text())["train_labelled"])
            for m in ("random", "autoencoder")
        }
        assert len(subsets) == 1

    runs = json.loads((out / "runs.json").read_text())
    summary = {(r["method"], r["fraction"]): r for r in json.loads((out / "summary.json").read_text())}
    for fraction in (0.5, 1.0):
        by = {(r["method"], r["seed"]): r["mean_dice"] for r in runs if r["fraction"] == fraction}
        diffs = [by[("autoencoder", s)] - by[("random", s)] for s in (0, 1)]
        row = summary[("autoencoder", fraction)]
        assert row["diff_vs_random"] == pytest.approx(np.mean(diffs))
        assert row["mean_dice"] == pytest.approx(np.mean([by[("autoencoder", s)] for s in (0, 1)]))
        assert row["n_pairs"] == 2 * len(split["test"])
        assert summary[("random", fraction)]["diff_vs_random"] is None


def test_resume_keeps_finished_runs_and_adds_new_seeds(paired_2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = _config(tmp_path, methods=["random"], fractions=[1.0], seeds=1)
    _run(paired_2d, out, config)
    first = out / "finetune" / "random" / "frac1_seed0" / "result.json"
    stamp = first.stat().st_mtime_ns

    with pytest.raises(MedsslError, match="already exists"):
        _run(paired_2d, out, config)
    result = _run(paired_2d, out, config, seeds=2, resume=True)
    assert first.stat().st_mtime_ns == stamp
    assert [r.seed for r in result.runs] == [0, 1]
    with pytest.raises(MedsslError, match="finetune_steps"):
        _run(paired_2d, out, config, finetune_steps=3, resume=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["random", "nosuch"]}, "unknown method 'nosuch'"),
        ({"fractions": [0.0, 1.0]}, r"fractions must be in \(0, 1\]"),
        ({"seeds": 0}, "seeds must be at least 1"),
        ({"finetune": {"lr": 1e-3, "bogus": 1}}, "unknown option"),
        ({"finetune": {"channels": [4, 8]}}, "top level"),
        ({"method_options": {"byol": {"momentum": 0.9}}}, "not in the experiment"),
    ],
)
def test_bad_settings_fail_before_any_work(
    paired_2d: Path, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MedsslError, match=message):
        _run(paired_2d, tmp_path / "exp", _config(tmp_path, **{"methods": ["random"], **changes}))
    assert not (tmp_path / "exp").exists()


def test_unlabelled_data_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / f"img{i}.png")
    with pytest.raises(MedsslError, match="no labels"):
        _run(folder, tmp_path / "exp", _config(tmp_path, methods=["random"]))


def test_summary_statistics_against_hand_computation() -> None:
    def record(method: str, seed: int, cases: dict[str, float]) -> RunRecord:
        return RunRecord(method, 0.1, seed, float(np.mean(list(cases.values()))), {"a": 0.0}, cases, 1.0, 1)

    records = [
        record("random", 0, {"x": 0.5, "y": 0.7}),
        record("random", 1, {"x": 0.6, "y": 0.6}),
        record("simclr", 0, {"x": 0.7, "y": 0.8}),
        record("simclr", 1, {"x": 0.5, "y": 0.9}),
    ]
    rows = {r["method"]: r for r in summarize_runs(records)}
    # Per-seed means: random 0.6, 0.6; simclr 0.75, 0.7 -> differences 0.15, 0.10.
    assert rows["simclr"]["mean_dice"] == pytest.approx(0.725)
    assert rows["simclr"]["std_dice"] == pytest.approx(np.std([0.75, 0.7], ddof=1))
    assert rows["simclr"]["diff_vs_random"] == pytest.approx(0.125)
    assert rows["simclr"]["diff_std"] == pytest.approx(np.std([0.15, 0.10], ddof=1))
    # Case pairs: +0.2, +0.1, -0.1, +0.3 -> 3 of 4 better.
    assert rows["simclr"]["wins"] == pytest.approx(0.75) and rows["simclr"]["n_pairs"] == 4
    assert 0 < rows["simclr"]["p_wilcoxon"] <= 1
    # Paired t over seeds: t = 0.125 / (sd / sqrt 2) = 5, 1 degree of freedom (a Cauchy law): p = 1 - 2 atan(t) / pi.
    t = 0.125 / (np.std([0.15, 0.10], ddof=1) / np.sqrt(2))
    assert rows["simclr"]["p_seeds"] == pytest.approx(1 - 2 * np.arctan(t) / np.pi)
    assert rows["random"]["diff_vs_random"] is None and rows["random"]["p_seeds"] is None


def test_seed_level_p_value_needs_two_seeds_and_spread() -> None:
    def record(method: str, seed: int, value: float) -> RunRecord:
        return RunRecord(method, 0.1, seed, value, {"a": value}, {"x": value}, 1.0, 1)

    one_seed = summarize_runs([record("random", 0, 0.5), record("ae", 0, 0.6)])
    assert one_seed[1]["p_seeds"] is None
    # One seed has no spread: reported as missing, not as a standard deviation of zero.
    assert one_seed[0]["std_dice"] is None and one_seed[1]["diff_std"] is None
    assert one_seed[1]["diff_vs_random"] == pytest.approx(0.1)

    equal = summarize_runs([record("random", s, 0.5) for s in range(2)] + [record("ae", s, 0.5) for s in range(2)])
    assert equal[1]["p_seeds"] == 1.0
    same_gain = summarize_runs([record("random", s, 0.5) for s in range(2)] + [record("ae", s, 0.6) for s in range(2)])
    assert same_gain[1]["p_seeds"] is None


def test_one_seed_report_and_plot(tmp_path: Path) -> None:
    records = [RunRecord(m, f, 0, 0.5, {"a": 0.5}, {"x": 0.5}, 1.0, 1) for m in ("random", "ae") for f in (0.1, 1.0)]
    summary, files = write_report(records, tmp_path)
    assert all(row["std_dice"] is None for row in summary)
    assert Path(files["figure"]).stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())[0]["std_dice"] is None


def test_cli_table_with_one_seed_shows_no_spread(tmp_path: Path, paired_2d: Path) -> None:
    config = _config(tmp_path, methods=["random", "autoencoder"], fractions=[1.0], seeds=1)
    cmd = [sys.executable, "-m", "medssl", "experiment", "label-efficiency", "--data", str(paired_2d)]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "e"), "--config", str(config), "--accelerator", "cpu", "--quiet"],
        capture_output=True,
        encoding="utf-8",  # the table has "±" whatever the locale
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"},
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "autoencoder" in line and "100%" in line]
    assert len(rows) == 1 and " pt" in rows[0] and "±" not in rows[0]


def test_cli_bad_fraction_list_is_one_error(tmp_path: Path, paired_2d: Path) -> None:
    cmd = [sys.executable, "-m", "medssl", "experiment", "label-efficiency", "--data", str(paired_2d)]
    done = subprocess.run(
        [*cmd, "--out", str(tmp_path / "e"), "--fractions", "0.1,ten"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--fractions must be a comma-separated list of float" in done.stderr
    assert "Traceback" not in done.stderr
