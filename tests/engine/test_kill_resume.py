"""Kill and resume: a ``medssl pretrain`` / ``medssl finetune`` process killed with SIGKILL mid-epoch, after a periodic
``checkpoints/last.ckpt`` (``checkpoint_interval``) and before any validation, then resumed with ``--resume``, ends
with the same weights, bit for bit, as an uninterrupted run of the same seed (one process: every random stream, the
patch stream, torch's global generator and the systems' own generators, is in the checkpoint).

A SIGKILL cannot be caught, so nothing is saved at the kill: the steps after the last periodic save are trained
again. The killed run is this file run as a script (``_paused_cli``): the real CLI, with a callback that stops
(sleeps) at a given step, so that the test can kill it there, mid-epoch, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from typer.testing import CliRunner

from medssl import api
from medssl.cli import app
from medssl.networks.weights import load_checkpoint_file

PAUSED = "paused"  # written by the killed run once it stands still


def _kill_at(step: int, argv: list[str], run: Path) -> None:
    """Run ``medssl <argv>`` in a subprocess, wait until it stands still with ``step`` steps done, SIGKILL it."""
    marker = run.parent / f"{run.name}.{PAUSED}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, __file__, str(step), str(marker), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.is_file():
            assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the step to kill it at"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _resume(argv: list[str]) -> str:
    result = CliRunner().invoke(app, [*argv, "--resume"])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]  # type: ignore[no-any-return]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_finetuning_killed_mid_epoch_and_resumed_equals_uninterrupted(paired_2d: Path, tmp_path: Path) -> None:
    # one validation, at step 6; periodic saves at steps 2 and 4; killed with 3 steps done (step 3 is lost)
    config = tmp_path / "tiny.yaml"
    tiny = {"channels": [4, 8], "batch_size": 2, "max_val_cases": 2, "overlay_cases": 0}
    config.write_text(json.dumps({**tiny, "val_interval": 6, "checkpoint_interval": 2}))
    run = tmp_path / "killed"
    argv = ["finetune", "--data", str(paired_2d), "--out", str(run), "--config", str(config)]
    argv += ["--max-steps", "6", "--accelerator", "cpu", "--quiet"]
    _kill_at(3, argv, run)
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["global_step"] == 2  # the periodic save
    assert not (run / "checkpoints" / "best.ckpt").exists()  # killed before any validation
    assert f"continuing from {run / 'checkpoints' / 'last.ckpt'}" in _resume(argv)

    whole = api.finetune(paired_2d, tmp_path / "whole", config=config, max_steps=6, accelerator="cpu", quiet=True)
    for name in ("last.ckpt", "best.ckpt"):
        _assert_same_weights(run / "checkpoints" / name, whole.run_dir / "checkpoints" / name)
    resumed = json.loads((run / "result.json").read_text())
    assert resumed["global_step"] == 6 and resumed["best_val_dice"] == whole.best_val_dice


def test_pretraining_killed_mid_epoch_and_resumed_equals_uninterrupted(paired_2d: Path, tmp_path: Path) -> None:
    # SimCLR draws its views from torch's global generator; last.ckpt every 2 steps; killed with 3 steps done
    config = tmp_path / "pre.yaml"
    config.write_text(json.dumps({"channels": [4, 8], "batch_size": 2, "checkpoint_interval": 2, "log_interval": 1}))
    run = tmp_path / "killed"
    argv = ["pretrain", "--data", str(paired_2d), "--out", str(run), "--config", str(config), "--method", "simclr"]
    argv += ["--max-steps", "6", "--accelerator", "cpu", "--quiet"]
    _kill_at(3, argv, run)
    assert load_checkpoint_file(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert f"continuing from {run / 'checkpoints' / 'last.ckpt'}" in _resume(argv)

    whole = api.pretrain(
        paired_2d, tmp_path / "whole", config=config, method="simclr", max_steps=6, accelerator="cpu", quiet=True
    )
    _assert_same_weights(run / "checkpoints" / "last.ckpt", whole.last_checkpoint)
    assert json.loads((run / "result.json").read_text())["global_step"] == whole.global_step == 6


# ---------------------------------------------------------------------------------------------- the killed run


def _paused_cli(step: int, marker: Path, argv: list[str]) -> None:
    """``medssl <argv>``, standing still (marker written) when step ``step + 1`` is about to start."""
    import lightning as L

    from medssl.cli import main
    from medssl.engine.resume import ResumableTraining

    class Pause(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == step:
                marker.write_text(str(step))
                time.sleep(600)  # until the SIGKILL

    fit = ResumableTraining.fit

    def fit_with_pause(self: ResumableTraining, trainer: L.Trainer, module: L.LightningModule, **kw: Any) -> None:
        trainer.callbacks.append(Pause())  # type: ignore[attr-defined]
        fit(self, trainer, module, **kw)

    ResumableTraining.fit = fit_with_pause  # type: ignore[method-assign]
    torch.set_num_threads(1)
    sys.argv = ["medssl", *argv]
    main()


if __name__ == "__main__":
    _paused_cli(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
