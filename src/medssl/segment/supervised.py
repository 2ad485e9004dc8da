"""Supervised segmentation as a ``medssl.systems.System``: Dice + cross-entropy on augmented patches, validation
Dice on whole images predicted with a sliding window."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.metrics.overlap import dice_scores
from medssl.segment.augment import apply_affine, random_affine_matrices
from medssl.segment.inference import predict_logits
from medssl.segment.losses import SegmentationLoss
from medssl.systems import IMAGE, TARGET, Batch, System

__all__ = ["SupervisedSegmentation", "foreground_dice"]

_NETWORK = "network."


class SupervisedSegmentation(System):
    """Trains ``network`` on ``(image, target)`` patches; validates on whole images.

    The state dict is the network's own (no ``network.`` prefix): a fine-tuning checkpoint holds the network as
    ``model.*``, which ``medssl.segment.predict.load_trained_model`` and ``medssl.networks.weights`` read.

    Args:
        network: maps ``(B, C, *patch)`` to ``(B, K, *patch)`` logits.
        plan: the dataset plan (task, classes, patch size).
        sw_overlap: sliding-window overlap at validation.
        rotate_degrees, scale_range, affine_probability: random affine augmentation.
        seed: seed of the augmentation stream.
    """

    def __init__(
        self,
        network: nn.Module,
        plan: Plan,
        *,
        sw_overlap: float = 0.25,
        rotate_degrees: float = 15.0,
        scale_range: tuple[float, float] = (0.85, 1.2),
        affine_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.network = network
        self.plan = plan
        self.multilabel = plan.task == "multilabel"
        self.loss = SegmentationLoss(multilabel=self.multilabel)
        self.sw_overlap = sw_overlap
        self.rotate_degrees, self.scale_range, self.affine_probability = rotate_degrees, scale_range, affine_probability
        self.generator = torch.Generator().manual_seed(seed)
        self._register_state_dict_hook(_drop_network_prefix)
        self._register_load_state_dict_pre_hook(_add_network_prefix, with_module=True)

    @classmethod
    def for_run(cls, plan: Plan, cfg: FinetuneConfig, *, seed: int = 0) -> SupervisedSegmentation:
        """The system ``medssl finetune`` trains: the plan's U-Net (``medssl.segment.predict.build_network``) with
        the augmentation and validation settings of ``cfg``.

        A registered segmentation system provides this constructor; keyword arguments after ``seed`` are its own
        options (``FinetuneConfig.system_options``).
        """
        from medssl.segment.predict import build_network

        return cls(build_network(plan), plan, **cls.run_settings(cfg, seed))

    @staticmethod
    def run_settings(cfg: FinetuneConfig, seed: int) -> dict[str, Any]:
        """The constructor's augmentation and validation settings from a fine-tuning config (every subclass's
        ``for_run`` passes them on)."""
        lo, hi = cfg.scale_range
        return {
            "sw_overlap": cfg.sw_overlap,
            "rotate_degrees": cfg.rotate_degrees,
            "scale_range": (lo, hi),
            "affine_probability": cfg.affine_probability,
            "seed": seed,
        }

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``{"loss": Dice + cross-entropy}`` of the augmented ``image`` and ``target`` patches."""
        x, y = self.augment(batch[IMAGE], batch[TARGET])
        return {"loss": self.loss(self.network(x), y)}

    def augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The random affine of images ``x`` and their targets ``y``, drawn from the system's generator."""
        if self.affine_probability <= 0:
            return x, y
        mats = random_affine_matrices(
            x.shape[0],
            x.ndim - 2,
            max_degrees=self.rotate_degrees,
            scale_range=self.scale_range,
            probability=self.affine_probability,
            generator=self.generator,
        )
        return apply_affine(x, y, mats.to(x.device))

    def validation_step(self, batch: Batch) -> dict[str, Tensor]:
        """``{"dice": mean foreground Dice}`` of one whole case (batch of one), predicted with a sliding window."""
        logits = predict_logits(self.network, batch[IMAGE][0], self.plan, overlap=self.sw_overlap)
        return {"dice": foreground_dice(logits, batch[TARGET][0], multilabel=self.multilabel).nanmean()}

    def predict(self, x: Tensor) -> Tensor:
        """The network's logits for ``x``."""
        out: Tensor = self.network(x)
        return out

    def export(self) -> dict[str, nn.Module]:
        """``{"network": the network}``."""
        return {"network": self.network}

    def checkpoint_state(self) -> dict[str, Any]:
        # the augmentation stream, so that a resumed run draws the augmentations of an uninterrupted one
        # and the plan, so that a checkpoint that leaves its run folder keeps its spacing, patch and classes
        return {"augmentation_generator": self.generator.get_state(), "plan": dataclasses.asdict(self.plan)}

    def load_checkpoint_state(self, checkpoint: dict[str, Any]) -> None:
        if "augmentation_generator" in checkpoint:  # absent from checkpoints of older versions
            self.generator.set_state(checkpoint["augmentation_generator"])


def _drop_network_prefix(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict hook: ``<prefix>network.<key>`` -> ``<prefix><key>``, in place and in order."""
    inner = prefix + _NETWORK
    items = [(prefix + k[len(inner) :] if k.startswith(inner) else k, v) for k, v in state.items()]
    state.clear()
    state.update(OrderedDict(items))
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if (k + ".").startswith(inner)]:
            metadata.setdefault((prefix + key[len(inner) :]).rstrip("."), metadata[key])


def _add_network_prefix(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load pre-hook, the inverse of ``_drop_network_prefix``: ``<prefix><key>`` -> ``<prefix>network.<key>``."""
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + _NETWORK)]:
        state[prefix + _NETWORK + key[len(prefix) :]] = state.pop(key)


def foreground_dice(logits: Tensor, target: Tensor, *, multilabel: bool) -> Tensor:
    """Dice of each foreground class/structure of one image (``(K, *spatial)`` logits, ``(T, *spatial)``
    target); NaN where both prediction and truth are empty, so that ``nanmean`` skips classes absent from both
    (the test metrics, ``medssl.metrics.dice``, count them as 1.0; both use ``medssl.metrics.dice_scores``)."""
    if multilabel:
        pred = logits > 0
        truth = target > 0
    else:
        k = logits.shape[0]
        pred = nn.functional.one_hot(logits.argmax(0), k).movedim(-1, 0)[1:].bool()
        truth = nn.functional.one_hot(target[0].long(), k).movedim(-1, 0)[1:].bool()
    return dice_scores(pred, truth, spatial_dims=pred.ndim - 1, empty=float("nan"), dtype=torch.float32)


registry.register_object(
    "segmentation",
    "supervised",
    SupervisedSegmentation,
    description="supervised fine-tuning on labelled patches: Dice + cross-entropy, affine augmentation, "
    "sliding-window validation (medssl finetune)",
)
