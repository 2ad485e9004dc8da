"""Networks that give one group of sigmoid logits per task, for partially labelled data: the contract DoDNet and
its baselines share, and the baselines themselves.

``TaskOutputs.forward_all(x)`` gives every task's logits ``(B, T * out_per_task, *S)`` (task ``t`` in channels
``t * out_per_task ...``), each channel a binary structure; ``forward(x)`` gives the same with a zero background
logit in front when the plan is a label map, so that the softmax / argmax of label maps and the sliding window
(``predict_logits``) apply unchanged.

The baselines of DoDNet's comparison (Zhang et al. 2021; MultiTalent, Ulrich et al. 2023):

- ``MultiHeadUNet``: the shared U-Net with one static head per task, each the same stack of 1x1 convolutions
  DoDNet generates (so that the comparison isolates generated against learned weights);
- ``SigmoidUNet``: one U-Net with a sigmoid output per structure, trained with the loss masked to the annotated
  structures (MultiTalent's design);
- ``SeparateUNets``: one U-Net per task, each seeing only the cases that annotate its task (the masked loss of a
  task is zero for the others).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medssl.errors import MedsslError
from medssl.networks import layers
from medssl.networks.encoders import Encoder
from medssl.networks.unet import UNetDecoder, UNetHead

__all__ = ["MultiHeadUNet", "SeparateUNets", "SharedUNet", "SigmoidUNet", "TaskHeads", "TaskOutputs"]


class TaskOutputs(nn.Module):
    """Base of the networks that give every task's sigmoid logits (see the module).

    Subclasses implement ``forward_all``; ``forward(x)`` adds the background logit of label maps.

    Attributes:
        spatial_dims, in_channels, num_tasks, out_per_task, background_logit; out_channels: channels of
        ``forward(x)``, ``num_tasks * out_per_task`` plus one with ``background_logit``.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, num_tasks: int, out_per_task: int, background_logit: bool
    ) -> None:
        super().__init__()
        if num_tasks < 1 or out_per_task < 1:
            raise MedsslError(f"num_tasks and out_per_task must be >= 1, got {num_tasks} and {out_per_task}")
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.num_tasks, self.out_per_task, self.background_logit = num_tasks, out_per_task, background_logit
        self.out_channels: int = num_tasks * out_per_task + int(background_logit)

    @property
    def required_divisor(self) -> int:
        """Every spatial input size must be divisible by this."""
        raise NotImplementedError

    def forward_all(self, x: Tensor) -> Tensor:
        """Every task's logits, ``(B, T * out_per_task, *S)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``forward_all(x)``, with a zero background logit in front when ``background_logit``."""
        logits = self.forward_all(x)
        if self.background_logit:
            logits = torch.cat((torch.zeros_like(logits[:, :1]), logits), dim=1)
        return logits


class TaskHeads(nn.Module):
    """One static head per task: a shared 1x1 reduction to ``head_channels``, then per task ``head_layers`` 1x1
    convolutions ``head_channels -> ... -> out_per_task`` with ReLU between, DoDNet's generated head with learned
    weights. All tasks run as one grouped convolution per layer (group ``t``: task ``t``), on the flattened
    positions, so 2D and 3D share the code.

    ``(B, in_channels, *S) -> (B, T * out_per_task, *S)``.
    """

    def __init__(
        self, in_channels: int, num_tasks: int, *, head_channels: int = 8, head_layers: int = 3, out_per_task: int = 1
    ) -> None:
        super().__init__()
        if min(num_tasks, head_channels, head_layers, out_per_task) < 1:
            raise MedsslError("num_tasks, head_channels, head_layers and out_per_task must be >= 1")
        self.num_tasks, self.head_channels = num_tasks, head_channels
        self.reduce = nn.Conv1d(in_channels, head_channels, kernel_size=1)
        widths = [head_channels] * head_layers + [out_per_task]
        self.convs = nn.ModuleList(
            nn.Conv1d(num_tasks * i, num_tasks * o, kernel_size=1, groups=num_tasks)
            for i, o in itertools.pairwise(widths)
        )

    def forward(self, features: Tensor) -> Tensor:
        """Every task's logits (task ``t`` in channels ``t * out_per_task ...``)."""
        x = self.reduce(features.flatten(2)).repeat(1, self.num_tasks, 1)  # (B, T * head_channels, P)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.reshape(features.shape[0], -1, *features.shape[2:])


class SharedUNet(TaskOutputs):
    """An ``Encoder`` and the U-Net decoder, with the head a subclass sets (``self.head``: decoded -> logits); DoDNet
    and the static-head baselines build on it."""

    def __init__(
        self,
        encoder: Encoder,
        num_tasks: int,
        out_per_task: int,
        background_logit: bool,
        norm: str | None,
        act: str | None,
    ) -> None:
        if not isinstance(encoder, Encoder):
            raise MedsslError(f"{type(self).__name__} needs a medssl Encoder, got {type(encoder).__name__}")
        super().__init__(encoder.spatial_dims, encoder.in_channels, num_tasks, out_per_task, background_logit)
        norm = norm if norm is not None else str(getattr(encoder, "norm_name", "instance"))
        act = act if act is not None else str(getattr(encoder, "act_name", "leakyrelu"))
        self.encoder = encoder
        self.decoder = UNetDecoder(encoder.spatial_dims, encoder.channels, encoder.strides, norm, act)
        self.head: nn.Module = nn.Identity()

    @property
    def required_divisor(self) -> int:
        return self.encoder.required_divisor

    def forward_all(self, x: Tensor) -> Tensor:
        self.encoder.check_input(x)
        out: Tensor = self.head(self.decoder(self.encoder(x))[0])
        return out


class MultiHeadUNet(SharedUNet):
    """The shared U-Net with one static ``TaskHeads`` head per task (DoDNet's multi-head baseline).

    Args:
        encoder: any ``Encoder``.
        num_tasks: number of tasks ``T``.
        head_channels, head_layers, out_per_task: each task head's sizes (as DoDNet's generated head).
        background_logit: ``forward(x)`` puts a zero background logit first (label maps).
        norm, act: decoder norm and activation (default: the encoder's).
    """

    def __init__(
        self,
        encoder: Encoder,
        num_tasks: int,
        *,
        head_channels: int = 8,
        head_layers: int = 3,
        out_per_task: int = 1,
        background_logit: bool = False,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__(encoder, num_tasks, out_per_task, background_logit, norm, act)
        heads = TaskHeads(
            self.decoder.out_channels,
            num_tasks,
            head_channels=head_channels,
            head_layers=head_layers,
            out_per_task=out_per_task,
        )
        scale = encoder.strides[0]
        self.head = nn.Sequential(heads, layers.upsample(self.spatial_dims, scale)) if scale > 1 else heads


class SigmoidUNet(SharedUNet):
    """One U-Net with a sigmoid output per structure (MultiTalent-style; the loss masks unannotated ones).

    Args:
        encoder: any ``Encoder``.
        num_tasks, out_per_task: the structures are ``num_tasks * out_per_task`` output channels.
        background_logit: ``forward(x)`` puts a zero background logit first (label maps).
        norm, act: decoder norm and activation (default: the encoder's).
    """

    def __init__(
        self,
        encoder: Encoder,
        num_tasks: int,
        *,
        out_per_task: int = 1,
        background_logit: bool = False,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__(encoder, num_tasks, out_per_task, background_logit, norm, act)
        self.head = UNetHead(self.spatial_dims, self.decoder.out_channels, num_tasks * out_per_task, encoder.strides[0])


class SeparateUNets(TaskOutputs):
    """One U-Net per task (``networks[t]``: encoder ``encoders[t]``, ``out_per_task`` outputs); ``forward_all``
    concatenates their logits in task order.

    Args:
        encoders: one ``Encoder`` per task, same dimensionality and input channels.
        out_per_task: outputs of each network.
        background_logit: ``forward(x)`` puts a zero background logit first (label maps).
    """

    def __init__(self, encoders: Sequence[Encoder], *, out_per_task: int = 1, background_logit: bool = False) -> None:
        if not encoders or not all(isinstance(e, Encoder) for e in encoders):
            raise MedsslError("SeparateUNets needs one medssl Encoder per task")
        first = encoders[0]
        if any((e.spatial_dims, e.in_channels) != (first.spatial_dims, first.in_channels) for e in encoders):
            raise MedsslError("the encoders of SeparateUNets must share spatial_dims and in_channels")
        super().__init__(first.spatial_dims, first.in_channels, len(encoders), out_per_task, background_logit)
        self.networks = nn.ModuleList(SigmoidUNet(e, 1, out_per_task=out_per_task) for e in encoders)

    @property
    def required_divisor(self) -> int:
        return math.lcm(*(net.required_divisor for net in self._nets))

    def forward_all(self, x: Tensor) -> Tensor:
        return torch.cat([net.forward_all(x) for net in self._nets], dim=1)

    @property
    def _nets(self) -> list[SigmoidUNet]:
        return [net for net in self.networks if isinstance(net, SigmoidUNet)]
