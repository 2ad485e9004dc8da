"""DoDNet as a ``medssl.systems.System`` (Zhang et al. 2021, jianpengz/DoDNet): one network trained on partially
labelled data, each structure a task of a dynamic head; registered as segmentation system "dodnet"."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.networks.dynamic_head import DoDNet
from medssl.networks.encoders import UNetEncoder
from medssl.networks.task_outputs import TaskOutputs
from medssl.segment.inference import predict_logits
from medssl.segment.supervised import SupervisedSegmentation, foreground_dice
from medssl.systems import IMAGE, TARGET, Batch

__all__ = ["DoDNetSegmentation", "build_dodnet", "masked_dice_bce", "structure_count", "task_count"]

_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr = smooth_dr, so that with every pair annotated this is SegmentationLoss


class DoDNetSegmentation(SupervisedSegmentation):
    """DoDNet trained on partially labelled structures: Dice + BCE on the annotated (case, structure) pairs only.

    Every structure of a multi-label plan is a binary task (with ``out_per_task`` P > 1, structures ``t * P ...
    t * P + P - 1`` form task ``t``, as the public code's organ + tumour); on a label-map plan each foreground class
    is one, and ``forward(x)`` puts a zero background logit in front so that the softmax / argmax of label maps
    still applies. ``batch["annotated"]`` ``(B, K)`` says which structures a case annotates (label maps: its
    foreground classes, ``(B, K - 1)``, or ``(B, K)`` with the background column ignored); without it every
    structure counts as annotated.

    Each step predicts every task of every image in one pass (``DoDNet.forward_all``) and masks the loss (see
    ``masked_dice_bce``); the public code instead runs the case's own task only. Validation and prediction give all
    structures ``(B, K, *S)``; validation Dice leaves out the structures a case does not annotate. The state dict,
    augmentation and ``export()`` (``{"network": the DoDNet}``) are ``SupervisedSegmentation``'s.

    Args:
        network: a ``DoDNet`` whose ``forward(x)`` gives the plan's ``(B, K, *S)`` logits.
        plan: the dataset plan (task, structures, patch size).
        head_channels: width of the dynamic head's input and hidden layers (DoDNet: 8).
        head_layers: generated 1x1 convolutions in the dynamic head (DoDNet: 3).
        out_per_task: structures per task (1: every structure its own task; DoDNet's datasets had 2).
        settings: ``sw_overlap``, ``rotate_degrees``, ``scale_range``, ``affine_probability``, ``seed``: as
            ``SupervisedSegmentation`` (``run_settings``).
    """

    uses_annotated = True  # trains on partially labelled data (fine-tuning passes batch["annotated"])

    def __init__(self, network: nn.Module, plan: Plan, **settings: Any) -> None:
        super().__init__(network, plan, **settings)
        if not isinstance(network, TaskOutputs):
            raise MedsslError(
                f"the {type(self).__name__} system needs a DoDNet or another TaskOutputs network, "
                f"got {type(network).__name__}"
            )
        self.structures = structure_count(plan)
        if network.num_tasks * network.out_per_task != self.structures:
            raise MedsslError(
                f"the network has {network.num_tasks} tasks x {network.out_per_task} outputs; "
                f"the plan has {self.structures} structures"
            )

    @classmethod
    def for_run(
        cls,
        plan: Plan,
        cfg: FinetuneConfig,
        *,
        seed: int = 0,
        head_channels: int = 8,
        head_layers: int = 3,
        out_per_task: int = 1,
    ) -> DoDNetSegmentation:
        """The system ``medssl finetune --set system=dodnet`` trains: the plan's U-Net encoder and decoder with a
        dynamic head (``build_dodnet``), the augmentation and validation settings of ``cfg`` and this system's
        options (see the class)."""
        network = build_dodnet(plan, head_channels=head_channels, head_layers=head_layers, out_per_task=out_per_task)
        return cls(network, plan, **cls.run_settings(cfg, seed))

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``{"loss": masked Dice + BCE}`` of the augmented patches over their annotated structures, and, logged
        only, ``annotated``: the share of (case, structure) pairs annotated."""
        x, y = self.augment(batch[IMAGE], batch[TARGET])
        annotated = self._annotated(batch, x.shape[0], x.device)
        logits = self.task_network.forward_all(x)
        loss = masked_dice_bce(logits, self._binary(y), annotated)
        return {"loss": loss, "annotated": annotated.float().mean()}

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """``{"dice": mean Dice}`` of one whole case over the structures it annotates."""
        logits = predict_logits(self.network, batch[IMAGE][0], self.plan, overlap=self.sw_overlap)
        dice = foreground_dice(logits, batch[TARGET][0], multilabel=self.multilabel)
        annotated = self._annotated(batch, 1, dice.device)[0]
        return {"dice": torch.where(annotated, dice, torch.nan).nanmean()}

    @property
    def task_network(self) -> TaskOutputs:
        """The network, typed."""
        assert isinstance(self.network, TaskOutputs)
        return self.network

    @property
    def tasks(self) -> list[list[str]]:
        """The structure names of each task, in the network's task order."""
        names = self.plan.class_names if self.multilabel else self.plan.class_names[1:]
        p = self.task_network.out_per_task
        return [list(names[t * p : (t + 1) * p]) for t in range(self.task_network.num_tasks)]

    def checkpoint_state(self) -> dict[str, Any]:
        # the task list beside the plan (SupervisedSegmentation's), so that a checkpoint says what each output is
        return {**super().checkpoint_state(), "tasks": self.tasks}

    def _binary(self, y: Tensor) -> Tensor:
        """The target as one binary map per structure, ``(B, structures, *S)``."""
        if self.multilabel:
            return y
        onehot = nn.functional.one_hot(y[:, 0].long(), self.structures + 1).movedim(-1, 1)
        return onehot[:, 1:]

    def _annotated(self, batch: Batch, n: int, device: torch.device) -> Tensor:
        """``batch["annotated"]`` as ``(n, structures)`` bool (every one when absent)."""
        if "annotated" not in batch:
            return torch.ones(n, self.structures, dtype=torch.bool, device=device)
        annotated = batch["annotated"].to(device=device, dtype=torch.bool)
        if not self.multilabel and annotated.ndim == 2 and annotated.shape[1] == self.structures + 1:
            annotated = annotated[:, 1:]  # a label map's background column
        if annotated.shape != (n, self.structures):
            raise MedsslError(
                f"batch field 'annotated' must be ({n}, {self.structures}): one flag per case and structure, "
                f"got {tuple(annotated.shape)}"
            )
        return annotated


def structure_count(plan: Plan) -> int:
    """The binary structures (tasks at one output each) of a plan: its structures, or a label map's foreground
    classes."""
    return plan.out_channels if plan.task == "multilabel" else plan.out_channels - 1


def task_count(plan: Plan, out_per_task: int) -> int:
    """The tasks of ``out_per_task`` structures each in a plan.

    Raises:
        MedsslError: the plan has no foreground structure, or their number is not a multiple of ``out_per_task``.
    """
    structures = structure_count(plan)
    if structures < 1:
        raise MedsslError("a partially labelled system needs at least one foreground structure in the plan")
    if out_per_task < 1 or structures % out_per_task:
        raise MedsslError(f"out_per_task must divide the {structures} structures, got {out_per_task}")
    return structures // out_per_task


def build_dodnet(plan: Plan, *, head_channels: int = 8, head_layers: int = 3, out_per_task: int = 1) -> DoDNet:
    """The DoDNet of a plan: the U-Net encoder and decoder ``build_network`` would build, one task per
    ``out_per_task`` structures (``task_count``), a zero background logit for label maps."""
    return DoDNet(
        UNetEncoder(plan.spatial_dims, plan.in_channels, tuple(plan.channels)),
        task_count(plan, out_per_task),
        head_channels=head_channels,
        head_layers=head_layers,
        out_per_task=out_per_task,
        background_logit=plan.task != "multilabel",
    )


def masked_dice_bce(logits: Tensor, target: Tensor, annotated: Tensor) -> Tensor:
    """Dice + binary cross-entropy of ``(B, K, *S)`` logits and binary target over the annotated pairs only.

    The pairs ``(b, k)`` with ``annotated[b, k]`` False are left out before anything is computed: their logits
    and targets never enter the loss, so their gradient is exactly zero whatever their target holds.

    BCE: the mean over the voxels of the annotated pairs. Dice: per structure, the batch (nnU-Net) soft Dice over
    the cases that annotate it, weighted by that number of cases, so that every annotated pair counts the same
    (with every pair annotated this equals ``SegmentationLoss(multilabel=True)``). No annotated pair: zero.

    Args:
        logits: ``(B, K, *S)``.
        target: ``(B, K, *S)`` binary.
        annotated: ``(B, K)`` bool.
    """
    pairs = annotated.nonzero()
    if not len(pairs):
        return logits.sum() * 0.0
    b, k = pairs[:, 0], pairs[:, 1]
    lg = logits.flatten(2)[b, k]  # (n, voxels)
    truth = target.flatten(2)[b, k].to(lg.dtype)
    bce = binary_cross_entropy_with_logits(lg, truth)
    prob = torch.sigmoid(lg)
    n_structures = logits.shape[1]
    inter = lg.new_zeros(n_structures).index_add(0, k, (prob * truth).sum(1))
    denom = lg.new_zeros(n_structures).index_add(0, k, prob.sum(1) + truth.sum(1))
    count = torch.bincount(k, minlength=n_structures).to(lg.dtype)
    dice = 1.0 - (2.0 * inter + _SMOOTH) / (denom + _SMOOTH)
    return (count * dice).sum() / count.sum() + bce


registry.register_object(
    "segmentation",
    "dodnet",
    DoDNetSegmentation,
    description="DoDNet (partially labelled structures): U-Net with a task-conditioned dynamic head, Dice + BCE on "
    "the annotated structures of each case only",
)
