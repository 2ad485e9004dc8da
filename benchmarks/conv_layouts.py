"""Convolution dispatch and memory layout on the CPU (issue 24): what `medssl.networks.layers.Conv3d` changes, and
what channels-last would change.

- **Inference, one tile**: a U-Net forward of a batch of one (and of two) through the standard convolution call
  (PyTorch's CPU dispatch; for a batch of one with small feature maps it picks its native kernel) and through
  ``torch.mkldnn_convolution`` (oneDNN), for the Hippocampus plan's 3D network (16-128 wide, 40x56x40) and the
  JSRT plan's 2D one (16-320 wide, 256x256). In 3D the standard call is medssl's network with its oneDNN branch
  disabled (``Conv3d._conv_forward`` replaced by ``nn.Conv3d``'s); in 2D, where medssl keeps ``nn.Conv2d``,
  the oneDNN side replaces its call by the direct one.
- **Training, channels-last weights**: one forward + backward (sum of squares of the logits) with the weights in
  contiguous and in channels-last layout (``torch.channels_last_3d`` / ``torch.channels_last``), for the
  Hippocampus network, a paper-sized 3D one (32-320 wide, 64^3) and the JSRT 2D one.

Per case the best of ``--repeats`` timings after one warm-up, the sides interleaved; writes
``benchmarks/results/conv_layouts.json``. Run it on a quiet machine::

    python benchmarks/conv_layouts.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from _common import write_result
from medssl.networks import layers
from medssl.networks.unet import build_unet

NETWORKS = {  # name: (spatial_dims, channels, input shape without the batch)
    "hippocampus-3d": (3, (16, 32, 64, 128), (1, 40, 56, 40)),
    "paper-3d": (3, (32, 64, 128, 256, 320), (1, 64, 64, 64)),
    "jsrt-2d": (2, (16, 32, 64, 128, 256, 320), (1, 256, 256)),
}


def best_of(repeats: int, fns: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Best seconds of each function over ``repeats`` interleaved rounds, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def _direct(self: nn.Conv2d, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 2D convolution through oneDNN, as ``layers.Conv3d`` does in 3D (to see whether 2D would gain)."""
    return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)


def inference(name: str, batch: int, repeats: int) -> dict[str, float]:
    dims, channels, shape = NETWORKS[name]
    net = build_unet(dims, 1, 3, channels=channels).eval()
    x = torch.randn(batch, *shape)
    cls = layers.Conv3d if dims == 3 else nn.Conv2d
    kept = cls._conv_forward
    ways = {"standard": nn.Conv3d._conv_forward if dims == 3 else kept, "onednn": kept if dims == 3 else _direct}

    def run(way: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            cls._conv_forward = way  # type: ignore[method-assign]
            try:
                with torch.no_grad():
                    net(x)
            finally:
                cls._conv_forward = kept  # type: ignore[method-assign]

        return call

    times = best_of(repeats, {k: run(way) for k, way in ways.items()})
    return {**times, "speedup": times["standard"] / times["onednn"]}


def training(name: str, batch: int, repeats: int) -> dict[str, float]:
    dims, channels, shape = NETWORKS[name]
    net = build_unet(dims, 1, 3, channels=channels)
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    last = copy.deepcopy(net).to(memory_format=layout)  # type: ignore[call-overload]
    x = torch.randn(batch, *shape)

    def step(model: nn.Module) -> Callable[[], None]:
        def call() -> None:
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

        return call

    times = best_of(repeats, {"contiguous": step(net), "channels_last": step(last)})
    return {**times, "speedup": times["contiguous"] / times["channels_last"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"inference": {}, "training": {}}
    for name, batch in (("hippocampus-3d", 1), ("hippocampus-3d", 2), ("jsrt-2d", 1)):
        results["inference"][f"{name} batch {batch}"] = found = inference(name, batch, args.repeats)
        print("inference", name, batch, found, flush=True)
    for name, batch in (("hippocampus-3d", 2), ("paper-3d", 2), ("jsrt-2d", 4)):
        results["training"][f"{name} batch {batch}"] = found = training(name, batch, args.repeats)
        print("training", name, batch, found, flush=True)
    settings = {**vars(args), "networks": {k: {"spatial_dims": d, "channels": c, "input": s} for k, (d, c, s) in
                                           NETWORKS.items()}}  # fmt: skip
    write_result("conv_layouts", settings, results)


if __name__ == "__main__":
    main()
