"""The baselines DoDNet is compared with on partially labelled data, as segmentation systems trained exactly as
the ``dodnet`` system is (the same masked Dice + BCE, augmentation, validation, prediction); only the network
differs (``medssl.networks.task_outputs``):

- ``multihead``: the shared U-Net with one static head per task;
- ``masked-sigmoid``: one U-Net with a sigmoid output per structure (MultiTalent-style);
- ``separate``: one U-Net per task, each learning only from the cases that annotate its task.

The fully labelled upper bound is the ``supervised`` system on fully labelled data.
"""

from __future__ import annotations

from medssl import registry
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.networks.encoders import UNetEncoder
from medssl.networks.task_outputs import MultiHeadUNet, SeparateUNets, SigmoidUNet
from medssl.segment.dodnet import DoDNetSegmentation, task_count

__all__ = ["MaskedSigmoidSegmentation", "MultiHeadSegmentation", "SeparateSegmentation"]


def _encoder(plan: Plan) -> UNetEncoder:
    return UNetEncoder(plan.spatial_dims, plan.in_channels, tuple(plan.channels))


class MultiHeadSegmentation(DoDNetSegmentation):
    """The shared U-Net with one static head per task (``MultiHeadUNet``), trained as ``dodnet``.

    Args:
        head_channels: width of each task head's input and hidden layers (as DoDNet's: 8).
        head_layers: 1x1 convolutions per task head (as DoDNet's: 3).
        out_per_task: structures per task.
    """

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
    ) -> MultiHeadSegmentation:
        """The system ``--set system=multihead`` trains."""
        network = MultiHeadUNet(
            _encoder(plan),
            task_count(plan, out_per_task),
            head_channels=head_channels,
            head_layers=head_layers,
            out_per_task=out_per_task,
            background_logit=plan.task != "multilabel",
        )
        return cls(network, plan, **cls.run_settings(cfg, seed))


class MaskedSigmoidSegmentation(DoDNetSegmentation):
    """One U-Net with a sigmoid output per structure, the loss masked to the annotated structures of each case
    (MultiTalent-style; ``SigmoidUNet``).

    Args:
        out_per_task: structures per task (only groups the outputs; every structure has its own sigmoid).
    """

    @classmethod
    def for_run(  # type: ignore[override]
        cls, plan: Plan, cfg: FinetuneConfig, *, seed: int = 0, out_per_task: int = 1
    ) -> MaskedSigmoidSegmentation:
        """The system ``--set system=masked-sigmoid`` trains."""
        network = SigmoidUNet(
            _encoder(plan),
            task_count(plan, out_per_task),
            out_per_task=out_per_task,
            background_logit=plan.task != "multilabel",
        )
        return cls(network, plan, **cls.run_settings(cfg, seed))


class SeparateSegmentation(DoDNetSegmentation):
    """One U-Net per task (``SeparateUNets``), each trained only by the cases that annotate its task (the masked
    loss gives the others exactly zero gradient); ``--init`` does not apply (there is no single encoder).

    Args:
        out_per_task: structures per task, that is, outputs of each network.
    """

    @classmethod
    def for_run(  # type: ignore[override]
        cls, plan: Plan, cfg: FinetuneConfig, *, seed: int = 0, out_per_task: int = 1
    ) -> SeparateSegmentation:
        """The system ``--set system=separate`` trains."""
        encoders = [_encoder(plan) for _ in range(task_count(plan, out_per_task))]
        network = SeparateUNets(encoders, out_per_task=out_per_task, background_logit=plan.task != "multilabel")
        return cls(network, plan, **cls.run_settings(cfg, seed))


registry.register_object(
    "segmentation",
    "multihead",
    MultiHeadSegmentation,
    description="partially labelled structures: shared U-Net with one static head per task (DoDNet's baseline)",
)
registry.register_object(
    "segmentation",
    "masked-sigmoid",
    MaskedSigmoidSegmentation,
    description="partially labelled structures: one U-Net, a sigmoid per structure, loss masked to the annotated "
    "ones (MultiTalent-style)",
)
registry.register_object(
    "segmentation",
    "separate",
    SeparateSegmentation,
    description="partially labelled structures: one U-Net per task, each trained on the cases annotating it",
)
