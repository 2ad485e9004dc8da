"""Fine-tuning to a validation plateau: ``patience`` stops training, ``result.json`` says why and holds the curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medssl import api
from medssl.engine.run import _why_stopped
from medssl.errors import MedsslError
from medssl.networks.weights import load_checkpoint_file
from tests.conftest import TINY


def _result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


def test_patience_stops_at_a_plateau_and_records_the_curve(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # min_delta 1: no gain in Dice can count, so the second validation is the first without one -> stop
    result = api.finetune(
        paired_2d, run, quiet=True, **{**TINY, "max_steps": 200, "val_interval": 2, "patience": 1, "min_delta": 1.0}
    )
    saved = _result(run)
    assert result.stopped == saved["stopped"] == "plateau"
    assert result.steps == saved["global_step"] == 4
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    curve = saved["validation_curve"]
    assert curve["monitor"] == "val_dice" and curve["steps"] == [2, 4] and len(curve["values"]) == 2


def test_without_patience_the_run_trains_every_step(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, quiet=True, **{**TINY, "max_steps": 6, "val_interval": 2, "min_delta": 1.0})
    assert result.stopped == _result(run)["stopped"] == "max_steps" and result.steps == 6
    assert _result(run)["validation_curve"]["steps"] == [2, 4, 6]


def test_a_larger_patience_waits_longer(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = api.finetune(
        paired_2d, run, quiet=True, **{**TINY, "max_steps": 200, "val_interval": 2, "patience": 3, "min_delta": 1.0}
    )
    assert (result.stopped, result.steps) == ("plateau", 8)


def test_resume_may_change_patience_but_not_other_options(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    opts = {**TINY, "max_steps": 200, "val_interval": 2, "patience": 1, "min_delta": 1.0}
    api.finetune(paired_2d, run, quiet=True, **opts)
    resumed = api.finetune(paired_2d, run, quiet=True, resume=True, **{**opts, "patience": 3})
    assert resumed.steps > 4
    with pytest.raises(MedsslError, match="other options"):
        api.finetune(paired_2d, run, quiet=True, resume=True, **{**opts, "val_interval": 4})


@pytest.mark.parametrize("bad", [{"patience": 0}, {"min_delta": -0.1}])
def test_bad_plateau_options_are_refused(paired_2d: Path, tmp_path: Path, bad: dict) -> None:
    with pytest.raises(MedsslError):
        api.finetune(paired_2d, tmp_path / "run", quiet=True, **{**TINY, **bad})


def test_why_stopped_names_the_time_limit() -> None:
    class _Trainer:
        callbacks: tuple[()] = ()

    assert _why_stopped(_Trainer(), 3, 10) == "max_minutes"  # type: ignore[arg-type]
    assert _why_stopped(_Trainer(), 10, 10) == "max_steps"  # type: ignore[arg-type]


def test_patience_counts_from_the_end_of_a_systems_warm_up(paired_2d: Path, tmp_path: Path) -> None:
    """The adversarial system trains on the supervised loss alone for ``warmup_steps``: validations up to then
    (steps 2 and 4 here) use none of the patience; the first one after (6) does, and stops the run."""
    opts = {**TINY, "max_steps": 200, "val_interval": 2, "patience": 1, "min_delta": 1.0, "system": "adversarial"}
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, quiet=True, **opts, discriminator="luc", warmup_steps=4)
    assert (result.stopped, _result(run)["validation_curve"]["steps"]) == ("plateau", [2, 4, 6])
    plain = api.finetune(paired_2d, tmp_path / "plain", quiet=True, **opts, discriminator="luc")  # as before
    assert _result(tmp_path / "plain")["validation_curve"]["steps"] == [2, 4] and plain.stopped == "plateau"


def test_a_warm_up_score_stays_the_one_to_beat() -> None:
    """During the warm-up no wait is counted, but the best score is kept (with min_delta's rule): the first
    validation after the warm-up must beat it to reset the patience."""
    from types import SimpleNamespace

    import torch

    from medssl.engine.plateau import PlateauStop

    stop = PlateauStop(start=4, groups=2, monitor="val_dice", patience=2, min_delta=0.01)
    for step, score in ((4, 0.80), (8, 0.805), (8, 0.50)):  # global_step 8 = batch 4: still warm-up
        trainer = SimpleNamespace(
            sanity_checking=False, global_step=step, callback_metrics={"val_dice": torch.tensor(score)}
        )
        stop.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert float(stop.best_score) == pytest.approx(0.80)  # 0.805 is within min_delta: not a gain
    assert stop.wait_count == 0
