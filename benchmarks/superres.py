"""SERAN super-resolution on real MR (issue 20): bicubic, a plain residual CNN (edsr) and SERAN at x2, x3, x4.

Training: the BraTS 2015 ``train/`` + ``validation/`` cases, FLAIR and T1c volumes (linked into ``<work>/train_data``);
validation is one whole subject (both contrasts: the smallest ``split_seed`` that keeps each subject on one side).
Testing, never trained on: the BraTS ``test/`` cases, the DICOM MR study's series (another scanner and contrast; the
hippocampus crop, a slice side below ``--min-side``, is left out) and nilearn's MNI152 template. Each test volume is
normalised by the systems' rule, sliced along its axis of largest spacing; at most ``--test-slices`` slices with >= 5 %
foreground, evenly spaced, are degraded (antialiased bicubic) and super-resolved. PSNR and SSIM on [0, 1], over the
whole slice and inside the foreground (``medssl.superres.foreground`` of the truth volume).

Statistics: means over slices; seran against edsr paired per slice, per seed (sign) and over the seed-mean (95 %
bootstrap CI, volumes resampled then slices within them). Step time: median of 20 steps on random training-shaped
batches. Finished runs are reused, interrupted ones resumed, test scores cached in ``<work>/scores``. Usage::

    python benchmarks/superres.py --scales 2,3,4 --seeds 0,1,2 --methods bicubic,edsr,seran --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

import _common
from _common import DATA, RESULTS, ROOT, require, write_result
from medssl.data.io import read_image
from medssl.errors import MedsslError
from medssl.metrics.image_quality import psnr, ssim
from medssl.superres import crop_to_multiple, foreground, make_pair, split_volumes
from medssl.superres.system import DATA_RANGE, build, normalise
from medssl.superres.workflow import resolve_axis

CONTRASTS = {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"}
METRICS = ("psnr", "ssim", "psnr_fg", "ssim_fg")
# One (method, scale, seed) run takes ~3-6 min at 1 CPU thread: a narrow, short trunk, small patches and batches,
# stopped at a validation-PSNR plateau (3 validations without gain) or max_steps.
NETWORK: dict[str, Any] = {"width": 32, "groups": 2, "blocks": 2, "descriptors": 8}
LIGHT: dict[str, Any] = {**NETWORK, "patch_size": 48, "batch_size": 8, "lr": 5e-4, "max_steps": 2000}
LIGHT.update({"val_interval": 200, "patience": 3, "max_val_slices": 16, "val_fraction": 0.25})
Pair = dict[str, Any]  # one test slice: volume (index), lr, hr, fg (foreground of hr)


def stage_training(source: Path, work: Path) -> tuple[Path, list[str]]:
    """``<work>/train_data``: links to the train + validation volumes, ``<case>_<contrast>.nii.gz`` (never test)."""
    folder = work / "train_data"
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for part in ("train", "validation"):
        for case in sorted(p for p in (source / part).iterdir() if p.is_dir()):
            for contrast, name in CONTRASTS.items():
                link = folder / f"{case.name}_{contrast}.nii.gz"
                if not link.exists():
                    link.symlink_to((case / name).resolve())
                ids.append(f"{case.name}_{contrast}")
    return folder, sorted(ids)


def subject_split_seed(ids: list[str], val_fraction: float, tries: int = 1000) -> int:
    """The smallest ``split_seed`` whose volume split (``split_volumes``) puts no subject (the id without its
    ``_<contrast>``) on both sides.

    Raises:
        MedsslError: no such seed among the first ``tries``.
    """
    for seed in range(tries):
        split = split_volumes(ids, 0.0, val_fraction, seed=seed)
        if not {i.rsplit("_", 1)[0] for i in split.train} & {i.rsplit("_", 1)[0] for i in split.val}:
            return seed
    raise MedsslError(f"no split_seed below {tries} keeps each subject on one side: change val_fraction")


def load_test_sources(min_side: int) -> dict[str, list[tuple[str, np.ndarray, int]]]:
    """``source -> [(name, normalised volume, slicing axis)]`` for the three test sources."""
    sources: dict[str, list[tuple[str, np.ndarray, int]]] = {"brats-test": [], "dicom-mr": [], "left-out": []}
    brats = require(DATA / "brats2015" / "test")
    for case in sorted(p for p in brats.iterdir() if p.is_dir()):
        for contrast, name in CONTRASTS.items():
            image, meta = read_image(case / name)
            sources["brats-test"].append(prepared(f"{case.name}_{contrast}", image[0], meta.spacing))
    for series in sorted(p for p in require(DATA / "dicom-mr-study").iterdir() if p.is_dir()):
        image, meta = read_image(series)
        entry = prepared(series.name, image[0], meta.spacing)
        inplane = np.delete(entry[1].shape, entry[2])
        sources["dicom-mr" if min(inplane) >= min_side else "left-out"].append(entry)
    print(f"left out (slice side < {min_side}): {[v[0] for v in sources.pop('left-out', [])]}", flush=True)
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=1)
    sources["mni152"] = [prepared("mni152_1mm", template.get_fdata(), template.header.get_zooms()[:3])]
    return sources


def prepared(name: str, volume: np.ndarray, spacing: Any) -> tuple[str, np.ndarray, int]:
    """``(name, volume normalised by the systems' rule, the "auto" slicing axis)``."""
    return name, normalise(volume), resolve_axis("auto", tuple(float(s) for s in spacing))


def slice_pairs(volumes: list[tuple[str, np.ndarray, int]], scale: int, max_slices: int) -> list[Pair]:
    """The test pairs: per volume at most ``max_slices`` kept slices (>= 5 % foreground), evenly spaced."""
    pairs = []
    for k, (_, volume, axis) in enumerate(volumes):
        slices = np.moveaxis(volume, axis, 0)
        masks = np.moveaxis(foreground(volume), axis, 0)
        kept = [z for z in range(slices.shape[0]) if masks[z].mean() >= 0.05]
        spaced = np.linspace(0, len(kept) - 1, min(max_slices, len(kept))).round().astype(int)
        for z in sorted({kept[i] for i in spaced}):
            lr, hr = make_pair(slices[z], scale)
            pairs.append({"volume": k, "slice": z, "lr": lr, "hr": hr, "fg": crop_to_multiple(masks[z], scale) > 0})
    return pairs


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The no-training baseline: bicubic upsampling (``align_corners=False``, the degradation's grid), clipped."""
    up = F.interpolate(torch.from_numpy(np.asarray(lr, np.float32))[None, None], scale_factor=scale, mode="bicubic")
    return up[0, 0].clamp(0.0, DATA_RANGE).numpy()


def scores(pred: np.ndarray, pair: Pair) -> dict[str, float]:
    """PSNR and SSIM of one slice on [0, 1], whole and inside the truth's foreground."""
    masks, metrics = (("", None), ("_fg", pair["fg"])), (("psnr", psnr), ("ssim", ssim))
    return {name + tag: f(pred, pair["hr"], DATA_RANGE, m) for tag, m in masks for name, f in metrics}


def predict(run: Path | None, pairs: list[Pair], scale: int) -> list[np.ndarray]:
    """Super-resolved slices: bicubic when ``run`` is None, else the run's network, slice by slice."""
    if run is None:
        return [bicubic(p["lr"], scale) for p in pairs]
    from medssl.superres.applying import load_model

    system, _ = load_model(run)
    with torch.no_grad():
        return [system.predict(torch.from_numpy(p["lr"].astype(np.float32))[None, None])[0, 0].numpy() for p in pairs]


def score_run(run: Path | None, tests: dict[str, list[Pair]], scale: int, cache: Path) -> dict[str, Any]:
    """``source -> {"volume": [...], metric: [per slice]}``, cached in ``cache`` (recomputed when the slices or the
    run, its ``result.json``, differ)."""
    key: dict[str, Any] = {s: [[p["volume"], p["slice"]] for p in pairs] for s, pairs in tests.items()}
    key["run"] = None if run is None else (run / "result.json").read_text()
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored["key"] == key:
            return dict(stored["scores"])
    result: dict[str, Any] = {}
    for source, pairs in tests.items():
        rows = [scores(pred, pair) for pred, pair in zip(predict(run, pairs, scale), pairs, strict=True)]
        result[source] = {"volume": [p["volume"] for p in pairs], **{m: [r[m] for r in rows] for m in METRICS}}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "scores": result}))
    return result


def bootstrap_ci(values: np.ndarray, volumes: np.ndarray, n: int = 2000, seed: int = 0) -> list[float]:
    """95 % CI of the mean of per-slice ``values`` by a two-level bootstrap: volumes with replacement, then slices
    within each drawn volume (slices of one volume are correlated; a flat bootstrap would be too narrow)."""
    rng = np.random.default_rng(seed)
    groups = [values[volumes == v] for v in np.unique(volumes)]
    means = np.empty(n)
    for b in range(n):
        drawn = [groups[i] for i in rng.integers(0, len(groups), len(groups))]
        means[b] = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in drawn]).mean()
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """``a - b`` per slice for one source: per seed (a's seed k against b's seed k) and of the seed means.

    Args:
        a, b: per seed, one source's scores (``{"volume": [...], metric: [...]}``), seeds in the same order; ``b``
            may hold one entry (a method without seeds, bicubic), used against every seed of ``a``.
    """
    per_seed = [np.asarray(x[metric]) - np.asarray(b[min(i, len(b) - 1)][metric]) for i, x in enumerate(a)]
    mean_diff = np.mean(per_seed, axis=0)
    signs = [int(np.sign(d.mean())) for d in per_seed]
    return {
        "mean": float(mean_diff.mean()),
        "ci95": bootstrap_ci(mean_diff, np.asarray(a[0]["volume"])),
        "per_seed": [float(d.mean()) for d in per_seed],
        "sign_per_seed": signs,
        "sign_holds": len(set(signs)) == 1 and signs[0] != 0,
        "slices_better": float(np.mean(mean_diff > 0)),
    }


def train_once(data: Path, runs: Path, method: str, scale: int, seed: int, options: dict[str, Any]) -> Path:
    """``superres.train`` into ``runs/<method>_x<scale>_seed<seed>`` unless finished (``result.json``); an
    interrupted run is resumed."""
    run = runs / f"{method}_x{scale}_seed{seed}"
    if (run / "result.json").is_file():
        return run
    from medssl.superres import train

    print(f"train {method} x{scale} seed {seed}", flush=True)
    last = (run / "checkpoints" / "last.ckpt").is_file()
    train(data, run, system=method, scale=scale, seed=seed, resume=last, overwrite=run.is_dir() and not last,
          quiet=True, accelerator="cpu", **options)  # fmt: skip
    return run


def step_time(method: str, scale: int, options: dict[str, Any], steps: int = 20) -> dict[str, float]:
    """Median seconds per optimiser step (forward, L1, backward, AdamW) on a random training-shaped batch, and
    the parameter count. Timed apart from training so that validation and data loading do not count."""
    system = build(method, scale, {k: options[k] for k in NETWORK})
    optimiser = torch.optim.AdamW(system.parameters(), lr=1e-4)
    p, b = options["patch_size"], options["batch_size"]
    batch = {"image": torch.rand(b, 1, p // scale, p // scale), "high_res": torch.rand(b, 1, p, p)}
    times = []
    for i in range(steps + 5):
        started = time.perf_counter()
        loss = system.training_step(batch, i)["loss"]  # type: ignore[arg-type]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if i >= 5:
            times.append(time.perf_counter() - started)
    return {"s_per_step": float(np.median(times)), "parameters": sum(q.numel() for q in system.parameters())}


def summarise(all_scores: dict[str, list[dict[str, Any]]], sources: list[str]) -> dict[str, Any]:
    """Per method and source: each metric's mean over slices (per seed, their mean and spread over seeds)."""
    table: dict[str, Any] = {}
    for method, per_seed in all_scores.items():
        table[method] = {}
        for source in sources:
            row: dict[str, Any] = {"slices": len(per_seed[0][source]["psnr"])}
            for metric in METRICS:
                means = [float(np.mean(s[source][metric])) for s in per_seed]
                row[metric] = {"mean": float(np.mean(means)), "per_seed": means, "sd": float(np.std(means))}
            table[method][source] = row
    return table


def comparisons(all_scores: dict[str, list[dict[str, Any]]], sources: list[str]) -> dict[str, Any]:
    """seran - edsr and seran - bicubic (and rcan - edsr), paired per slice, for each source and metric."""
    pairs = [("seran", "edsr"), ("seran", "bicubic"), ("rcan", "edsr"), ("edsr", "bicubic")]
    out: dict[str, Any] = {}
    for a, b in pairs:
        if a in all_scores and b in all_scores:
            out[f"{a}-{b}"] = {
                source: {
                    metric: paired([s[source] for s in all_scores[a]], [s[source] for s in all_scores[b]], metric)
                    for metric in METRICS
                }
                for source in sources
            }
    return out


def save_figure(path: Path, pair: Pair, images: dict[str, np.ndarray], title: str) -> Path:
    """One slice: LR input (pixels enlarged), ``images`` (bicubic, edsr, seran: those given), truth; below,
    |method - truth| and seran - edsr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hr = pair["hr"]
    scale = hr.shape[0] // pair["lr"].shape[0]
    methods = [m for m in ("bicubic", "edsr", "seran") if m in images]
    top = [("LR input", np.kron(pair["lr"], np.ones((scale, scale))))]
    top += [(f"{m} {psnr(images[m], hr, DATA_RANGE):.2f} dB", images[m]) for m in methods] + [("truth", hr)]
    fig, axes = plt.subplots(2, len(top), figsize=(2.4 * len(top), 5.0), squeeze=False)
    for ax, (name, image) in zip(axes[0], top, strict=True):
        ax.imshow(image.T, cmap="gray", vmin=0, vmax=1, origin="lower")
        ax.set_title(name, fontsize=8)
    bottom = [(f"|{m} - truth|", np.abs(images[m] - hr), "magma", 0.0, 0.2) for m in methods]
    if "seran" in images and "edsr" in images:
        bottom.append(("seran - edsr", images["seran"] - images["edsr"], "coolwarm", -0.05, 0.05))
    for ax, (name, image, cmap, low, high) in zip(axes[1, 1:], bottom, strict=False):
        ax.imshow(image.T, cmap=cmap, vmin=low, vmax=high, origin="lower")
        ax.set_title(name, fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)
    return path


def targets(table: dict[str, Any], comparison: dict[str, Any], sources: list[str]) -> dict[str, Any]:
    """The issue's targets, computed: SERAN >= bicubic + 2 dB PSNR at x2 on every source; SERAN above EDSR in PSNR
    with a positive paired difference in every seed, per scale and source."""
    out: dict[str, Any] = {}
    if "x2" in table and {"seran", "bicubic"} <= set(table["x2"]):
        gain = {s: table["x2"]["seran"][s]["psnr"]["mean"] - table["x2"]["bicubic"][s]["psnr"]["mean"] for s in sources}
        out["seran_ge_bicubic_plus_2db_x2"] = {"gain_db": gain, "met": all(g >= 2.0 for g in gain.values())}
    cells = {
        f"{scale}/{s}": all(sign > 0 for sign in c["seran-edsr"][s]["psnr"]["sign_per_seed"])
        for scale, c in comparison.items()
        if "seran-edsr" in c
        for s in sources
    }
    if cells:
        seeds = min(len(c["seran-edsr"][sources[0]]["psnr"]["per_seed"]) for c in comparison.values())
        out["seran_above_edsr_every_seed"] = {"cells": cells, "seeds": seeds, "met": seeds >= 3 and all(cells.values())}
    return out


def run_scale(args: Any, scale: int, data: Path, volumes: dict[str, Any], options: dict[str, Any]) -> Any:
    """Train (or reuse) every run of one scale, score every method on the test slices; the figure at the top scale.

    Returns:
        ``(summary table, paired comparisons, step times and run facts)`` of this scale.
    """
    work, sources = args.work, list(volumes)
    tests = {s: slice_pairs(v, scale, args.test_slices) for s, v in volumes.items()}
    all_scores: dict[str, list[dict[str, Any]]] = {}
    timing: dict[str, Any] = {}
    runs: dict[str, list[Path]] = {}
    for method in args.methods.split(","):
        if method == "bicubic":
            all_scores[method] = [score_run(None, tests, scale, work / "scores" / f"bicubic_x{scale}.json")]
            continue
        runs[method] = [train_once(data, work / "runs", method, scale, s, options) for s in args.seeds]
        all_scores[method] = [score_run(r, tests, scale, work / "scores" / f"{r.name}.json") for r in runs[method]]
        facts = [json.loads((r / "result.json").read_text()) for r in runs[method]]
        timing[method] = {
            **step_time(method, scale, options),
            "run_s_per_step": [f["train_seconds"] / max(1, f["global_step"]) for f in facts],
            **{k: [f[k] for f in facts] for k in ("global_step", "stopped", "best_val_psnr")},
        }
    if scale == max(args.scales) and "brats-test" in tests:
        pair = tests["brats-test"][len(tests["brats-test"]) // 2]
        images = {"bicubic": predict(None, [pair], scale)[0]}
        images.update({m: predict(r[0], [pair], scale)[0] for m, r in runs.items()})
        title = f"x{scale}, BraTS test {volumes['brats-test'][pair['volume']][0]} slice {pair['slice']}, seed 0"
        save_figure(args.out_dir / f"{args.name}.png", pair, images, title)
    return summarise(all_scores, sources), comparisons(all_scores, sources), timing


def run(args: argparse.Namespace) -> None:
    """Stage the data, run every scale, compute the targets and write ``<out-dir>/<name>.json``."""
    torch.set_num_threads(args.threads)
    data, ids = stage_training(require(DATA / "brats2015"), args.work)
    if any("=" not in text for text in args.set):
        raise SystemExit(f"error: --set takes key=value, not {args.set}")
    options = {**LIGHT, **{k: yaml.safe_load(v) for k, _, v in (text.partition("=") for text in args.set)}}
    if args.max_steps is not None:
        options["max_steps"] = args.max_steps
    options["split_seed"] = subject_split_seed(ids, options["val_fraction"])
    split = split_volumes(ids, 0.0, options["val_fraction"], seed=options["split_seed"])
    volumes = load_test_sources(args.min_side)
    table, comparison, timing = {}, {}, {}
    for scale in args.scales:
        key = f"x{scale}"
        table[key], comparison[key], timing[key] = run_scale(args, scale, data, volumes, options)
    settings = {
        "train_options": options,
        "train_volumes": list(split.train),
        "val_volumes": list(split.val),
        "test_volumes": {s: [v[0] for v in vs] for s, vs in volumes.items()},
        "degradation": "bicubic (antialiased), in-plane, slices along the axis of largest spacing",
        "intensity": "per volume, clipped to [p0.5, foreground p99.5] and scaled to [0, 1]; metrics on [0, 1]",
        **{k: v for k, v in vars(args).items() if k in ("scales", "seeds", "methods", "threads", "test_slices")},
        **{"min_side": args.min_side, "work": str(args.work)},
    }
    results = {"summary": table, "paired": comparison, "timing": timing, "figure": f"{args.name}.png"}
    results["targets"] = targets(table, comparison, list(volumes))
    _common.RESULTS = args.out_dir  # write_result writes into _common.RESULTS (a smoke run: elsewhere)
    write_result(args.name, settings, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda text: [int(t) for t in text.split(",")]  # noqa: E731
    parser.add_argument("--scales", type=ints, default=[2, 3, 4])
    parser.add_argument("--seeds", type=ints, default=[0, 1, 2])
    parser.add_argument("--methods", default="bicubic,edsr,seran", help="of bicubic, edsr, seran, rcan")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help=f"default {LIGHT['max_steps']}")
    parser.add_argument("--set", action="append", default=[], help="training option key=value (width, lr, ...)")
    parser.add_argument("--test-slices", type=int, default=16, help="at most this many slices per test volume")
    parser.add_argument("--min-side", type=int, default=64, help="leave out test series with a smaller slice")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "superres")
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="elsewhere for a smoke run")
    parser.add_argument("--name", default="superres")
    try:
        run(parser.parse_args())
    except MedsslError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
