"""The ``System`` contract: what the engine (``medssl.engine.module.SystemModule``) needs from anything it trains.

A system is an ``nn.Module`` that holds its networks and losses. It returns its losses from
``training_step(batch, step)``, declares its optimiser groups, and says what it exports; it never calls
``backward()`` or steps an optimiser (the engine owns optimisers, schedules, precision, devices, checkpoints and
logging). Batches are dicts whose field names are defined here, once.
"""

from __future__ import annotations

import abc
from typing import Any, Final, TypedDict

from torch import Tensor, nn

__all__ = ["BATCH_FIELDS", "IMAGE", "TARGET", "UNLABELLED", "Batch", "System", "as_batch"]


class Batch(TypedDict, total=False):
    """A batch of named tensors; a system reads the fields it needs (every system needs ``image``).

    Attributes:
        image: images ``(B, C, *S)``.
        target: the target of each image: ``(B, 1, *S)`` class indices or ``(B, K, *S)`` binary structures.
        annotated: which structures each target annotates, ``(B, K)`` bool (partially labelled data).
        task: a task index per image, ``(B,)`` (one network, several tasks).
        raters: several raters' targets, ``(B, R, *S)``: one class-index map per rater (``encode_raters``).
        high_res: a high-resolution target image ``(B, C, *S')`` (super-resolution).
        unlabelled: images without targets ``(B_u, C, *S)`` drawn beside the labelled ones (semi-supervised
            systems, ``System.uses_unlabelled``): never part of a supervised loss.
    """

    image: Tensor
    target: Tensor
    annotated: Tensor
    task: Tensor
    raters: Tensor
    high_res: Tensor
    unlabelled: Tensor


IMAGE: Final = "image"
TARGET: Final = "target"
UNLABELLED: Final = "unlabelled"
BATCH_FIELDS: tuple[str, ...] = tuple(Batch.__annotations__)
"""Every field name a ``Batch`` may hold, in declaration order."""


def as_batch(batch: Batch | Tensor | tuple[Tensor, ...] | list[Tensor]) -> Batch:
    """A loader's item as a ``Batch``: dicts pass through; a tensor is the images; a tuple/list is ``(image,
    target)`` (the patch and case datasets yield those), a target-less one ``(image,)``.

    Raises:
        TypeError: an item of another kind, or a tuple of more than two tensors (whose meaning is not known).
    """
    if isinstance(batch, dict):
        return batch
    if isinstance(batch, Tensor):
        return {"image": batch}
    if isinstance(batch, tuple | list) and 1 <= len(batch) <= 2:
        return {"image": batch[0]} if len(batch) == 1 else {"image": batch[0], "target": batch[1]}
    raise TypeError(f"a batch is a dict of named tensors, a tensor or an (image, target) pair, not {type(batch)}")


class System(nn.Module, abc.ABC):
    """Anything the engine trains: holds its networks and losses, returns losses, never steps an optimiser.

    Subclasses implement ``training_step`` and ``export``; the other methods have defaults.

    Attributes:
        uses_unlabelled: True when ``training_step`` reads ``batch["unlabelled"]``: fine-tuning then draws, beside
            every labelled batch, as many patches of the training images whose labels it does not use (set per
            instance where only some configurations use them).
        uses_annotated: True when the system reads ``batch["annotated"]`` (which structures each case annotates)
            and leaves the unannotated ones out of its loss: only such a system may fine-tune on partially labelled
            data (any other would learn an unannotated structure as background).
        uses_raters: True when the system learns from every rater's mask: fine-tuning on a dataset with several
            raters then passes ``batch["target"]`` as ``(B, R, *S)``, one label map per rater.
    """

    uses_unlabelled: bool = False
    uses_annotated: bool = False
    uses_raters: bool = False

    @abc.abstractmethod
    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """The losses of one batch at optimiser step ``step`` (0-based); never calls ``backward()``.

        Returns:
            With one optimiser group, ``"loss"``: the total to minimise. With several, one loss per group name of
            ``optimizer_groups`` (e.g. ``"generator"``, ``"discriminator"``). Any other entry is logged only
            (detach it). The engine logs every entry as ``train_<name>`` (``"loss"`` as ``train_loss``).
        """

    def forward(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """Same as ``training_step``; wrappers such as DDP only see calls that go through ``forward``."""
        return self.training_step(batch, step)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each optimiser group, in the order the engine steps them; one group ``"main"`` (every
        trainable parameter) by default. Each group gets its own AdamW and schedule."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def after_step(self, step: int, max_steps: int) -> None:
        """Hook run after optimiser step ``step`` (0-based) of ``max_steps`` (every group stepped); default: nothing.
        Momentum (EMA) updates live here."""

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """Scores of one validation batch (one case); the engine logs the mean over cases of each as ``val_<name>``
        (NaN values left out). Default: no validation."""
        return {}

    def predict(self, x: Tensor) -> Tensor:
        """The system's prediction for images ``x``, where it predicts (e.g. segmentation logits).

        Raises:
            NotImplementedError: the system does not predict (e.g. a pretraining method).
        """
        raise NotImplementedError(f"{type(self).__name__} does not predict")

    @abc.abstractmethod
    def export(self) -> dict[str, nn.Module]:
        """What is saved for later use, by name (an encoder, a whole network): the live modules, not copies."""

    def checkpoint_state(self) -> dict[str, Any]:
        """State outside the parameters that a resumed run needs (e.g. an augmentation generator's state), stored at
        the top level of the checkpoint under these keys; default: none."""
        return {}

    def load_checkpoint_state(self, checkpoint: dict[str, Any]) -> None:
        """Restore what ``checkpoint_state`` stored from a checkpoint (whose keys may lack it: older runs)."""
