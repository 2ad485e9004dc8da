"""Step time and memory of PGL's paper preset (3D ResNet-50, output stride (16, 16, 8), heads 4096 / 256) beside
BYOL with the same encoder and heads.

A step = views + forward + backward + AdamW step + EMA update, the engine's step (``fit_in_memory``), on random
volumes (the cost does not depend on the content). On a GPU the paper's patch, 128x128x64 in medssl's (x, y, z)
order (64 slices), fits; on a CPU one step at that size takes tens of seconds, so the default there is a reduced
patch. Writes
benchmarks/results/pgl_paper_preset_<device>.json.

    OMP_NUM_THREADS=2 python benchmarks/pgl_paper_preset.py                       # CPU, 64x64x32, batch 2
    python benchmarks/pgl_paper_preset.py --shape 128 128 64 --batch 4 --steps 200  # on a GPU
"""

from __future__ import annotations

import argparse
import resource
import statistics

import torch

from _common import write_result
from medssl.engine.fit_in_memory import fit_in_memory
from medssl.networks.resnet import resnet_encoder
from medssl.pretrain import BYOL, PGL, PretrainMethod


def _time_steps(
    method: PretrainMethod, batch: torch.Tensor, steps: int, device: torch.device, precision: str
) -> list[float]:
    """Seconds of ``steps`` engine steps (the device synchronised at both ends of each), after one uncounted step
    (allocator, kernel selection)."""
    record = fit_in_memory(method, batch, steps=steps + 1, lr=1e-4, precision=precision, accelerator=device.type)
    return record.seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=3, default=None, help="patch, (x, y, z) (default 128 128 64 on a GPU, else 64 64 32)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method (after one warm-up step)")
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--methods", default="byol,pgl")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = args.shape or ([128, 128, 64] if device.type == "cuda" else [64, 64, 32])
    torch.manual_seed(0)
    batch = torch.rand(args.batch, 1, *shape, device=device)
    results: dict[str, dict[str, float | list[float]]] = {}
    for name in args.methods.split(","):
        encoder = resnet_encoder("resnet50", 3, 1, output_stride=(16, 16, 8))
        method: PretrainMethod
        if name == "pgl":
            method = PGL(encoder=encoder, preset="paper")
        else:
            method = BYOL(encoder=encoder, hidden_dim=4096, projection_dim=256)
        method.to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = _time_steps(method, batch, args.steps, device, args.precision)
        results[name] = {
            "step_s_median": statistics.median(times),
            "steps_s": [round(t, 4) for t in times],
            "parameters_m": sum(p.numel() for p in method.parameters()) / 1e6,
        }
        if device.type == "cuda":
            results[name]["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"{name}: {statistics.median(times):.3f} s per step", flush=True)
        del method
    # ru_maxrss is in KiB on Linux: the peak of the whole process, i.e. of the larger of the two methods.
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    settings = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "patch": shape,
        "batch": args.batch,
        "steps": args.steps,
        "precision": args.precision,
        "encoder": "resnet50, output stride (16, 16, 8)",
        "heads": [4096, 256],
        "threads": torch.get_num_threads(),
    }
    write_result(f"pgl_paper_preset_{device.type}", settings, {**results, "peak_process_rss_gib": peak_rss_gib})


if __name__ == "__main__":
    main()
