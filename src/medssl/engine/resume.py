"""Interrupt and resume for the training workflows (``medssl finetune`` and ``medssl pretrain``).

A SIGINT (Ctrl+C) or a SIGTERM (what a scheduler such as SLURM sends before it kills a job) does not kill a run:
training stops at the next step boundary, ``checkpoints/last.ckpt`` is written (atomically, through
``SafeCheckpointIO``) and ``TrainingInterrupted`` says how to resume. A second Ctrl+C stops at once and keeps the
last checkpoint written. The CLI exits with 128 + the signal number: 130 for SIGINT, 143 for SIGTERM.

Checkpoints also carry the random streams that Lightning does not save (the patch sampler's generators, and
torch's global generator where the model draws from it), so that a resumed run on one device draws the same
patches, augmentations and views as an uninterrupted run and ends with the same weights. Under DDP each process
has its own random streams (``seed_rank_streams``); a checkpoint holds rank 0's only, so a resumed DDP run reseeds
every process's streams from its seed, rank and the step instead (same distribution, other draws: the same step
count, a loss within noise, not the same weights).

A SIGKILL cannot be caught: what survives is the last checkpoint written. ``checkpoint_every`` saves ``last.ckpt``
between validations too (the same mid-epoch save as a signal's), so that a killed run loses at most that many steps
and, resumed on one device, still ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from torch import nn

from medssl.data.sampling import PatchDataset, WithUnlabelledPatches
from medssl.engine.run_folder import is_main_process

__all__ = ["ResumableTraining", "TrainingInterrupted", "resume_command", "say_where_resumed", "seed_rank_streams"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
console = Console(stderr=True)


def resume_command(argv: Sequence[str]) -> str:
    """The command that resumes a run started with the CLI arguments ``argv`` (``sys.argv``): the same arguments
    with ``--resume``, and without ``--overwrite``, which must never touch the run being resumed."""
    args = [a for a in argv[1:] if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return "medssl " + shlex.join(args)


def say_where_resumed(last: Path) -> None:
    """One line saying which checkpoint ``--resume`` continues from, or that there is none (never a silent restart)."""
    if last.is_file():
        console.print(f"--resume: continuing from {last}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"[yellow]--resume[/yellow]: {last} does not exist (the run stopped before its first training step): "
            "training starts at step 0",
            highlight=False,
            soft_wrap=True,
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal; ``checkpoints/last.ckpt`` holds the run up to ``step``.

    A ``KeyboardInterrupt``, so that callers that stop on Ctrl+C keep stopping. ``exit_code`` is 128 + the signal
    number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process that a signal ended.

    Args:
        command: ``finetune`` or ``pretrain``.
        run: the run folder.
        step: optimiser steps saved in ``last.ckpt`` (None: no step finished, nothing saved).
        signum: the signal received.
    """

    def __init__(self, command: str, run: Path, step: int | None, signum: int) -> None:
        self.command, self.run, self.step, self.signum = command, run, step, signum
        self.exit_code = 128 + signum
        super().__init__(self.describe())

    def describe(self, argv: Sequence[str] | None = None) -> str:
        """One line: what was saved and how to resume (the exact CLI command when ``argv`` is the CLI's)."""
        how = (
            resume_command(argv)
            if argv
            else f"call again with resume=True (CLI: the same `medssl {self.command}` command with --resume)"
        )
        name = signal.Signals(self.signum).name
        if self.step is None:
            return f"{name}: stopped before the first training step, nothing to save; to resume: {how}"
        last = self.run / "checkpoints" / "last.ckpt"
        return f"{name}: training stopped at step {self.step}, saved in {last}; to resume: {how}"


class _Stop(BaseException):
    """Unwinds ``trainer.fit`` after a requested stop. Not a ``KeyboardInterrupt``: Lightning turns those into
    ``sys.exit(1)``; any other exception it re-raises after its clean-up."""


class ResumableTraining(Callback):
    """Stops training cleanly on SIGINT/SIGTERM with ``last.ckpt`` saved, and keeps the random streams in checkpoints.

    Use ``fit`` instead of ``trainer.fit``. A stop requested at the last batch before a validation waits for that
    validation and its checkpoint (a mid-epoch checkpoint saved before the validation would make the resumed run
    skip it); any other stop happens at the end of the current step.

    Args:
        last: the run's ``checkpoints/last.ckpt``.
        command: ``finetune`` or ``pretrain`` (for the resume message).
        patches: the training patch dataset, whose generator is saved and restored (read in the main process:
            the loaders use ``num_workers=0``).
        global_rng: also save and restore torch's global generators (for models that draw from them).
        seed: the run's seed; under DDP every process but rank 0 reseeds its random streams from it and its rank
            when training starts (``seed_rank_streams``: after Lightning's DDP set-up, which resets every process to
            the seed of ``seed_everything``).
        checkpoint_every: also save ``last`` every this many batches between validations (None: only on a signal),
            so that a SIGKILL loses at most that many steps. The last batch before a validation is left to the
            validation's own checkpoint (saved before it, the resumed run would skip that validation).
    """

    def __init__(
        self,
        last: Path,
        command: str,
        patches: PatchDataset | None = None,
        *,
        global_rng: bool = False,
        seed: int = 0,
        checkpoint_every: int | None = None,
    ) -> None:
        self.last, self.command, self.patches, self.global_rng = last, command, patches, global_rng
        self.seed, self.checkpoint_every = seed, checkpoint_every
        self.signum: int | None = None
        self.saved_step: int | None = None  # step of the last checkpoint written or restored
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}
        self._restored: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------------- signals

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Catch SIGINT and SIGTERM (main thread only: Python delivers signals there) and restore the handlers."""
        self.signum = None
        self._install()
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous = {}

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _SIGNALS:
            current = signal.getsignal(signum)
            if current != self._handle:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl+C: stop at once
            return
        # Not forwarded to DDP processes (Ctrl+C reaches the whole process group, and a second SIGINT would stop
        # them at once): the stop decision is shared at every step (_stop_requested).
        self.signum = signum
        if is_main_process():
            # os.write, not print: a signal handler may interrupt a write to the same stream
            name = signal.Signals(signum).name
            line = f"\n{name}: saving checkpoints/last.ckpt after the current step (Ctrl+C again: stop now)\n"
            os.write(2, line.encode())

    def fit(self, trainer: L.Trainer, module: L.LightningModule, **kwargs: Any) -> None:
        """``trainer.fit(module, **kwargs)``; a stop on a signal raises ``TrainingInterrupted`` (after saving).

        A signal that arrives after the last step lets ``fit`` return; call ``raise_if_stopped`` once the final
        checkpoint is saved.
        """
        self._trainer = trainer
        run = self.last.parent.parent
        with self.listening(), warnings.catch_warnings():
            # True of plain loaders, not of ours: the patch stream is restored from the checkpoint (on_train_start)
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable")
            # Lightning replays the end of the epoch of an epoch-end checkpoint, without its validation
            warnings.filterwarnings("ignore", message=".*could not find the monitored key")
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            try:
                trainer.fit(module, **kwargs)
            except _Stop:
                raise TrainingInterrupted(self.command, run, self.saved_step, self.signum or signal.SIGINT) from None
            except SystemExit:
                if self.signum is None:
                    raise
                # a second Ctrl+C: Lightning cleaned up and called sys.exit; the last checkpoint written is kept
                raise TrainingInterrupted(self.command, run, self.saved_step, self.signum) from None

    def raise_if_stopped(self) -> None:
        """Raise ``TrainingInterrupted`` if a signal came during the last step or the last validation."""
        if self.signum is not None:
            raise TrainingInterrupted(self.command, self.last.parent.parent, self.saved_step, self.signum)

    # ------------------------------------------------------------------------------------------- stop points

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        # every process must take the same decision at the same step, or DDP hangs in its next all-reduce
        return trainer.strategy.reduce_boolean_decision(self.signum is not None, all=False)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        # Lightning's own SIGTERM handler (set up in fit) stops in the middle of a validation: take it back.
        if self._previous:
            self._install()
        restored, self._restored = self._restored, None
        if restored is None:
            if trainer.global_rank > 0:
                # the same initialisation on every rank (DDP starts from rank 0's weights anyway), then each process
                # its own views and augmentations; rank 0 draws what it drew before
                seed_rank_streams(pl_module, self.seed, trainer.global_rank)
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.restarted_on_last and epoch_loop.batch_progress.is_last_batch and trainer.enable_validation:
            # From a checkpoint saved after an epoch's validation Lightning replays the end of that epoch, which counts
            # one more logging step than the uninterrupted run did: every later metric would be logged one step late.
            epoch_loop._batches_that_stepped -= 1
        single = trainer.world_size == 1
        stream = restored.get("patch_stream")
        if self.patches is not None and stream is not None:
            if single:
                self.patches.rng.bit_generator.state = stream
                unlabelled = restored.get("unlabelled_stream")
                if isinstance(self.patches, WithUnlabelledPatches) and unlabelled is not None:
                    self.patches.unlabelled.rng.bit_generator.state = unlabelled
            else:
                seed = np.random.SeedSequence([self.patches.seed, trainer.global_step]).generate_state(1)[0]
                self.patches.reseed(int(seed))
        if single and not restored.get("at_epoch_end", False):
            _set_global_rng(restored)
        if not single:
            # the checkpoint holds rank 0's streams, which every process has just loaded: give each its own again
            seed_rank_streams(pl_module, self.seed, trainer.global_rank, trainer.global_step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # A signal during a validation or between epochs: the epoch-end checkpoint is current (or nothing ran).
        # (the decision is collective: taken by every process at the same batch, before the step test)
        if batch_idx == 0 and self._stop_requested(trainer) and trainer.global_step in (0, self.saved_step):
            raise _Stop

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        before_validation = trainer.enable_validation and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if not self._stop_requested(trainer):
            if (
                self.checkpoint_every
                and not before_validation
                and _batches(trainer, pl_module) % self.checkpoint_every == 0
            ):
                trainer.save_checkpoint(self.last, weights_only=False)  # every process calls it, rank 0 writes
            return
        if before_validation:
            return  # the validation and the epoch-end checkpoint come first; stop at the next batch
        trainer.save_checkpoint(self.last, weights_only=False)
        raise _Stop

    # ---------------------------------------------------------------------------------------- checkpoint state

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_step = trainer.global_step

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.saved_step = int(checkpoint.get("global_step", 0))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if self.patches is not None:
            state["patch_stream"] = self.patches.rng.bit_generator.state
            if isinstance(self.patches, WithUnlabelledPatches):
                state["unlabelled_stream"] = self.patches.unlabelled.rng.bit_generator.state
        if self.global_rng:
            state["torch_rng"] = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()
            trainer = self._trainer
            state["at_epoch_end"] = bool(trainer and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)
        # At an epoch end the next epoch's loader draws from the global generator (its base seed) before the
        # first step, as in the uninterrupted run: restore now, before the resumed run creates that loader.
        if state_dict.get("at_epoch_end", False) and (self._trainer is None or self._trainer.world_size == 1):
            _set_global_rng(state_dict)


def seed_rank_streams(module: nn.Module, *words: int) -> None:
    """Reseed torch's, NumPy's and Python's global generators, and every ``torch.Generator`` that a submodule of
    ``module`` holds as an attribute (a system's augmentation stream), from ``words`` (seed, rank[, step]).

    Under DDP every process is seeded alike (``seed_everything``: the same initialisation); without this, the
    processes would draw the same crops, flips and intensity changes for their different images.
    """
    seeds = np.random.SeedSequence([int(w) for w in words]).generate_state(3)
    torch.manual_seed(int(seeds[0]))
    np.random.seed(int(seeds[1]))
    random.seed(int(seeds[2]))
    owned = [v for m in module.modules() for v in vars(m).values() if isinstance(v, torch.Generator)]
    for i, generator in enumerate(owned, start=1):
        generator.manual_seed(int(np.random.SeedSequence([*map(int, words), i]).generate_state(1)[0]))


def _batches(trainer: L.Trainer, module: L.LightningModule) -> int:
    """Batches trained so far (Lightning's ``global_step`` counts every optimiser group's step)."""
    return trainer.global_step // max(1, len(getattr(module, "group_names", [None])))


def _set_global_rng(state: dict[str, Any]) -> None:
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
