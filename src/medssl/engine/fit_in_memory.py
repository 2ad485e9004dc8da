"""Training a system on batches held in memory, step by step as a run would train it, recording every step.

Benchmarks and diagnostics time or trace the first steps of a system on fixed tensors. ``fit_in_memory`` gives them
what ``medssl pretrain`` and ``medssl finetune`` do per step (``SystemModule``: AdamW and a warm-up + decay schedule
per optimiser group, manual alternation for several groups, ``after_step``, precision, device) without a run folder,
a dataset or checkpoints. It is a thin Lightning run (no logger, checkpoints, progress bar or validation) rather
than a plain loop, so that what it times is the engine's own step: Lightning adds about 1.3 ms a step on a CPU
(0.34 ms for a plain AdamW loop against 1.59 ms on a 64-parameter toy), under 0.3 % of the 0.5-5 s steps the
benchmarks time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import lightning as L
import torch
from torch import Tensor, nn

from medssl.engine.module import SystemModule
from medssl.engine.trainer_setup import make_trainer
from medssl.errors import MedsslError
from medssl.systems import Batch, System

__all__ = ["BatchSource", "FitRecord", "fit_in_memory"]

BatchSource: TypeAlias = Batch | Tensor | Callable[[int], Any] | Iterable[Any]
"""Where ``fit_in_memory`` takes its batches: one batch (a ``Batch`` dict or an image tensor) used at every step;
a callable ``step -> batch``; or an iterable of batches, drawn in order (an ``(image, target)`` pair is a batch
too, see ``medssl.systems.as_batch``)."""


@dataclass
class FitRecord:
    """What ``fit_in_memory`` recorded, one entry per step (batch) trained.

    Attributes:
        losses: the float value of every loss ``training_step`` returned (``"loss"``, or one per optimiser group,
            and the logged-only entries).
        seconds: wall-clock seconds of the step, from the batch on the device to the end of ``after_step`` (every
            group stepped); on a GPU the device is synchronised at both ends.
    """

    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def series(self, name: str = "loss") -> list[float]:
        """The values of loss ``name`` at every step.

        Raises:
            KeyError: a step has no loss ``name``.
        """
        return [step[name] for step in self.losses]


class _Batches:
    """Exactly ``steps`` batches from ``source`` (see ``BatchSource``), as an iterable Lightning can train on."""

    def __init__(self, source: BatchSource, steps: int) -> None:
        self.source, self.steps = source, steps

    def __iter__(self) -> Iterator[Any]:
        source = self.source
        if isinstance(source, Tensor | dict):
            for _ in range(self.steps):
                yield source
        elif callable(source):
            for step in range(self.steps):
                yield source(step)
        else:
            items = iter(source)
            for step in range(self.steps):
                try:
                    yield next(items)
                except StopIteration:
                    raise MedsslError(f"the batches ran out after {step} of {self.steps} steps") from None

    def __len__(self) -> int:
        return self.steps


class _RecordingModule(SystemModule):
    """``SystemModule`` that records each step's losses (as the system returns them) and wall-clock time."""

    def __init__(self, system: System, on_step: Callable[[int, dict[str, float]], None] | None, **kwargs: Any) -> None:
        super().__init__(system, **kwargs)
        self.record = FitRecord()
        self.on_step = on_step
        self._losses: dict[str, Tensor] = {}
        self._started = 0.0

    def capture(self, module: nn.Module, args: Any, output: dict[str, Tensor]) -> None:
        """Forward hook on the system: keep the losses of the step (``SystemModule`` calls it once per batch)."""
        self._losses = output

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._sync()
        self._started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)  # after_step, with one optimiser group
        self._sync()
        self.record.seconds.append(time.perf_counter() - self._started)
        losses = {name: float(value.detach()) for name, value in self._losses.items()}
        self.record.losses.append(losses)
        if self.on_step is not None:
            self.on_step(len(self.record.losses) - 1, losses)


def fit_in_memory(
    system: System,
    batches: BatchSource,
    *,
    steps: int,
    max_steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    precision: str = "32-true",
    accelerator: str = "cpu",
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FitRecord:
    """Train ``system`` on ``steps`` batches from memory with the run workflow's optimisers, schedules and hooks.

    Each step is ``SystemModule``'s: ``training_step`` once per batch; with one optimiser group AdamW steps on
    ``"loss"``; with several, each group's AdamW steps on its own loss in turn; then every group's schedule steps and
    ``after_step(step, max_steps)`` runs. Random numbers come from torch's global generator, as in a run: seed it
    before the call for repeatable losses. The system is trained in place (and left on the CPU).

    Args:
        system: the system to train.
        batches: one batch for every step, a callable ``step -> batch`` or an iterable of batches (``BatchSource``).
        steps: batches to train.
        max_steps: length of the run the schedules and ``after_step`` assume (default ``steps``): a larger value
            trains the first ``steps`` steps of a longer run.
        lr, weight_decay, schedule, warmup_steps: AdamW and its schedule per group (``SystemModule``).
        precision, accelerator: Lightning's (one device), e.g. ``"bf16-mixed"``, ``"cuda"``.
        on_step: called after each step with its index and ``FitRecord``-style losses (e.g. to print progress).

    Returns:
        The losses and wall-clock seconds of every step.

    Raises:
        MedsslError: fewer than one step, ``max_steps`` below ``steps``, an unknown schedule, Trainer options
            Lightning refuses, or an iterable that runs out of batches.
    """
    if steps < 1:
        raise MedsslError(f"steps must be at least 1, not {steps}")
    run_steps = steps if max_steps is None else max_steps
    if run_steps < steps:
        raise MedsslError(f"max_steps ({run_steps}) must be at least steps ({steps})")
    options = {"lr": lr, "weight_decay": weight_decay, "schedule": schedule, "warmup_steps": warmup_steps}
    module = _RecordingModule(system, on_step, max_steps=run_steps, **options)
    # Lightning counts every group's optimiser step
    trainer = _bare_trainer(steps * len(module.group_names), accelerator, precision)
    hook = system.register_forward_hook(module.capture)
    try:
        trainer.fit(module, train_dataloaders=_Batches(batches, steps))
    finally:
        hook.remove()
    return module.record


def _bare_trainer(trainer_steps: int, accelerator: str, precision: str) -> L.Trainer:
    """A one-device Trainer of ``trainer_steps`` optimiser steps with no logger, checkpoints, progress bar or
    validation."""
    return make_trainer(
        max_steps=trainer_steps,
        max_epochs=1,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
