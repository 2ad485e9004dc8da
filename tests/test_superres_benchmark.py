"""``benchmarks/superres.py``'s pure parts: the subject-level validation split, the test slices, the paired
statistics and the issue's targets, on tiny arrays."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def sr(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports ``_common`` as a top-level module
    return importlib.import_module("superres")


def test_subject_split_keeps_both_contrasts_of_a_subject_on_one_side(sr: ModuleType) -> None:
    ids = [f"case{i:02d}_{c}" for i in range(12) for c in ("flair", "t1c")]
    seed = sr.subject_split_seed(ids, 0.25)
    split = sr.split_volumes(ids, 0.0, 0.25, seed=seed)
    subjects = lambda side: {i.rsplit("_", 1)[0] for i in side}  # noqa: E731
    assert split.val and not subjects(split.train) & subjects(split.val)
    # the seed is the smallest that works: every smaller one splits some subject
    for smaller in range(seed):
        other = sr.split_volumes(ids, 0.0, 0.25, seed=smaller)
        assert subjects(other.train) & subjects(other.val)


def test_slice_pairs_keep_foreground_slices_evenly_spaced_and_degrade_by_the_scale(sr: ModuleType) -> None:
    volume = np.zeros((24, 24, 10), np.float32)
    volume[4:20, 4:20, 2:8] = 1.0  # slices 2..7 along the last axis hold the head
    pairs = sr.slice_pairs([("v", volume, 2)], scale=2, max_slices=3)
    assert [p["slice"] for p in pairs] == [2, 4, 7]  # evenly spaced over the kept slices 2..7, both ends
    assert all(p["hr"].shape == (24, 24) and p["lr"].shape == (12, 12) for p in pairs)
    assert all(p["fg"].sum() == 16 * 16 for p in pairs)


def test_paired_differences_are_per_seed_and_broadcast_a_seedless_baseline(sr: ModuleType) -> None:
    volume = [0, 0, 1, 1]
    a = [{"volume": volume, "psnr": [2.0, 3.0, 4.0, 5.0]}, {"volume": volume, "psnr": [1.0, 1.0, 1.0, 1.0]}]
    b = [{"volume": volume, "psnr": [1.0, 1.0, 1.0, 1.0]}]  # bicubic: one entry used against every seed
    out = sr.paired(a, b, "psnr")
    assert out["per_seed"] == [2.5, 0.0]
    assert out["sign_per_seed"] == [1, 0] and not out["sign_holds"]
    assert out["mean"] == pytest.approx(1.25)
    assert out["slices_better"] == 1.0
    low, high = out["ci95"]
    assert low <= out["mean"] <= high


def test_bootstrap_resamples_volumes_so_correlated_slices_widen_the_interval(sr: ModuleType) -> None:
    rng = np.random.default_rng(0)
    offsets = rng.normal(0.0, 1.0, 8)  # each volume shifts all its slices alike
    values = np.concatenate([o + rng.normal(0.0, 0.05, 30) for o in offsets])
    volumes = np.repeat(np.arange(8), 30)
    grouped = sr.bootstrap_ci(values, volumes)
    # the spread of the mean comes from the 8 volume offsets, not from the 240 slices
    expected = 3.92 * values.reshape(8, 30).mean(axis=1).std() / np.sqrt(8)
    assert grouped[0] <= values.mean() <= grouped[1]
    assert 0.6 * expected < grouped[1] - grouped[0] < 1.4 * expected


def _row(psnr: float) -> dict[str, dict[str, float]]:
    return {"psnr": {"mean": psnr}}


def test_targets_are_computed_from_the_table_and_the_seed_signs(sr: ModuleType) -> None:
    sources = ["brats-test", "mni152"]
    table = {
        "x2": {"bicubic": {s: _row(30.0) for s in sources}, "seran": {"brats-test": _row(32.5), "mni152": _row(31.0)}}
    }
    signs = {"brats-test": [1, 1, 1], "mni152": [1, 1, 1]}
    comparison = {
        "x2": {"seran-edsr": {s: {"psnr": {"sign_per_seed": signs[s], "per_seed": [0.1] * 3}} for s in sources}}
    }
    out = sr.targets(table, comparison, sources)
    assert out["seran_ge_bicubic_plus_2db_x2"]["gain_db"] == {"brats-test": 2.5, "mni152": 1.0}
    assert not out["seran_ge_bicubic_plus_2db_x2"]["met"]  # 1 dB on MNI152
    assert out["seran_above_edsr_every_seed"]["met"]
    signs["mni152"][1] = -1  # the same list the comparison holds
    assert not sr.targets(table, comparison, sources)["seran_above_edsr_every_seed"]["met"]
