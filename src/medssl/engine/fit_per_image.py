"""Fitting a system to one image: a fresh system per picture, a plain loop on the calling thread, no Trainer.

Label-free methods (S3-Net) optimise a newly initialised network on the one picture they segment. The loop is
short (tens of steps), needs no checkpoints, devices or logging, and must be bit-for-bit repeatable, so it is a
plain loop rather than a Lightning run. The system still never calls ``backward()`` or steps an optimiser; it
declares its optimiser (``configure_optimizer``), returns its losses from ``training_step`` and says when to stop
(``should_stop``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.systems import Batch, System

__all__ = ["PerImageSystem", "fit_per_image"]


class PerImageSystem(System):
    """A system fitted to one image at a time by ``fit_per_image``.

    On top of the ``System`` contract: ``configure_optimizer`` (default: AdamW at 1e-3), ``begin_fit`` (reset the
    per-fit state), ``step_record`` (per-step statistics recorded beside the losses) and ``should_stop`` (an early
    stop, checked after each step's ``after_step``).
    """

    def configure_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser of ``parameters`` (every trainable parameter of the system); default AdamW, lr 1e-3."""
        return torch.optim.AdamW(parameters, lr=1e-3)

    def begin_fit(self, batch: Batch) -> None:
        """Called once before the first step of a fit on ``batch``; default: nothing."""

    def step_record(self) -> dict[str, float]:
        """Statistics of the step just taken (after ``after_step``), recorded beside its losses; default: none."""
        return {}

    def should_stop(self, step: int) -> bool:
        """Whether the fit ends after step ``step`` (0-based; checked after ``after_step``); default: never."""
        return False


def fit_per_image(system: PerImageSystem, batch: Batch, max_steps: int) -> list[dict[str, float]]:
    """Fit ``system`` on ``batch`` (one image) for at most ``max_steps`` steps, with the optimiser it declares.

    Each step: ``training_step``, ``backward()`` of its ``"loss"``, an optimiser step, ``after_step``; then the
    step is recorded and ``should_stop`` may end the fit.

    Args:
        system: the system, in its initial state.
        batch: the one image (and whatever else the system reads).
        max_steps: optimiser steps at most.

    Returns:
        Per step taken, the float value of every loss ``training_step`` returned followed by ``step_record()``.
    """
    system.train()
    optimiser = system.configure_optimizer([p for p in system.parameters() if p.requires_grad])
    system.begin_fit(batch)
    history: list[dict[str, float]] = []
    for step in range(max_steps):
        losses: dict[str, Tensor] = system.training_step(batch, step)
        optimiser.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimiser.step()
        system.after_step(step, max_steps)
        history.append({**{name: float(value.detach()) for name, value in losses.items()}, **system.step_record()})
        if system.should_stop(step):
            break
    return history
