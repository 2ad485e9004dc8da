"""``predict --model`` says what a wrong model folder is (issue 14): missing, a pretraining run, an experiment."""

from __future__ import annotations

from pathlib import Path

import pytest

from medssl import api
from medssl.errors import MedsslError
from medssl.segment.predict import load_trained_model


def test_missing_model_folder_is_said_to_be_missing(tmp_path: Path, paired_2d: Path) -> None:
    with pytest.raises(MedsslError, match="does not exist"):
        api.predict(tmp_path / "no-such-run", paired_2d / "images", tmp_path / "pred", quiet=True)
    assert not (tmp_path / "pred").exists()


def test_pretraining_run_is_named_as_such(tmp_path: Path, paired_2d: Path) -> None:
    run = tmp_path / "pre"
    api.pretrain(
        paired_2d / "images", run, method="simclr", max_steps=2, batch_size=2, channels=[4, 8], quiet=True,
        accelerator="cpu",
    )  # fmt: skip
    with pytest.raises(MedsslError, match=r"is a pretraining run \(medssl pretrain\).*finetune --init"):
        api.predict(run, paired_2d / "images", tmp_path / "pred", quiet=True)
    (run / "encoder.pt").unlink()  # without its export, the plan without classes still says what it is
    with pytest.raises(MedsslError, match="is a pretraining run"):
        load_trained_model(run)


def test_experiment_folder_points_to_its_runs(tmp_path: Path) -> None:
    (tmp_path / "experiment.yaml").write_text("methods: [random]\n")
    with pytest.raises(MedsslError, match="label-efficiency experiment"):
        load_trained_model(tmp_path)
