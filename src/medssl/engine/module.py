"""The one Lightning module that trains any ``medssl.systems.System``.

One optimiser group: Lightning's automatic optimisation (AdamW + a per-step schedule). Several groups: manual
optimisation; each group has its own AdamW and schedule and steps on its own loss, in the order of
``System.optimizer_groups()``. The system's losses are computed once per batch, at the parameters before any of
this batch's steps; each group's gradient comes from its own loss only. Lightning counts every optimiser step, so a
run of ``max_steps`` batches with ``n`` groups needs ``Trainer(max_steps=module.trainer_steps)``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor

from medssl.errors import MedsslError
from medssl.systems import Batch, System, as_batch

__all__ = ["SCHEDULES", "SystemModule", "fusable", "lr_factor"]

SCHEDULES = ("cosine", "poly")


def fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether AdamW can update ``params`` in one fused kernel: floating-point, all on the CPU or all on CUDA.

    The fused update is the same algorithm as the per-tensor loop, in one kernel instead of several per tensor."""
    kinds = {p.device.type for p in params}
    return len(kinds) == 1 and kinds <= {"cpu", "cuda"} and all(p.dtype.is_floating_point for p in params)


def lr_factor(step: int, max_steps: int, schedule: str = "cosine", warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at optimiser step ``step``: a linear warm-up over ``warmup_steps``, then a
    ``cosine`` or ``poly`` (``(1 - t) ** 0.9``) decay to zero at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else max(0.0, 1 - t) ** 0.9


class SystemModule(L.LightningModule):
    """Trains ``system`` with AdamW and a warm-up + decay schedule per optimiser group; logs every loss it returns.

    Args:
        system: the system to train; registered in this module as ``name``, so that checkpoint keys read
            ``<name>.<the system's state_dict keys>``.
        name: the attribute (checkpoint key prefix) of the system.
        lr: peak learning rate; weight_decay: AdamW weight decay (every group).
        max_steps: batches of the run (length of the decay and of ``after_step`` schedules).
        schedule: ``cosine`` or ``poly`` decay to zero (see ``lr_factor``).
        warmup_steps: linear warm-up before the decay.

    Raises:
        MedsslError: an unknown schedule, or a system without trainable parameters in a group.
    """

    def __init__(
        self,
        system: System,
        *,
        name: str = "system",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        max_steps: int = 1000,
        schedule: str = "cosine",
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise MedsslError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
        self.system_name = name
        self.add_module(name, system)
        self.lr, self.weight_decay = lr, weight_decay
        self.max_steps, self.schedule, self.warmup_steps = max_steps, schedule, warmup_steps
        self.group_names = list(system.optimizer_groups())
        self.automatic_optimization = len(self.group_names) == 1
        if type(system).validation_step is System.validation_step:
            # a system that does not validate: Lightning then neither runs nor warns about a missing val loader
            self.validation_step = None  # type: ignore[assignment]
        self._val: dict[str, list[Tensor]] = {}
        self._fit_started = time.perf_counter()

    @property
    def system(self) -> System:
        """The system being trained."""
        module = self._modules.get(self.system_name)
        if not isinstance(module, System):  # an AttributeError, so that hasattr() works before it is registered
            raise AttributeError("no system registered yet")
        return module

    @property
    def trainer_steps(self) -> int:
        """The ``Trainer``'s ``max_steps`` for ``max_steps`` batches (Lightning counts every group's step)."""
        return self.max_steps * len(self.group_names)

    def forward(self, x: Tensor) -> Tensor:
        return self.system.predict(x)

    def on_train_start(self) -> None:
        self._fit_started = time.perf_counter()

    # ------------------------------------------------------------------------------------------------ training

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        data = as_batch(batch)
        n = len(self.group_names)
        step = self.global_step // n  # batches already trained (Lightning counts each group's step)
        losses = self.system(data, step)  # through forward, so that DDP sees the call
        wanted = ["loss"] if n == 1 else self.group_names
        missing = [k for k in wanted if k not in losses]
        if missing:
            raise MedsslError(
                f"{type(self.system).__name__}.training_step returned no {', '.join(map(repr, missing))} "
                f"(got {sorted(losses)})"
            )
        self._log_losses(losses, data)
        if n == 1:
            return losses["loss"]
        self._step_groups(losses)
        self.system.after_step(step, self.max_steps)
        return None

    def _log_losses(self, losses: dict[str, Tensor], data: Batch) -> None:
        size = len(data["image"])
        for key, value in losses.items():
            name = "train_loss" if key == "loss" else f"train_{key}"
            main = key == "loss" or (key == self.group_names[0] and "loss" not in losses)
            self.log(name, value.detach(), on_step=True, on_epoch=False, prog_bar=main, batch_size=size)

    def _step_groups(self, losses: dict[str, Tensor]) -> None:
        """Each group's gradient from its own loss (all taken before any step, so that no step changes a graph
        another loss still needs), then each group's optimiser and schedule step, in order."""
        groups = self.system.optimizer_groups()
        everything = [p for params in groups.values() for p in params]
        grads: dict[str, list[Tensor | None]] = {}
        for name in self.group_names:
            for p in everything:
                p.grad = None
            self.manual_backward(losses[name], retain_graph=True)
            grads[name] = [p.grad for p in groups[name]]
        optimizers = self.optimizers()
        schedulers = self.lr_schedulers()
        assert isinstance(optimizers, list) and isinstance(schedulers, list)
        for name, opt, sched in zip(self.group_names, optimizers, schedulers, strict=True):
            for p in everything:
                p.grad = None
            for p, g in zip(groups[name], grads[name], strict=True):
                p.grad = g
            opt.step()
            sched.step()
        for p in everything:
            p.grad = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.automatic_optimization:
            # Lightning has already counted the step: global_step - 1 is the 0-based index of the step just taken.
            self.system.after_step(max(self.global_step - 1, 0), self.max_steps)

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimiser step ``step`` of a group (see ``lr_factor``)."""
        return lr_factor(step, self.max_steps, self.schedule, self.warmup_steps)

    def configure_optimizers(self) -> Any:
        configs = []
        for name, params in self.system.optimizer_groups().items():
            if not params:
                raise MedsslError(f"optimiser group {name!r} of {type(self.system).__name__} has no parameters")
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, fused=fusable(params))
            sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
            configs.append({"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}})
        return configs[0] if len(configs) == 1 else configs

    # ---------------------------------------------------------------------------------------------- validation

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        for key, value in self.system.validation_step(as_batch(batch)).items():
            self._val.setdefault(key, []).append(value.detach())

    def on_validation_epoch_end(self) -> None:
        if self._val:
            for key, values in self._val.items():
                self.log(f"val_{key}", torch.stack(values).nanmean(), prog_bar=True, sync_dist=True)
            # wall-clock seconds since training started, for time-to-score curves
            self.log("elapsed_s", float(time.perf_counter() - self._fit_started), sync_dist=True)
        self._val.clear()

    # ----------------------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint.update(self.system.checkpoint_state())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.system.load_checkpoint_state(checkpoint)
