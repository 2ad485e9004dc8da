"""The pure parts of ``benchmarks/raters.py``: the targets over seeds and the grid run in parts (``--previous``)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from medssl.metrics.calibration import calibration_bins

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SETTINGS = {
    "dataset": "drive",
    "patch_size": [128, 128],
    "channels": [8, 16],
    "batch_size": 4,
    "split": {"train_labelled": ["a"], "val": ["b"], "test": ["c"]},
    "raters": ["1st", "2nd"],
    "max_steps": 100,
    "val_interval": 10,
    "patience": 5,
}


@pytest.fixture
def rb(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("raters")


def condition(dice_a: float, dice_b: float, ece: float) -> dict[str, object]:
    return {"dice": {"1st": dice_a, "2nd": dice_b, "mean": (dice_a + dice_b) / 2}, "soft_dice": 0.5, "ece": ece}


def test_targets_average_the_seeds_before_comparing(rb: ModuleType) -> None:
    mrnet = {
        0: {"uniform": condition(0.8, 0.8, 0.02), "1st": condition(0.82, 0.75, 0), "2nd": condition(0.7, 0.8, 0)},
        1: {"uniform": condition(0.8, 0.8, 0.04), "1st": condition(0.76, 0.74, 0), "2nd": condition(0.7, 0.76, 0)},
    }
    mean = {0: {"any": condition(0.8, 0.8, 0.05)}, 1: {"any": condition(0.8, 0.8, 0.02)}}
    out = rb.summarize({"mrnet": mrnet, "rater-mean": mean}, ["1st", "2nd"], agreement=0.785)
    targets = out["targets"]
    assert targets["onehot_dice_vs_own_rater"] == pytest.approx({"1st": 0.79, "2nd": 0.78})
    assert targets["onehot_at_least_agreement"] is False  # 2nd: 0.78 < 0.785 over the two seeds
    assert targets["onehot_prefers_own_rater"] is True
    assert targets["uniform_ece_below_rater_mean"] is True  # 0.03 against 0.035 (seed 1 alone: above)
    assert out["methods"]["mrnet"]["uniform"]["ece_per_seed"] == [0.02, 0.04]
    assert out["methods"]["rater-mean"]["any"]["dice_per_seed"]["1st"] == [0.8, 0.8]


def test_the_targets_fail_when_one_hot_prefers_the_other_rater(rb: ModuleType) -> None:
    by_seed = {0: {"uniform": condition(0.8, 0.8, 0.02), "1st": condition(0.7, 0.8, 0), "2nd": condition(0.7, 0.8, 0)}}
    targets = rb.summarize({"mrnet": by_seed}, ["1st", "2nd"], agreement=0.6)["targets"]
    assert targets["onehot_prefers_own_rater"] is False and targets["onehot_at_least_agreement"] is True
    assert targets["onehot_contrast"]["mrnet"] == pytest.approx({"1st": 0.0, "2nd": 0.0})
    assert targets["onehot_moves_towards_own_rater"] is False


def test_the_contrast_is_own_one_hot_against_the_other_raters_one_hot(rb: ModuleType) -> None:
    """Rater 2nd is easier to match with either vector (the first target fails), but each vector moves the output
    towards its rater; the one-rater U-Net is the reference."""
    onehot = {"1st": condition(0.78, 0.80, 0), "2nd": condition(0.74, 0.83, 0)}
    by_seed = {0: {"uniform": condition(0.8, 0.8, 0.02), **onehot}}
    first = {0: {"any": condition(0.79, 0.81, 0.03)}}
    targets = rb.summarize({"mrnet": by_seed, "one-rater": first}, ["1st", "2nd"], agreement=0.6)["targets"]
    assert targets["onehot_prefers_own_rater"] is False
    assert targets["onehot_contrast"]["mrnet"] == pytest.approx({"1st": 0.04, "2nd": 0.03})
    assert targets["onehot_moves_towards_own_rater"] is True
    assert targets["one_rater_unet_prefers_its_rater"] is False


def test_bins_come_back_from_their_json_record(rb: ModuleType) -> None:
    rng = np.random.default_rng(0)
    prob, truth = rng.random((32, 32)), rng.random((32, 32)) ** 3
    truth[prob > 0.9] = 1.0  # an uneven bin or two
    bins = calibration_bins(prob, truth, n_bins=10)
    record = {"count": bins.counts.tolist(), **{k: rb._finite(getattr(bins, k)) for k in ("confidence", "frequency")}}
    back = rb._bins(json.loads(json.dumps(record)))
    assert back.ece() == pytest.approx(bins.ece())
    np.testing.assert_allclose(back.confidence_sum, bins.confidence_sum)
    np.testing.assert_allclose(back.truth_sum, bins.truth_sum)
    np.testing.assert_array_equal(back.edges, bins.edges)


def earlier_file(tmp_path: Path, **changes: object) -> Path:
    record = {"count": [1, 0], "confidence": [0.2, None], "frequency": [0.0, None]}
    runs = {"mrnet": {"0": {"uniform": {**condition(0.8, 0.8, 0.2), "bins": record}}}}
    training = {"mrnet": {"0": {"steps": 400, "stopped": "plateau"}}}
    payload = {
        "benchmark": "raters_drive",
        "commit": "abc",
        "settings": {**SETTINGS, **changes},
        "results": {"runs": runs, "training": training},
    }
    path = tmp_path / "raters_drive.json"
    path.write_text(json.dumps(payload))
    return path


def test_previous_runs_join_with_their_seeds_and_bins(rb: ModuleType, tmp_path: Path) -> None:
    scores, training, source = rb.previous_runs(earlier_file(tmp_path), SETTINGS)
    assert list(scores["mrnet"]) == [0] and training["mrnet"][0]["steps"] == 400
    assert scores["mrnet"][0]["uniform"]["_bins"].ece() == pytest.approx(0.2)
    assert source == {"file": "raters_drive.json", "commit": "abc", "runs": ["mrnet/seed0"]}


@pytest.mark.parametrize("changes", [{"channels": [16, 32]}, {"split": {"test": ["d"]}}, {"patience": 3}])
def test_previous_runs_of_another_configuration_are_refused(
    rb: ModuleType, tmp_path: Path, changes: dict[str, object]
) -> None:
    with pytest.raises(SystemExit, match=next(iter(changes))):
        rb.previous_runs(earlier_file(tmp_path, **changes), SETTINGS)
    with pytest.raises(SystemExit, match="not a result of this benchmark"):
        rb.previous_runs(earlier_file(tmp_path), {**SETTINGS, "dataset": "stare"})
