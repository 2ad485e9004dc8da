"""``benchmarks/labelfree_rule_maps.py``: the lesion rule scored on cached maps under each value of a constant."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from medssl.labelfree import lesion

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ROWS, COLS = np.mgrid[:120, :120]


def _faint_blob_map(folder: Path) -> None:
    """A lesion cut by the left edge and a faint central blob of a few percent (the rule's test picture)."""
    cut = np.hypot(ROWS - 60, COLS + 22) <= 32
    blob = np.hypot(ROWS - 60, COLS - 64) <= 14
    labels = np.full(cut.shape, 2, dtype=np.uint8)
    lightness = np.full(cut.shape, 70.0) + np.random.default_rng(0).normal(0, 3, cut.shape)
    labels[cut], lightness[cut] = 1, lightness[cut] - 30
    labels[blob], lightness[blob] = 3, lightness[blob] - 1
    np.savez_compressed(folder / "border_5_IMD999.npz", labels=labels, lightness=lightness, truth=cut)


def test_score_compares_values_of_a_rule_constant_and_restores_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    maps = importlib.import_module("labelfree_rule_maps")
    _faint_blob_map(tmp_path)
    before = lesion._PRESENT_CONTRAST
    out = maps.score(tmp_path, "_PRESENT_CONTRAST", [0.3, 0.0])  # the last value differs from the module's
    assert before == lesion._PRESENT_CONTRAST
    dice = out["mean_dice"]["border seed 5"]
    assert dice["0.0"] < 0.1 and dice["0.3"] > 0.95  # the blob wins without the contrast gate, the lesion with it
    assert out["moved"] == [{"set": "border", "seed": 5, "case": "IMD999", "dice": [dice["0.3"], dice["0.0"]]}]


def test_bad_input_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    maps = importlib.import_module("labelfree_rule_maps")
    from medssl.errors import MedsslError

    with pytest.raises(MedsslError, match="seed:set"):
        maps.parse_sets(["0clean"])
    with pytest.raises(MedsslError, match="no cached maps"):
        maps.score(tmp_path, "_PRESENT_CONTRAST", [0.3])
    with pytest.raises(MedsslError, match="no constant"):
        maps.score(tmp_path, "_NOT_THERE", [0.3])
    assert maps.parse_sets(["0:clean,border", "4:border"]) == [(0, ["clean", "border"]), (4, ["border"])]
