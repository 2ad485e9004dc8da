"""The engine's in-memory fit: the run workflow's step (AdamW per group, warm-up + decay, ``after_step``, manual
alternation for several groups), checked against hand-written loops loss for loss and weight for weight; and the
three kinds of batch source."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from medssl.engine.fit_in_memory import FitRecord, fit_in_memory
from medssl.engine.module import lr_factor
from medssl.errors import MedsslError
from medssl.systems import Batch, System

LR, WD, STEPS, RUN, WARMUP = 0.05, 0.01, 6, 10, 2


class OneGroup(System):
    """A least-squares fit of ``w`` to the images; ``after_step`` is logged and nudges ``w`` (like an EMA update, it
    changes what the next step computes)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))
        self.after: list[tuple[int, int]] = []
        self.seen: list[Tensor] = []

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self.seen.append(batch["image"])
        residual = self.w - batch["image"]
        return {"loss": residual.square().sum(), "mean": residual.mean().detach()}

    def after_step(self, step: int, max_steps: int) -> None:
        self.after.append((step, max_steps))
        with torch.no_grad():
            self.w.mul_(0.99)

    def export(self) -> dict[str, nn.Module]:
        return {"system": self}


class TwoGroups(System):
    """Two groups whose losses each depend on both groups' parameters: a gradient leaking from the other group's
    loss, or a group stepped by the other's optimiser, changes the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.b = nn.Parameter(torch.tensor([0.5, 3.0]))
        self.after: list[tuple[int, int]] = []

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"first": [self.a], "second": [self.b]}

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        x = batch["image"]
        return {"first": (self.a * self.b - x).square().sum(), "second": (self.a + 2 * self.b - 3 * x).square().sum()}

    def after_step(self, step: int, max_steps: int) -> None:
        self.after.append((step, max_steps))

    def export(self) -> dict[str, nn.Module]:
        return {"system": self}


def _batch(step: int) -> Tensor:
    return torch.tensor([0.1, 0.2, 0.3]) * (step + 1) - 0.5


def _pair(step: int) -> Tensor:
    return torch.tensor([0.3, -0.4]) + 0.1 * step


def _adamw(params: list[nn.Parameter]) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WD)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, RUN, "cosine", WARMUP))


def test_one_group_equals_a_hand_written_adamw_loop() -> None:
    """Loss for loss and weight for weight: AdamW, the warm-up + cosine schedule over the run's length (longer than
    the steps trained) and ``after_step`` after every step, with its index and the run's length."""
    fitted, reference = OneGroup(), OneGroup()
    record = fit_in_memory(fitted, _batch, steps=STEPS, max_steps=RUN, lr=LR, weight_decay=WD, warmup_steps=WARMUP)
    opt, sched = _adamw([reference.w])
    expected = []
    for step in range(STEPS):
        losses = reference.training_step({"image": _batch(step)}, step)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        sched.step()
        reference.after_step(step, RUN)
        expected.append({k: float(v) for k, v in losses.items()})
    assert record.losses == expected
    assert torch.equal(fitted.w, reference.w)
    assert fitted.after == [(step, RUN) for step in range(STEPS)]
    assert len(record.seconds) == STEPS and all(s > 0 for s in record.seconds)


def test_one_group_loss_decreases() -> None:
    record = fit_in_memory(OneGroup(), torch.zeros(3), steps=20, lr=0.3, weight_decay=0.0)
    losses = record.series()
    assert losses[-1] < 0.1 * losses[0]
    assert record.series("mean") == [step["mean"] for step in record.losses]


def test_two_groups_alternate_each_on_its_own_loss() -> None:
    """Both losses at the weights before the batch; group ``first`` steps on the gradient of its own loss only, then
    ``second`` on its own; each group's schedule; ``after_step`` once per batch. Every batch is trained (the Trainer
    counts two optimiser steps per batch)."""
    fitted, reference = TwoGroups(), TwoGroups()
    record = fit_in_memory(fitted, _pair, steps=STEPS, max_steps=RUN, lr=LR, weight_decay=WD, warmup_steps=WARMUP)
    optimisers = {"first": _adamw([reference.a]), "second": _adamw([reference.b])}
    params = {"first": reference.a, "second": reference.b}
    expected = []
    for step in range(STEPS):
        losses = reference.training_step({"image": _pair(step)}, step)
        grads = {name: torch.autograd.grad(losses[name], params[name], retain_graph=True)[0] for name in params}
        for name, (opt, sched) in optimisers.items():
            params[name].grad = grads[name]
            opt.step()
            sched.step()
            params[name].grad = None
        expected.append({k: float(v) for k, v in losses.items()})
    assert record.losses == expected
    assert torch.equal(fitted.a, reference.a) and torch.equal(fitted.b, reference.b)
    assert fitted.after == [(step, RUN) for step in range(STEPS)]


def test_each_group_moves_only_on_its_own_loss() -> None:
    """Without weight decay, a group whose own loss does not depend on it gets a zero gradient and stays put, however
    much the other group's loss depends on it."""

    class Crossed(TwoGroups):
        def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
            # "first" (group of a) depends only on b, "second" (group of b) only on a
            return {"first": (self.b - batch["image"]).square().sum(), "second": (self.a + 1).square().sum()}

    system = Crossed()
    a, b = system.a.detach().clone(), system.b.detach().clone()
    fit_in_memory(system, _pair, steps=3, lr=0.1, weight_decay=0.0)
    assert torch.equal(system.a, a) and torch.equal(system.b, b)


def test_batch_sources() -> None:
    """One batch for every step, a callable of the step, or an iterable drawn in order (pairs are ``(image,
    target)``); an iterable that runs out is a clear error."""
    asked: list[int] = []

    def source(step: int) -> Batch:
        asked.append(step)
        return {"image": _batch(step)}

    system = OneGroup()
    fit_in_memory(system, source, steps=3)
    assert asked == [0, 1, 2] and all(torch.equal(x, _batch(k)) for k, x in enumerate(system.seen))
    for one in (_batch(5), {"image": _batch(5)}):
        system = OneGroup()
        fit_in_memory(system, one, steps=2)
        assert len(system.seen) == 2 and all(torch.equal(x, _batch(5)) for x in system.seen)
    system = OneGroup()
    fit_in_memory(system, [(_batch(0), _batch(0)), (_batch(1), _batch(1))], steps=2)
    assert all(torch.equal(x, _batch(k)) for k, x in enumerate(system.seen)) and len(system.seen) == 2
    with pytest.raises(MedsslError, match="ran out after 2 of 3 steps"):
        fit_in_memory(OneGroup(), iter([_batch(0), _batch(1)]), steps=3)


def test_on_step_sees_every_step() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    record = fit_in_memory(OneGroup(), _batch, steps=3, on_step=lambda step, losses: calls.append((step, losses)))
    assert calls == list(enumerate(record.losses))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"steps": 3, "max_steps": 2}, "max_steps"),
        ({"steps": 1, "schedule": "linear"}, "schedule"),
        ({"steps": 1, "precision": "64-bogus"}, "cannot set up training"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MedsslError, match=message):
        fit_in_memory(OneGroup(), _batch, **kwargs)  # type: ignore[arg-type]


def test_record_series_names_a_missing_loss() -> None:
    with pytest.raises(KeyError):
        FitRecord(losses=[{"first": 1.0}], seconds=[0.1]).series("loss")
