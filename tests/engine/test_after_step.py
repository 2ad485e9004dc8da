"""The engine calls the method's ``after_step`` once after every optimiser step: BYOL's target network follows
the online network by the EMA rule ``target = m_k * target + (1 - m_k) * online`` with
``m_k = 1 - (1 - base) * (cos(pi * k / max_steps) + 1) / 2`` at step k (0-based)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medssl import api
from medssl.engine.module import SystemModule
from medssl.networks import UNetEncoder, load_encoder
from medssl.pretrain import create
from medssl.pretrain.byol import MomentumMethod

STEPS = 3
BASE = 0.9  # far from 1, so that every EMA update moves the target visibly


def _online(method: Any) -> dict[str, torch.Tensor]:
    return {
        **{f"encoder.{k}": v.detach().clone() for k, v in method.encoder.named_parameters()},
        **{f"projector.{k}": v.detach().clone() for k, v in method.projector.named_parameters()},
    }


def _target(method: Any) -> dict[str, torch.Tensor]:
    return {
        **{f"encoder.{k}": v.detach().clone() for k, v in method.target_encoder.named_parameters()},
        **{f"projector.{k}": v.detach().clone() for k, v in method.target_projector.named_parameters()},
    }


def _momentum(step: int) -> float:
    return 1 - (1 - BASE) * (math.cos(math.pi * step / STEPS) + 1) / 2


def test_byol_target_follows_the_ema_rule_through_lightning() -> None:
    method = create("byol", spatial_dims=2, in_channels=1, channels=[4, 8], hidden_dim=16, momentum=BASE)
    start = _target(method)
    calls: list[tuple[int, int, dict[str, torch.Tensor]]] = []
    real_after_step = method.after_step

    def spy(step: int, max_steps: int) -> None:
        calls.append((step, max_steps, _online(method)))  # the online weights this update averages in
        real_after_step(step, max_steps)

    method.after_step = spy  # type: ignore[method-assign]
    module = SystemModule(method, lr=0.05, max_steps=STEPS)
    trainer = L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = DataLoader(torch.randn(2 * STEPS, 1, 32, 32), batch_size=2)
    trainer.fit(module, train_dataloaders=batches)

    assert [(s, m) for s, m, _ in calls] == [(k, STEPS) for k in range(STEPS)]
    # each call follows a new optimiser step, and the last one the final step
    for (_, _, before), (_, _, after) in itertools.pairwise(calls):
        assert any(not torch.equal(before[k], after[k]) for k in before)
    final_online = _online(method)
    assert all(torch.equal(calls[-1][2][k], final_online[k]) for k in final_online)
    want = dict(start)
    for step, _, online in calls:
        m = _momentum(step)
        want = {k: m * want[k] + (1 - m) * online[k] for k in want}
    got = _target(method)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert max((got[k] - start[k]).abs().max().item() for k in got) > 1e-3  # the target moved
    assert method.momentum == pytest.approx(_momentum(STEPS - 1))


def test_pretrain_command_calls_after_step_after_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "unlabelled"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(data / f"img{i}.png")
    calls: list[tuple[int, int]] = []
    online_at_last_call: dict[str, torch.Tensor] = {}
    real_after_step = MomentumMethod.after_step

    def spy(self: MomentumMethod, step: int, max_steps: int) -> None:
        calls.append((step, max_steps))
        online_at_last_call.clear()
        online_at_last_call.update({k: v.detach().clone() for k, v in self.encoder.state_dict().items()})
        real_after_step(self, step, max_steps)

    monkeypatch.setattr(MomentumMethod, "after_step", spy)
    run = tmp_path / "run"
    opts: dict[str, Any] = {"batch_size": 2, "channels": [4, 8], "quiet": True, "accelerator": "cpu"}
    api.pretrain(data, run, method="byol", max_steps=STEPS, hidden_dim=16, **opts)
    assert calls == [(k, STEPS) for k in range(STEPS)]
    # the exported encoder is the online one after the last step, the one the last after_step saw
    exported = UNetEncoder(2, 1, (4, 8))
    load_encoder(exported, run / "encoder.pt")
    for k, v in exported.state_dict().items():
        assert torch.equal(v, online_at_last_call[k]), k
