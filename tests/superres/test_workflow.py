"""``medssl superres train`` / ``apply``: a few steps through the run workflow, the split by volume, resume, the
CLI's errors and ``medssl list super-resolution``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medssl.cli import app
from medssl.engine.resume import ResumableTraining, TrainingInterrupted
from medssl.errors import MedsslError
from medssl.superres import apply, split_volumes, train
from medssl.superres.system import normalise
from medssl.superres.workflow import SuperResConfig, SuperResRecipe, config_from
from tests.superres.conftest import TINY_SR


def test_three_steps_then_apply(volumes: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = train(volumes, run, max_steps=3, **TINY_SR)
    assert trained.steps == 3
    result = json.loads((run / "result.json").read_text())
    assert result["system"] == "seran" and result["global_step"] == 3 and result["parameters"] > 0
    curve = result["validation_curve"]  # the run workflow's, from the monitored val_psnr
    assert curve["monitor"] == "val_psnr" and curve["steps"] == [2] and math.isfinite(result["best_val_psnr"])
    ids = [f"vol{i}" for i in range(5)]
    split = json.loads((run / "split.json").read_text())
    expected = split_volumes(ids, 0.0, 0.2, seed=0)
    assert split["train"] == list(expected.train) and split["val"] == list(expected.val)
    assert not set(split["train"]) & set(split["val"]) and sorted(split["train"] + split["val"]) == ids
    written = apply(run, volumes / "vol0.nii.gz", tmp_path / "out", quiet=True)
    out = nib.load(written[0])
    assert out.shape == (48, 48, 6)  # axis 2 (3 mm) is the slicing axis; the in-plane axes are doubled
    np.testing.assert_allclose(out.header.get_zooms(), (0.5, 0.5, 3.0))


def test_training_and_validation_pairs_come_from_their_own_volumes(volumes: Path) -> None:
    cfg = config_from({"val_fraction": 0.4, "patch_size": 8})
    recipe = SuperResRecipe(volumes, cfg, seed=0, skip_bad_cases=False)
    recipe.read(lambda items, what: items)
    assert recipe.axis == 2
    for side in ("train", "val"):
        ids = getattr(recipe.split, side)
        expected = [np.moveaxis(normalise(nib.load(volumes / f"{i}.nii.gz").get_fdata()), 2, 0) for i in ids]
        got = recipe.samplers[side].volumes
        assert len(got) == len(expected) == len(ids) >= 2
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


class _SignalAt(L.Callback):
    """Sends SIGINT to this process while step ``step + 1`` runs, as a user's Ctrl+C would."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self.sent and trainer.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def interrupt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_SignalAt]]:
    """Append a ``_SignalAt`` to this list to interrupt the next training run."""
    pending: list[_SignalAt] = []
    fit = ResumableTraining.fit

    def fit_with_signal(self: ResumableTraining, trainer: L.Trainer, module: L.LightningModule, **kw: Any) -> None:
        if pending:
            trainer.callbacks.insert(0, pending.pop(0))  # type: ignore[attr-defined]
        fit(self, trainer, module, **kw)

    monkeypatch.setattr(ResumableTraining, "fit", fit_with_signal)
    yield pending
    assert not pending, "a signal was never sent"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_an_interrupted_run_resumes_to_the_same_weights(
    volumes: Path, tmp_path: Path, interrupt: list[_SignalAt]
) -> None:
    options = {**TINY_SR, "max_steps": 5, "val_interval": 2}
    train(volumes, tmp_path / "whole", **options)
    interrupt.append(_SignalAt(3))
    with pytest.raises(TrainingInterrupted):
        train(volumes, tmp_path / "parts", **options)
    resumed = train(volumes, tmp_path / "parts", resume=True, **options)
    assert resumed.steps == 5
    whole, parts = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert whole.keys() == parts.keys()
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=0, atol=0, msg=key)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_cli_trains_resumes_to_more_steps_and_applies(volumes: Path, tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    sets = ["--set", "width=4", "--set", "groups=1", "--set", "blocks=1", "--set", "patch_size=8"]
    common = ["superres", "train", "--data", str(volumes), "--out", run, "--system", "edsr", "--quiet", *sets]
    first = _cli(*common, "--max-steps", "2", "--set", "batch_size=2")
    assert first.exit_code == 0, first.output
    again = _cli(*common, "--max-steps", "3", "--set", "batch_size=2", "--resume")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["global_step"] == 3
    applied = _cli("superres", "apply", "--model", run, "--input", str(volumes), "--out", str(tmp_path / "sr"))
    assert applied.exit_code == 0, applied.output
    assert sorted(p.name for p in (tmp_path / "sr").glob("*.nii.gz")) == [f"vol{i}.nii.gz" for i in range(5)]


def test_user_mistakes_are_one_line_errors(volumes: Path, tmp_path: Path) -> None:
    missing = _cli("superres", "apply", "--model", str(tmp_path / "nope"), "--input", str(volumes), "--out", "x")
    assert isinstance(missing.exception, MedsslError) and "does not exist" in str(missing.exception)
    (tmp_path / "empty").mkdir()
    empty = _cli("superres", "apply", "--model", str(tmp_path / "empty"), "--input", str(volumes), "--out", "x")
    assert isinstance(empty.exception, MedsslError) and "superres train" in str(empty.exception)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i + 20, np.uint8)).save(pictures / f"p{i}.png")
    flat = _cli("superres", "train", "--data", str(pictures), "--out", str(tmp_path / "r"), "--max-steps", "1")
    assert isinstance(flat.exception, MedsslError) and "3D" in str(flat.exception)
    assert not (tmp_path / "r").exists()
    unknown = _cli("superres", "train", "--data", str(volumes), "--out", str(tmp_path / "r"), "--system", "srgan")
    assert isinstance(unknown.exception, MedsslError) and "edsr, rcan, seran" in str(unknown.exception)
    with pytest.raises(MedsslError, match="mode"):
        config_from({"mode": "nearest"})
    assert SuperResConfig().axis == "auto"


def test_list_shows_the_super_resolution_systems() -> None:
    # a fresh process: the registry must import the systems itself (this test module already has)
    command = [sys.executable, "-m", "medssl", "list", "super-resolution"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("seran", "edsr", "rcan"):
        assert f"  {name}" in result.stdout
    assert "medssl superres train --system" in result.stdout
