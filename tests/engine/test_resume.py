"""Interrupt and resume: a signal saves ``last.ckpt`` and says how to resume; interrupted + resumed training is
bit-identical to uninterrupted training for the same seed (on one device, where every random stream is restored);
a run shorter than ``val_interval`` still validates; no checkpoint save or read logs ``weights_only`` noise."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medssl import api
from medssl.cli import app
from medssl.data.sampling import CaseDataset
from medssl.engine.resume import ResumableTraining, TrainingInterrupted
from medssl.networks.weights import load_checkpoint_file
from tests.conftest import TINY

# val_interval 3: validations at steps 3, 6 and 9
SETTINGS: dict[str, Any] = {**TINY, "val_interval": 3, "max_steps": 9, "quiet": True}


class _SignalAt(L.Callback):
    """Sends ``signum`` to this process while step ``step + 1`` runs (or, with ``in_validation``, during the
    validation at step ``step``), as a user's Ctrl+C or a scheduler's SIGTERM would."""

    def __init__(self, step: int, signum: int = signal.SIGINT, *, in_validation: bool = False) -> None:
        self.step, self.signum, self.in_validation, self.sent = step, signum, in_validation, False

    def _send(self, trainer: L.Trainer) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.in_validation:
            self._send(trainer)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self.in_validation:
            self._send(trainer)


@pytest.fixture
def interrupt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_SignalAt]]:
    """Append a ``_SignalAt`` to this list to signal the next training run (one per run, in order)."""
    pending: list[_SignalAt] = []
    fit = ResumableTraining.fit

    def fit_with_signal(self: ResumableTraining, trainer: L.Trainer, module: L.LightningModule, **kw: Any) -> None:
        if pending:
            trainer.callbacks.insert(0, pending.pop(0))  # type: ignore[attr-defined]
        fit(self, trainer, module, **kw)

    monkeypatch.setattr(ResumableTraining, "fit", fit_with_signal)
    yield pending
    assert not pending, "a signal was never sent"


def _val_dice(run: Path) -> dict[int, float]:
    """``{logged step: val_dice}`` over the run's logs and those of its resumptions."""
    out: dict[int, float] = {}
    for log in sorted(run.glob("logs/**/metrics.csv")):
        with log.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("val_dice"):
                    out[int(row["step"])] = float(row["val_dice"])
    return out


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint_file(a)["state_dict"], load_checkpoint_file(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_interrupted_and_resumed_finetuning_equals_uninterrupted(
    paired_2d: Path, tmp_path: Path, interrupt: list[_SignalAt]
) -> None:
    whole = api.finetune(paired_2d, tmp_path / "whole", **SETTINGS)
    run = tmp_path / "cut"
    # 1. SIGINT during step 3, the last before a validation: that validation and its checkpoints come first
    interrupt.append(_SignalAt(2))
    with pytest.raises(TrainingInterrupted) as stopped:
        api.finetune(paired_2d, run, **SETTINGS)
    assert stopped.value.exit_code == 130 and stopped.value.step == 3
    assert set(_val_dice(run)) == {2}  # the validation after step 3 (logged at step index 2)
    # 2. resumed, then SIGINT during step 5: stops after it, between validations (a mid-epoch checkpoint)
    interrupt.append(_SignalAt(4))
    with pytest.raises(TrainingInterrupted) as stopped:
        api.finetune(paired_2d, run, resume=True, **SETTINGS)
    assert stopped.value.step == 5
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["global_step"] == 5
    # 3. resumed, then SIGINT during the validation at step 6: it ends, with its checkpoints, before the stop
    interrupt.append(_SignalAt(6, in_validation=True))
    with pytest.raises(TrainingInterrupted) as stopped:
        api.finetune(paired_2d, run, resume=True, **SETTINGS)
    assert stopped.value.step == 6
    # 4. resumed to the end
    resumed = api.finetune(paired_2d, run, resume=True, **SETTINGS)

    # the same validations at the same steps, the same best checkpoint, the same test scores: bit-identical
    assert _val_dice(run) == _val_dice(tmp_path / "whole") and len(_val_dice(run)) == 3
    assert resumed.best_val_dice == whole.best_val_dice
    assert resumed.test_summary == whole.test_summary
    for name in ("last.ckpt", "best.ckpt"):
        assert _same_weights(run / "checkpoints" / name, tmp_path / "whole" / "checkpoints" / name), name
    best = load_checkpoint_file(run / "checkpoints" / "best.ckpt")["global_step"]
    assert best == load_checkpoint_file(tmp_path / "whole" / "checkpoints" / "best.ckpt")["global_step"]


def test_sigterm_before_the_first_validation_saves_and_says_how_to_resume(
    paired_2d: Path, tmp_path: Path, interrupt: list[_SignalAt], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    argv = ["medssl", "finetune", "--data", str(paired_2d), "--out", str(run), "--max-steps", "8", "--quiet"]
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "val_interval": 4}))
    argv += ["--config", str(config), "--overwrite"]
    monkeypatch.setattr(sys, "argv", argv)
    interrupt.append(_SignalAt(1, signal.SIGTERM))
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 143, result.output
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # before step 4's validation
    expected = " ".join(a for a in argv if a != "--overwrite") + " --resume"
    assert expected in " ".join(result.output.split()), result.output

    # the resumed run says where it continues from, and ends with its validations
    api.finetune(paired_2d, run, max_steps=8, config=config, resume=True, quiet=True)
    assert set(_val_dice(run)) == {3, 7}


def test_resume_without_checkpoint_says_so(paired_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.unlink()
    capsys.readouterr()
    api.finetune(paired_2d, run, max_steps=2, resume=True, quiet=True, **TINY)
    assert "starts at step 0" in " ".join(capsys.readouterr().err.split())


def test_run_shorter_than_val_interval_validates_at_its_last_step(paired_2d: Path, tmp_path: Path) -> None:
    result = api.finetune(paired_2d, tmp_path / "short", max_steps=3, quiet=True, **{**TINY, "val_interval": 200})
    assert result.best_val_dice is not None and (tmp_path / "short" / "checkpoints" / "best.ckpt").is_file()
    assert set(_val_dice(tmp_path / "short")) == {2}  # logged at step index 2: after the 3rd step
    # a run that validates anyway is unchanged: every val_interval steps, not again at its last step
    api.finetune(paired_2d, tmp_path / "long", max_steps=5, quiet=True, **TINY)
    assert set(_val_dice(tmp_path / "long")) == {1, 3}


def test_no_best_checkpoint_is_said_in_words(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # no validation can run: an empty validation loader
    monkeypatch.setattr(CaseDataset, "__len__", lambda self: 0)
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    assert result.best_val_dice is None
    note = json.loads((run / "result.json").read_text())["best_val_dice_note"]
    assert "no best.ckpt" in note and "last.ckpt" in note
    assert "no best.ckpt" in " ".join(capsys.readouterr().err.split())


def test_checkpoints_are_saved_and_read_without_weights_only_noise(paired_2d: Path, tmp_path: Path) -> None:
    # Lightning logs "`weights_only` was not set" (an INFO record, not a warning) on a save that does not say
    # whether to save only the weights; listen on its logger at INFO whatever level the CLI gives Lightning.
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            api.finetune(paired_2d, tmp_path / "run", max_steps=2, quiet=True, **TINY)
            api.finetune(paired_2d, tmp_path / "run", max_steps=4, resume=True, quiet=True, **TINY)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    said = records + [str(w.message) for w in caught]
    assert not [m for m in said if "weights_only" in m], said


@pytest.fixture
def unlabelled_2d(tmp_path: Path) -> Path:
    root = tmp_path / "unlabelled"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        Image.fromarray(np.clip(80 + 40 * rng.standard_normal((32, 32)), 0, 255).astype(np.uint8)).save(
            root / f"img{i}.png"
        )
    return root


def test_interrupted_and_resumed_pretraining_equals_uninterrupted(
    unlabelled_2d: Path, tmp_path: Path, interrupt: list[_SignalAt]
) -> None:
    # checkpoint_interval 3: an "epoch" of 3 steps; SimCLR draws its views from torch's global generator
    config = tmp_path / "pre.yaml"
    config.write_text(json.dumps({"checkpoint_interval": 3, "log_interval": 1}))
    fast: dict[str, Any] = {"method": "simclr", "max_steps": 6, "batch_size": 2, "channels": [4, 8], "quiet": True}
    whole = api.pretrain(unlabelled_2d, tmp_path / "whole", config=config, **fast)
    run = tmp_path / "cut"
    interrupt.append(_SignalAt(1))  # stops after step 2: mid-epoch
    with pytest.raises(TrainingInterrupted):
        api.pretrain(unlabelled_2d, run, config=config, **fast)
    interrupt.append(_SignalAt(2))  # stops after step 3: at an epoch's end
    with pytest.raises(TrainingInterrupted):
        api.pretrain(unlabelled_2d, run, config=config, resume=True, **fast)
    resumed = api.pretrain(unlabelled_2d, run, config=config, resume=True, **fast)
    assert resumed.global_step == whole.global_step == 6
    assert resumed.final_loss == whole.final_loss
    assert _same_weights(run / "checkpoints" / "last.ckpt", tmp_path / "whole" / "checkpoints" / "last.ckpt")
