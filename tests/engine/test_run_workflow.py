"""The one run workflow (``medssl.engine.run``): a segmentation system is taken from the registry by name, and a
system with several optimiser groups trains the requested number of batches through it."""

from __future__ import annotations

import json
from math import nan
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from medssl import api, registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import Batch
from tests.conftest import TINY


class TwoGroupSegmentation(SupervisedSegmentation):
    """Supervised segmentation whose encoder and decoder are two optimiser groups (the shape of a generator and
    a discriminator); its state is the network's, so ``medssl predict`` and the test evaluation read it."""

    calls: ClassVar[list[int]] = []
    built: ClassVar[list[float]] = []
    decoder_weight = 1.0

    @classmethod
    def for_run(
        cls, plan: Plan, cfg: FinetuneConfig, *, seed: int = 0, decoder_weight: float = 1.0
    ) -> SupervisedSegmentation:
        """Args: decoder_weight: factor of the second group's loss (a system option)."""
        system = super().for_run(plan, cfg, seed=seed)
        assert isinstance(system, TwoGroupSegmentation)
        system.decoder_weight = decoder_weight
        cls.built.append(decoder_weight)
        return system

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = {id(p) for p in self.network.encoder.parameters()}  # type: ignore[union-attr]
        params = [p for p in self.network.parameters() if p.requires_grad]
        return {"encoder": [p for p in params if id(p) in encoder], "rest": [p for p in params if id(p) not in encoder]}

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        loss = super().training_step(batch, step)["loss"]
        return {"encoder": loss, "rest": loss * self.decoder_weight}

    def after_step(self, step: int, max_steps: int) -> None:
        TwoGroupSegmentation.calls.append(step)


@pytest.fixture
def two_group(monkeypatch: pytest.MonkeyPatch) -> type[TwoGroupSegmentation]:
    table = {**registry.table("segmentation")}
    registry.insert(table, "segmentation", "two-group", TwoGroupSegmentation, "a toy two-group system")
    monkeypatch.setitem(registry._OBJECTS, "segmentation", table)
    TwoGroupSegmentation.calls, TwoGroupSegmentation.built = [], []
    return TwoGroupSegmentation


def test_a_registered_two_group_system_trains_every_batch_through_finetune(
    paired_2d: Path, tmp_path: Path, two_group: type[TwoGroupSegmentation]
) -> None:
    """No edit in engine, cli or api: the system is chosen by its registered name; Lightning counts each group's
    step, and the run still trains max_steps batches (after_step once per batch), validates and scores."""
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, max_steps=4, quiet=True, system="two-group", **TINY)
    assert two_group.calls == [0, 1, 2, 3]
    saved = json.loads((run / "result.json").read_text())
    assert saved["global_step"] == 4
    assert result.best_val_dice is not None and result.test_summary
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 8  # two optimiser steps per batch
    assert len(state["optimizer_states"]) == 2


def test_system_options_reach_the_registered_system(
    paired_2d: Path, tmp_path: Path, two_group: type[TwoGroupSegmentation]
) -> None:
    options = {"decoder_weight": 0.5}
    api.finetune(
        paired_2d, tmp_path / "run", max_steps=1, quiet=True, system="two-group", system_options=options, **TINY
    )
    assert two_group.built == [0.5, 0.5]  # trained; then rebuilt from config.yaml to score the test cases
    with pytest.raises(MedsslError, match="decoder_wieght"):
        api.finetune(
            paired_2d, tmp_path / "bad", max_steps=1, quiet=True, system="two-group",
            system_options={"decoder_wieght": 0.5}, **TINY,
        )  # fmt: skip
    assert two_group.built == [0.5, 0.5] and not (tmp_path / "bad").exists()


def test_an_unknown_system_is_refused_before_the_run_folder_is_written(paired_2d: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match="unknown segmentation system 'nope'.*supervised"):
        api.finetune(paired_2d, tmp_path / "run", max_steps=1, quiet=True, system="nope", **TINY)
    assert not (tmp_path / "run").exists()


def _not_json(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_a_run_whose_every_validation_is_nan_has_no_best_score(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning ranks NaN as -inf; result.json must say null (valid JSON) and why, not -Infinity."""
    monkeypatch.setattr(SupervisedSegmentation, "validation_step", lambda self, batch: {"dice": torch.tensor(nan)})
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    saved = json.loads((run / "result.json").read_text(), parse_constant=_not_json)
    assert result.best_val_dice is None and saved["best_val_dice"] is None
    assert "NaN at every validation" in saved["best_val_dice_note"]


def test_resume_refuses_options_other_than_the_runs(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(MedsslError, match=r"--resume: .* other options: lr 0\.002 \(run\) vs 0\.01 \(now\)"):
        api.finetune(paired_2d, run, max_steps=2, resume=True, quiet=True, **{**TINY, "lr": 0.01})
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before, "the run is left as it was"
    # a wall-clock limit only says when to stop: it may change
    api.finetune(paired_2d, run, max_steps=3, resume=False, overwrite=True, quiet=True, **TINY)
    api.finetune(paired_2d, run, max_steps=3, resume=True, quiet=True, max_minutes=5.0, **TINY)
