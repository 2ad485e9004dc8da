"""``benchmarks/unchanged.py --compare``: two result files agree exactly, or the command fails naming what differs."""

from __future__ import annotations

import copy
import importlib
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def unchanged(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports ``_common`` as a top-level module
    return importlib.import_module("unchanged")


def _result() -> dict[str, Any]:
    """A tiny result file as ``unchanged.py`` writes it."""
    return {
        "medssl": {"file": "/old/src/medssl/__init__.py", "commit": "abc"},
        "environment": {"cpu_model": "cpu", "cpu_capability": "AVX2", "torch": "2"},
        "settings": {"threads": 1, "s3": {"images": 40}, "jsrt": {"max_steps": 300}},
        "results": {
            "s3": {"cases": {"IMD002": {"dice": 0.9429718319606893, "steps": 5, "map_sha256": "9fd8"}}},
            "jsrt": {"best_val_dice": 0.5, "curves": {"train_loss": [[1, 1.25], [3, 1.125]]}, "hd95": math.nan},
        },
        "wall_seconds": {"s3": 80.0, "jsrt": 600.0},
    }


def _compare(unchanged: ModuleType, tmp_path: Path, old: dict[str, Any], new: dict[str, Any], *extra: str) -> int:
    paths = []
    for name, data in (("old", old), ("new", new)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))  # NaN written as JSON's NaN, as the script writes it
        paths.append(str(path))
    code: int = unchanged.main(["--compare", *paths, *extra])
    return code


def test_identical_results_pass_whatever_the_times(
    unchanged: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _result()
    new["wall_seconds"] = {"s3": 95.5, "jsrt": 700.0}  # times are never compared
    new["medssl"] = {"file": "/new/src/medssl/__init__.py", "commit": "def"}
    assert _compare(unchanged, tmp_path, _result(), new) == 0
    out = capsys.readouterr().out
    assert "s3: identical (3 values)" in out
    assert "jsrt: identical (6 values)" in out  # NaN equals NaN
    assert "/old/src/medssl" in out and "/new/src/medssl" in out


def test_one_differing_number_fails_naming_it_and_the_difference(
    unchanged: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _result()
    new["results"]["jsrt"]["curves"]["train_loss"][1][1] = 1.125 + 2**-20
    assert _compare(unchanged, tmp_path, _result(), new) == 1
    out = capsys.readouterr().out
    assert "s3: identical" in out
    assert "jsrt: DIFFERS in 1 of 6 values, max abs difference 9.54e-07" in out
    assert "curves.train_loss[1][1]: OLD 1.125 NEW 1.12500095" in out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r["results"]["s3"]["cases"]["IMD002"].update(map_sha256="9fd9"), "map_sha256: OLD '9fd8'"),
        (lambda r: r["results"]["s3"]["cases"]["IMD002"].update(steps=6), "steps: OLD 5 NEW 6"),
        (lambda r: r["results"]["jsrt"].update(hd95=1.0), "hd95: OLD nan NEW 1.0"),
        (lambda r: r["results"]["jsrt"].update(test_dice={"heart": 0.9}), "test_dice.heart: only in NEW"),
        (lambda r: r["results"]["jsrt"]["curves"]["train_loss"].pop(), "train_loss[1][0]: only in OLD"),
        (lambda r: r["results"]["s3"]["cases"]["IMD002"].update(steps=True), "steps: OLD 5 NEW True"),
        (lambda r: r["results"].pop("jsrt"), "jsrt: MISSING in NEW"),
        (lambda r: r["settings"].update(threads=2), "settings differ: threads: OLD 1 NEW 2"),
    ],
)
def test_every_kind_of_difference_fails(
    unchanged: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, named: str
) -> None:
    new = copy.deepcopy(_result())
    change(new)
    assert _compare(unchanged, tmp_path, _result(), new) == 1
    assert named in capsys.readouterr().out


def test_only_compares_the_chosen_parts(
    unchanged: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _result()
    new["results"]["jsrt"]["best_val_dice"] = 0.6
    del new["settings"]["jsrt"]
    assert _compare(unchanged, tmp_path, _result(), new, "--only", "s3") == 0
    assert "jsrt:" not in capsys.readouterr().out  # neither "jsrt: identical" nor "jsrt: DIFFERS"
    assert _compare(unchanged, tmp_path, _result(), new, "--only", "jsrt") == 1


def test_curves_read_both_logged_series_by_step(unchanged: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.csv").write_text(
        "elapsed_s,epoch,step,train_loss,val_dice\n,0,1,1.5,\n11.4,0,1,,0.25\n,1,3,1.25,\n"
    )
    assert unchanged.curves(tmp_path) == {"train_loss": [[1, 1.5], [3, 1.25]], "val_dice": [[1, 0.25]]}
