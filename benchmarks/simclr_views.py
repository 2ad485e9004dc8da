"""Does SimCLR learn on JSRT at batch 4 with easier views? NT-Xent over the first steps for three view settings.

    python benchmarks/simclr_views.py --steps 60

The label-efficiency grid's SimCLR stays at chance (ln 7 at batch 4) for 300 steps with the default views
(crops 60-100 %). This trains a fresh SimCLR (the JSRT plan's encoder, 16-320 at 256x256) on 64 JSRT images with
no augmentation, with crops of 80-100 %, and with the default views, and records the loss every 20 steps.
The steps are the engine's (``fit_in_memory``), the first ``--steps`` of the grid's pretraining run: AdamW at
1e-3, weight decay 1e-5, cosine decay over ``--run-steps`` after ``--warmup-steps`` of warm-up, views from torch's
global generator. (The recorded result predates this: a hand-written loop at a constant 1e-3 whose views came
from the batch generator, so a rerun differs in its details.)
Writes benchmarks/results/simclr_views_jsrt.json.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from _common import DATA, require, write_result
from medssl.data.io import read_image
from medssl.engine.fit_in_memory import fit_in_memory
from medssl.pretrain.augment import RandomViews
from medssl.pretrain.simclr import SimCLR

CHANNELS = (16, 32, 64, 128, 256, 320)


def images(n: int, size: int) -> Tensor:
    """The first ``n`` JSRT images by name, area-resized to ``size``, z-scored over the set: ``(n, 1, size, size)``."""
    paths = sorted((require(DATA / "jsrt") / "images").glob("*.png"))[:n]
    stack = []
    for path in paths:
        array = torch.from_numpy(np.asarray(read_image(path)[0], dtype=np.float32))
        stack.append(F.interpolate(array.reshape(1, 1, *array.shape[-2:]), size=(size, size), mode="area")[0])
    x = torch.stack(stack)
    return (x - x.mean()) / x.std()


def identity_views(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    return x, x


def train(data: Tensor, views: Callable[..., tuple[Tensor, Tensor]], args: argparse.Namespace) -> list[float]:
    """The mean NT-Xent of every 20 steps of a fresh SimCLR trained on random batches of ``data``."""
    torch.manual_seed(0)
    method = SimCLR(2, 1, CHANNELS, views=views)
    generator = torch.Generator().manual_seed(0)
    losses: list[float] = []

    def draw(step: int) -> Tensor:
        return data[torch.randint(0, len(data), (args.batch,), generator=generator)]

    def report(step: int, step_losses: dict[str, float]) -> None:
        losses.append(step_losses["loss"])
        if (step + 1) % 20 == 0:
            print(f"step {step + 1}: mean NT-Xent of the last 20 steps {np.mean(losses[-20:]):.4f}", flush=True)

    fit_in_memory(
        method,
        draw,
        steps=args.steps,
        max_steps=args.run_steps,
        lr=1e-3,
        warmup_steps=args.warmup_steps,
        on_step=report,
    )
    return [float(np.mean(losses[k - 20 : k])) for k in range(20, len(losses) + 1, 20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--run-steps", type=int, default=300, help="length of the run (its schedule) they start")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = images(args.images, 256)
    settings: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
        "no augmentation": identity_views,
        "crops 80-100 %": RandomViews(crop_scale=(0.8, 1.0)),
        "default views (crops 60-100 %)": RandomViews(),
    }
    results = {}
    for name, views in settings.items():
        print(name)
        results[name] = train(data, views, args)
    write_result(
        "simclr_views_jsrt",
        settings={**vars(args), "channels": list(CHANNELS), "size": 256, "lr": 1e-3, "schedule": "cosine", "every": 20},
        results={"chance": math.log(2 * args.batch - 1), "mean_loss_every_20_steps": results},
    )


if __name__ == "__main__":
    main()
