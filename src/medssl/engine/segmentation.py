"""The Lightning module that trains a segmentation network: ``SystemModule`` driving ``SupervisedSegmentation``
(losses, augmentation and validation Dice live in ``medssl.segment.supervised``)."""

from __future__ import annotations

from torch import nn

from medssl.data.plan import Plan
from medssl.engine.module import SystemModule
from medssl.segment.supervised import SupervisedSegmentation, foreground_dice

__all__ = ["SegmentationModule", "foreground_dice"]


class SegmentationModule(SystemModule):
    """Supervised training of ``network`` on patches, validated on whole images with a sliding window.

    The system is kept as ``model`` and its state is the network's, so checkpoint keys read ``model.<network key>``.

    Args:
        network: maps ``(B, C, *patch)`` to ``(B, K, *patch)`` logits.
        plan: the dataset plan (task, classes, patch size).
        lr: AdamW learning rate, decayed as ``(1 - step / max_steps) ** 0.9``.
        weight_decay: AdamW weight decay.
        max_steps: length of the schedule.
        sw_overlap: sliding-window overlap at validation.
        rotate_degrees, scale_range, affine_probability: random affine augmentation.
        seed: seed of the augmentation stream.
    """

    def __init__(
        self,
        network: nn.Module,
        plan: Plan,
        *,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        max_steps: int = 1000,
        sw_overlap: float = 0.25,
        rotate_degrees: float = 15.0,
        scale_range: tuple[float, float] = (0.85, 1.2),
        affine_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        system = SupervisedSegmentation(
            network,
            plan,
            sw_overlap=sw_overlap,
            rotate_degrees=rotate_degrees,
            scale_range=scale_range,
            affine_probability=affine_probability,
            seed=seed,
        )
        super().__init__(system, name="model", lr=lr, weight_decay=weight_decay, max_steps=max_steps, schedule="poly")
        self.plan = plan

    @property
    def network(self) -> nn.Module:
        """The network being trained."""
        system = self.system
        assert isinstance(system, SupervisedSegmentation)
        return system.network
