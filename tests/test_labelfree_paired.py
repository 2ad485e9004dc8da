"""``benchmarks/labelfree_paired.py``: the paired per-image difference of two label-free methods."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_label_free_pairs_are_by_image_and_sign_a_minus_b(monkeypatch: pytest.MonkeyPatch) -> None:
    """``labelfree_paired.paired``: a - b per common image; an image only one side holds is left out."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    lp = importlib.import_module("labelfree_paired")
    a = {"x": {"lesion_dice": 0.9}, "y": {"lesion_dice": 0.5}, "z": {"lesion_dice": 1.0}}
    b = {"x": {"lesion_dice": 0.8}, "y": {"lesion_dice": 0.7}}
    out = lp.paired(a, b, margin=0.005)
    assert out["images"] == 2 and out["lesion_dice"]["mean_difference"] == pytest.approx(-0.05)
    assert (out["lesion_dice"]["better"], out["lesion_dice"]["worse"]) == (1, 1)
