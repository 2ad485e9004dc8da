"""DoDNet's dynamic head (Zhang et al. 2021, public code jianpengz/DoDNet ``a_DynConv``) and the network around it.

A controller maps ``cat(pooled bottleneck, task one-hot)`` to the weights and biases of a small stack of 1x1
convolutions (8 -> 8 -> 8 -> 2 by default: 8*8 + 8*8 + 8*2 weights and 8 + 8 + 2 biases, 162 numbers per sample),
which then segment the decoder's features, reduced to ``head_channels`` by a 1x1 convolution. Every sample gets its
own generated head, applied to the whole batch as one grouped convolution.

A 1x1 convolution does not mix positions, so the grouped convolution runs on the flattened spatial axes
(``conv1d``, kernel 1): the same numbers for 2D and 3D without branching on the number of dimensions.

In the public code the two output channels of a task are two binary structures of one dataset (organ and tumour,
each with a sigmoid, Dice + BCE per channel; a channel whose structure the dataset lacks is filled with -1 and
left out of the loss), not background / foreground. ``out_per_task`` sets that number here.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medssl.errors import MedsslError
from medssl.networks import layers
from medssl.networks.encoders import Encoder
from medssl.networks.task_outputs import SharedUNet

__all__ = ["DoDNet", "DynamicHead"]


class DynamicHead(nn.Module):
    """Task-conditioned head whose 1x1 convolutions are generated per sample.

    ``forward(features (B, in_channels, *S), task_onehot (B, T), pooled (B, bottleneck_channels))`` ->
    ``(B, out_per_task, *S)`` logits of each sample's task.

    Args:
        in_channels: width of the decoder features.
        bottleneck_channels: width of the pooled bottleneck feature.
        num_tasks: number of tasks ``T`` (the width of the one-hot code).
        head_channels: width of the reduced features and of the hidden generated layers (DoDNet: 8).
        head_layers: number of generated 1x1 convolutions, ReLU between them (DoDNet: 3).
        out_per_task: logit channels per task (DoDNet: 2, two sigmoid structures).

    Attributes:
        reduce: the 1x1 convolution ``in_channels -> head_channels`` (``precls_conv`` of the public code).
        controller: the linear map ``bottleneck_channels + T -> n_generated`` (a 1x1 convolution on a 1x1 map).
        sizes: ``(in, out)`` of each generated layer.
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        num_tasks: int,
        *,
        head_channels: int = 8,
        head_layers: int = 3,
        out_per_task: int = 2,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_tasks", num_tasks),
            ("head_channels", head_channels),
            ("head_layers", head_layers),
            ("out_per_task", out_per_task),
        ):
            if value < 1:
                raise MedsslError(f"{name} must be >= 1, got {value}")
        self.num_tasks, self.head_channels, self.out_per_task = num_tasks, head_channels, out_per_task
        widths = [head_channels] * head_layers + [out_per_task]
        self.sizes: list[tuple[int, int]] = list(itertools.pairwise(widths))
        # the reduction is dimension-agnostic too: 1x1, so conv1d on flattened positions
        self.reduce = nn.Conv1d(in_channels, head_channels, kernel_size=1)
        self.controller = nn.Linear(bottleneck_channels + num_tasks, self.n_generated)

    @property
    def n_generated(self) -> int:
        """Numbers the controller generates per sample: every generated layer's weights and biases."""
        return sum(i * o + o for i, o in self.sizes)

    def parameters_for(self, pooled: Tensor, task_onehot: Tensor) -> Tensor:
        """The generated head of each sample, ``(N, n_generated)``, from ``pooled`` ``(N, Cb)`` and the one-hot
        ``(N, T)``."""
        out: Tensor = self.controller(torch.cat((pooled, task_onehot.to(pooled.dtype)), dim=1))
        return out

    def apply_heads(self, features: Tensor, params: Tensor) -> Tensor:
        """Run sample ``n``'s generated head (``params[n]``) on ``features[n]`` (already reduced,
        ``(N, head_channels, *S)``), all samples in one grouped convolution per layer: ``(N, out_per_task, *S)``."""
        n, spatial = features.shape[0], features.shape[2:]
        if params.shape != (n, self.n_generated):
            raise MedsslError(f"expected generated parameters ({n}, {self.n_generated}), got {tuple(params.shape)}")
        x = features.reshape(1, n * features.shape[1], -1)  # (1, N * C, P): sample n is group n
        weights = [i * o for i, o in self.sizes]
        chunks = params.split(weights + [o for _, o in self.sizes], dim=1)
        for layer, (i, o) in enumerate(self.sizes):
            w = chunks[layer].reshape(n * o, i, 1)
            b = chunks[len(self.sizes) + layer].reshape(n * o)
            x = F.conv1d(x, w, b, groups=n)
            if layer < len(self.sizes) - 1:
                x = F.relu(x)
        return x.reshape(n, self.out_per_task, *spatial)

    def reduced(self, features: Tensor) -> Tensor:
        """``features`` ``(B, in_channels, *S)`` reduced to ``(B, head_channels, *S)``."""
        flat: Tensor = self.reduce(features.flatten(2))
        return flat.reshape(features.shape[0], self.head_channels, *features.shape[2:])

    def forward(self, features: Tensor, task_onehot: Tensor, pooled: Tensor) -> Tensor:
        """Logits ``(B, out_per_task, *S)`` of the task ``task_onehot[b]`` names, for each sample ``b``."""
        return self.apply_heads(self.reduced(features), self.parameters_for(pooled, task_onehot))

    def forward_all(self, features: Tensor, pooled: Tensor) -> Tensor:
        """Logits of every task, ``(B, T * out_per_task, *S)`` (task ``t``'s in channels ``t * out_per_task ...``),
        in one grouped convolution over the ``B * T`` (sample, task) pairs."""
        b, t = features.shape[0], self.num_tasks
        onehot = torch.eye(t, dtype=pooled.dtype, device=pooled.device)
        params = self.parameters_for(pooled.repeat_interleave(t, dim=0), onehot.repeat(b, 1))  # sample-major
        logits = self.apply_heads(self.reduced(features).repeat_interleave(t, dim=0), params)
        return logits.reshape(b, t * self.out_per_task, *features.shape[2:])


class DoDNet(SharedUNet):
    """DoDNet: a shared encoder-decoder (the project's U-Net decoder on any ``Encoder``) and a ``DynamicHead``.

    ``forward(x, task)`` gives ``(B, out_per_task, *S)`` logits of each sample's task ``task[b]``;
    ``forward(x)`` (no task) gives every task's logits, ``(B, T * out_per_task, *S)``, from one batched pass
    (``forward_all``), with a zero background logit in front when ``background_logit``, so that a sliding window
    predicts every structure at once and ``UNet``'s callers (``predict_logits``) can use it as is.

    Args:
        encoder: any ``Encoder`` implementation (only its contract is used).
        num_tasks: number of tasks ``T``.
        head_channels, head_layers, out_per_task: the dynamic head's sizes (see ``DynamicHead``).
        background_logit: ``forward(x)`` puts a channel of zeros first: the softmax of a label map then picks the
            class of the highest positive logit, background where none is positive.
        norm: decoder norm; defaults to the encoder's ``norm_name`` if it has one, else ``"instance"``.
        act: decoder activation; defaults to the encoder's ``act_name`` if it has one, else ``"leakyrelu"``.

    Attributes:
        encoder, decoder (``UNetDecoder``), head (``DynamicHead``); spatial_dims, in_channels, num_tasks,
        out_per_task; out_channels: channels of ``forward(x)``.
    """

    def __init__(
        self,
        encoder: Encoder,
        num_tasks: int,
        *,
        head_channels: int = 8,
        head_layers: int = 3,
        out_per_task: int = 2,
        background_logit: bool = False,
        norm: str | None = None,
        act: str | None = None,
    ) -> None:
        super().__init__(encoder, num_tasks, out_per_task, background_logit, norm, act)
        self.head: DynamicHead = DynamicHead(
            self.decoder.out_channels,
            encoder.out_channels,
            num_tasks,
            head_channels=head_channels,
            head_layers=head_layers,
            out_per_task=out_per_task,
        )
        scale = encoder.strides[0]
        self.up: nn.Module = layers.upsample(self.spatial_dims, scale) if scale > 1 else nn.Identity()

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.encoder.check_input(x)
        features = self.encoder(x)
        return self.decoder(features)[0], self.encoder.pool(features)

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        """Logits of task ``task[b]`` for each image ``x[b]`` (``task``: ``(B,)`` indices), ``(B, out_per_task,
        *S)``; without ``task``, every task's (see the class)."""
        if task is None:
            return super().forward(x)
        task = torch.as_tensor(task, device=x.device).long().reshape(-1)
        if task.shape[0] != x.shape[0] or task.min() < 0 or task.max() >= self.num_tasks:
            raise MedsslError(f"need one task index in [0, {self.num_tasks}) per image, got {task.tolist()}")
        decoded, pooled = self._encode(x)
        onehot = nn.functional.one_hot(task, self.num_tasks)
        out: Tensor = self.up(self.head(decoded, onehot, pooled))
        return out

    def forward_all(self, x: Tensor) -> Tensor:
        """Logits of every task, ``(B, T * out_per_task, *S)``: task ``t`` in channels ``t * out_per_task ...``;
        one encoder-decoder pass and one grouped convolution per head layer over all (image, task) pairs."""
        decoded, pooled = self._encode(x)
        out: Tensor = self.up(self.head.forward_all(decoded, pooled))
        return out
