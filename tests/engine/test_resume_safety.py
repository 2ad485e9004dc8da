"""``--resume`` reads ``checkpoints/last.ckpt`` with weights-only loading: a checkpoint holding a pickled object
(whose unpickling would run code) is refused with one clear ``MedsslError``, and the code never runs.

A run folder may come from someone else (a shared disk, a download); loading its checkpoint must not execute
whatever was pickled into it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medssl import api
from medssl.cli import main
from medssl.errors import MedsslError
from medssl.networks.weights import load_checkpoint_file
from medssl.segment.predict import load_trained_model
from tests.conftest import TINY


def _run_code(marker: str) -> None:
    """What the crafted checkpoint runs when unpickled: writes ``marker``."""
    Path(marker).write_text("the checkpoint ran code")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _run_code, (str(self.marker),)


def _plant(ckpt: Path, marker: Path) -> None:
    """Rewrite ``ckpt`` as the same checkpoint plus an object whose unpickling writes ``marker``; check that a
    plain ``torch.load`` would indeed run it (so that the tests below can fail)."""
    state = load_checkpoint_file(ckpt)
    state["payload"] = _Payload(marker)
    torch.save(state, ckpt)
    probe = ckpt.with_name("probe.ckpt")
    shutil.copy(ckpt, probe)
    torch.load(probe, weights_only=False)
    assert marker.is_file(), "the crafted checkpoint does not run code: the test would prove nothing"
    marker.unlink()
    probe.unlink()


def _assert_refused(exc: pytest.ExceptionInfo[MedsslError], ckpt: Path, marker: Path) -> None:
    text = str(exc.value)
    assert str(ckpt) in text and "refusing to load" in text and "pickled" in text, text
    assert "\n" not in text
    assert not marker.exists(), "the checkpoint's code ran"


def test_finetune_resume_refuses_a_checkpoint_with_pickled_code(paired_2d: Path, tmp_path: Path) -> None:
    run, marker = tmp_path / "run", tmp_path / "ran.txt"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, accelerator="cpu", **TINY)
    last = run / "checkpoints" / "last.ckpt"
    _plant(last, marker)
    with pytest.raises(MedsslError) as exc:
        api.finetune(paired_2d, run, max_steps=4, resume=True, quiet=True, accelerator="cpu", **TINY)
    _assert_refused(exc, last, marker)
    assert last.is_file() and (run / "plan.json").is_file()  # the refused run folder is left as it was


def test_pretrain_resume_refuses_a_checkpoint_with_pickled_code(tmp_path: Path) -> None:
    data, run, marker = tmp_path / "unlabelled", tmp_path / "pre", tmp_path / "ran.txt"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(data / f"img{i}.png")
    opts: dict[str, Any] = {"batch_size": 2, "channels": [4, 8], "quiet": True, "accelerator": "cpu"}
    api.pretrain(data, run, method="simclr", max_steps=2, **opts)
    last = run / "checkpoints" / "last.ckpt"
    _plant(last, marker)
    with pytest.raises(MedsslError) as exc:
        api.pretrain(data, run, method="simclr", max_steps=3, resume=True, **opts)
    _assert_refused(exc, last, marker)


def test_cli_resume_and_predict_refuse_it_in_one_line(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run, marker = tmp_path / "run", tmp_path / "ran.txt"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, accelerator="cpu", **TINY)
    for name in ("last.ckpt", "best.ckpt"):
        _plant(run / "checkpoints" / name, marker)
    capsys.readouterr()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    argv = ["medssl", "finetune", "--data", str(paired_2d), "--out", str(run), "--resume", "--max-steps", "4"]
    argv += ["--config", str(config), "--accelerator", "cpu", "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "refusing to load" in err and "last.ckpt" in err and "Traceback" not in err, err
    assert not marker.exists(), "the checkpoint's code ran"
    # predicting with the run reads best.ckpt the same way
    with pytest.raises(MedsslError, match="refusing to load") as exc:
        load_trained_model(run)
    _assert_refused(exc, run / "checkpoints" / "best.ckpt", marker)
