"""``medssl experiment label-efficiency`` by numbers of labelled cases: nested subsets, one test set, the plateau
schedule and the spacing in every run, and the result file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from medssl import api
from medssl.errors import MedsslError

FAST: dict[str, Any] = {
    "pretrain_steps": 2,
    "finetune_steps": 4,
    "val_interval": 1,
    "patience": 1,
    "channels": [4, 8],
    "batch_size": 2,
    "finetune": {"max_val_cases": 1, "overlay_cases": 1},
}


def _config(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**FAST, **changes}))
    return path


def _run(data: Path, out: Path, config: Path, **kwargs: Any) -> Any:
    return api.label_efficiency(data, out, config=config, accelerator="cpu", quiet=True, **kwargs)


def _read(path: Path) -> Any:
    return yaml.safe_load(path.read_text())  # JSON is YAML


def test_labelled_counts_nest_share_the_test_cases_and_train_to_a_plateau(paired_2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    # A gain of 0.9 Dice in one step never comes: every run stops at its second validation, a plateau.
    config = _config(tmp_path, methods=["random", "autoencoder"], labelled=[1, 2, 5, "all"], seeds=1, min_delta=0.9)
    result = _run(paired_2d, out, config, seeds=1)  # the fixture's 10 cases: 2 test, 1 validation, 7 training
    split = _read(out / "split.json")
    assert len(split["train"]) == 7

    subsets = {}
    for name, n in (("n001", 1), ("n002", 2), ("n005", 5), ("nall", 7)):
        for method in ("random", "autoencoder"):
            run = out / "finetune" / method / f"{name}_seed0"
            run_split = _read(run / "split.json")
            assert run_split["test"] == split["test"] and run_split["val"] == split["val"]
            assert len(run_split["train_labelled"]) == n
            subsets.setdefault(n, set()).update(run_split["train_labelled"])
            settings = _read(run / "config.yaml")
            assert (settings["patience"], settings["val_interval"], settings["max_steps"]) == (1, 1, 4)
    assert all(len(subsets[n]) == n for n in subsets)  # the same subset for both methods
    assert subsets[1] < subsets[2] < subsets[5] < subsets[7] == set(split["train"])

    everything = _read(out / "experiment.json")
    assert everything["amount"] == "labelled" and everything["n_train"] == 7
    assert everything["test_cases"] == split["test"]
    assert [r["labelled"] for r in everything["summary"] if r["method"] == "random"] == [1, 2, 5, 7]
    for run in everything["runs"]:
        name = "nall" if run["labelled"] == 7 else f"n{run['labelled']:03d}"
        folder = out / "finetune" / run["method"] / f"{name}_seed0"
        saved = _read(folder / "result.json")
        assert (run["steps"], run["stopped"]) == (saved["global_step"], saved["stopped"])
        assert (run["stopped"], run["steps"]) == ("plateau", 2)
        assert run["best_val_dice"] == max(saved["validation_curve"]["values"])
        assert run["validation_curve"]["values"] == saved["validation_curve"]["values"]
        assert sorted(run["case_dice"]) == split["test"]
    assert set(everything["pretraining"]) == {"autoencoder"}
    assert everything["pretraining"]["autoencoder"]["logged"] > 0
    assert isinstance(everything["pretraining"]["autoencoder"]["left_plateau"], bool)
    assert [r.labelled for r in result.runs] == [1, 1, 2, 2, 5, 5, 7, 7]

    # Resuming keeps the settings: the plateau schedule and the kind of amounts are settings.
    with pytest.raises(MedsslError, match="patience"):
        _run(paired_2d, out, _config(tmp_path, methods=["random"], labelled=[1], patience=3), resume=True)
    with pytest.raises(MedsslError, match="experiment by labelled with fractions"):
        _run(paired_2d, out, _config(tmp_path, methods=["random"], fractions=[1.0]), resume=True)


def test_target_spacing_reaches_pretraining_and_fine_tuning(paired_2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    config = _config(tmp_path, methods=["autoencoder"], labelled=["all"], seeds=1, target_spacing=[2.0, 2.0])
    _run(paired_2d, out, config)
    assert _read(out / "pretrain" / "autoencoder" / "config.yaml")["target_spacing"] == [2.0, 2.0]
    assert _read(out / "finetune" / "autoencoder" / "nall_seed0" / "config.yaml")["target_spacing"] == [2.0, 2.0]
    assert _read(out / "plan.json")["target_spacing"] == [2.0, 2.0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labelled": [1, 8]}, "labelled 8 is more than the 7 training cases of the split; use at most 7, or all"),
        ({"labelled": [0, 2]}, "labelled must be numbers of cases of at least 1"),
        ({"labelled": [2, 2]}, "labelled counts repeat"),
        ({"finetune": {"patience": 2}}, "set 'patience' at the top level"),
        ({"pretrain": {"target_spacing": [2, 2]}}, "set 'target_spacing' at the top level"),
        ({"patience": 0}, "patience must be at least 1"),
    ],
)
def test_bad_labelled_settings_fail_before_any_work(
    paired_2d: Path, tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(MedsslError, match=message):
        _run(paired_2d, tmp_path / "exp", _config(tmp_path, **{"methods": ["random"], **changes}))
    assert not (tmp_path / "exp").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medssl", "experiment", "label-efficiency", *args],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"},
    )


def test_cli_labelled_option(paired_2d: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, methods=["random"], seeds=1, fractions=[0.5])
    done = _cli("--data", str(paired_2d), "--out", str(tmp_path / "e"), "--config", str(config), "--labelled", "1,all")
    assert done.returncode == 0, done.stderr
    assert _read(tmp_path / "e" / "experiment.yaml")["labelled"] == [1, "all"]
    assert sorted(p.name for p in (tmp_path / "e" / "finetune" / "random").iterdir()) == ["n001_seed0", "nall_seed0"]
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith(("│ random", "| random"))]
    assert [row[3] for row in rows] == ["1", "7"]

    tiny = ("--data", str(paired_2d), "--out", str(tmp_path / "f"), "--config", str(config))
    both = _cli(*tiny, "--labelled", "1", "--fractions", "0.5")
    bad = _cli(*tiny, "--labelled", "1,many")
    assert both.returncode == bad.returncode == 2
    assert "give --labelled (numbers of cases) or --fractions" in both.stderr
    assert "--labelled must be a comma-separated list of numbers of cases or all" in bad.stderr
    assert "Traceback" not in both.stderr + bad.stderr and not (tmp_path / "f").exists()
