"""Rebuild the tables of docs/benchmarks.md from benchmarks/results/*.json (between the marker lines), and
draw the time-to-Dice curves into docs/time_to_dice.png.

    python benchmarks/summarize.py
"""

from __future__ import annotations

import csv
import json
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from _common import RESULTS, ROOT
from medssl.engine.experiment_report import spread_text

DOC = ROOT / "docs" / "benchmarks.md"


def _load(pattern: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob(pattern))]


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def finetune_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | labels | train cases | steps (time) | structure | Dice | HD95 | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s, res = r["settings"], r["results"]
        steps = res["time_to_dice"][-1]["step"] + 1 if res["time_to_dice"] else "-"
        for i, (label, m) in enumerate(res["test"].items()):
            head = (
                f"| {s['dataset']} | {s['fraction']:.0%} | {s['n_train_labelled']} | {steps} "
                f"({res['train_seconds'] / 60:.1f} min) "
                if i == 0
                else "| | | | "
            )
            lines.append(
                f"{head}| {label} | {_f(m['dice'])} | {_f(m['hd95'], 2)} | {r['commit'][:8] if i == 0 else ''} |"
            )
        lines.append(f"| | | | | **mean** | **{_f(res['mean_dice'])}** | | |")
    return "\n".join(lines)


def speed_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| case | train step ours (s) | reference (s) | ratio | +augmentation | predict ours (s) | reference (s) "
        "| ratio | peak RSS ours / ref (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for case, v in r["results"].items():
            lines.append(
                f"| {case} | {_f(v['train_ours']['median_s'])} | {_f(v['train_reference']['median_s'])} | "
                f"{_f(v['train_ratio'])} | {v['augmentation_overhead']:+.1%} | {_f(v['predict_ours']['median_s'])} | "
                f"{_f(v['predict_reference']['median_s'])} | {_f(v['predict_ratio'])} | "
                f"{v['train_ours']['peak_rss_mb']:.0f} / {v['train_reference']['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def label_efficiency_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| experiment | labels | method | seeds | test Dice mean ± std | vs random, paired (pt) | p, seeds (t) "
        "| p, cases (Wilcoxon) | wins | pretrain steps / fine-tune steps | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["settings"]
        # A partial grid (see label_efficiency.py --report-only) says so in every row.
        # The experiment folder's name without the common prefix: the dataset, and what differs (e.g. jsrt_ft600).
        experiment = r["benchmark"].removeprefix("label_efficiency_") + (
            " (partial grid)" if s.get("missing_runs") else ""
        )
        rows = sorted(r["results"]["summary"], key=lambda row: (row["fraction"], row["method"] != "random"))
        for row in rows:
            diff = row["diff_vs_random"]
            spread = spread_text(row["std_dice"])
            paired = "-" if diff is None else f"{100 * diff:+.2f}{spread_text(row['diff_std'], 2, 100)}"
            p_value = "-" if row["p_wilcoxon"] is None else f"{row['p_wilcoxon']:.2g}"
            p_seeds = "-" if row.get("p_seeds") is None else f"{row['p_seeds']:.2g}"
            wins = "-" if row["wins"] is None else f"{row['wins']:.0%}"
            lines.append(
                f"| {experiment} | {row['fraction']:.0%} | {row['method']} | {row['n_seeds']} | "
                f"{row['mean_dice']:.4f}{spread} | {paired} | "
                f"{p_seeds} | {p_value} | {wins} | "
                f"{s['pretrain_steps']} / {s['finetune_steps']} | {r['commit'][:8]} |"
            )
    return "\n".join(lines)


def pgl_cost_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| patch | batch | encoder | threads | BYOL step (ms) | PGL step (ms) | alignment (ms) | alignment share of a "
        "PGL step | PGL / BYOL | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s, v = r["settings"], r["results"]
        lines.append(
            f"| {'x'.join(map(str, s['patch']))} | {s['batch']} | U-Net encoder {'-'.join(map(str, s['channels']))} "
            f"| {s['threads']} | {v['byol_step_ms']:.0f} | {v['pgl_step_ms']:.0f} | {v['alignment_ms']:.2f} | "
            f"{v['alignment_share_of_pgl_step']:.1%} | {v['pgl_over_byol']:.2f} | {r['commit'][:8]} |"
        )
    return "\n".join(lines)


def pgl_paper_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| device | patch | batch | precision | BYOL step (s) | PGL step (s) | peak memory | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s, v = r["settings"], r["results"]
        gpu = [v[m].get("peak_gpu_memory_gib") for m in ("byol", "pgl") if m in v]
        memory = (
            " / ".join(f"{g:.1f}" for g in gpu if g is not None) + " GiB GPU (BYOL / PGL)"
            if any(g is not None for g in gpu)
            else f"{v['peak_process_rss_gib']:.1f} GiB RSS (process)"
        )
        steps = [_f(v[m]["step_s_median"], 2) if m in v else "-" for m in ("byol", "pgl")]
        lines.append(
            f"| {s['device']} ({s['threads']} threads) | {'x'.join(map(str, s['patch']))} | {s['batch']} | "
            f"{s['precision']} | {steps[0]} | {steps[1]} | {memory} | {r['commit'][:8]} |"
        )
    return "\n".join(lines)


def _mean_median(stats: dict[str, Any], metric: str, digits: int = 3) -> str:
    return f"{_f(stats.get(metric), digits)} / {_f(stats.get(f'{metric}_median'), digits)}"


def labelfree_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| data | structure | method | images | Dice best-cluster (mean / median) | HD95 px | XOR "
        "| selected / truth area | Dice border | Dice darkest | paper-code Dice / hm / XOR | s per image "
        "(threads) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["settings"]
        for name, res in r["results"].items():
            summary = res["summary"]
            for structure in (k for k in summary if k != "time"):
                best, paper = summary[structure]["best-cluster"], summary[structure]["paper-code"]
                lines.append(
                    f"| {s['dataset']} | {structure} | {name} | {res['n_cases']} | {_mean_median(best, 'dice')} | "
                    f"{_mean_median(best, 'hd95', 1)} | {_mean_median(best, 'xor')} | "
                    f"{_f(best['area_ratio_median'], 2)} | {_f(summary[structure]['border']['dice'])} | "
                    f"{_f(summary[structure]['darkest']['dice'])} | {_f(paper['dice'])} / {_f(paper['hm'])} / "
                    f"{_f(paper['xor'])} | {_f(summary['time']['mean_s'], 2)} ({s['threads']}) | "
                    f"{res['peak_rss_mb']:.0f} |"
                )
    return "\n".join(lines)


def labelfree_timing_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| data | method | images | threads | s per image mean / median / max | steps | peak RSS MB "
        "| load average before / after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r["settings"]
        load = s.get("load_average_1min_before_after", [None, None])
        for name, res in r["results"].items():
            t = res["summary"]["time"]
            lines.append(
                f"| {s['dataset']} | {name} | {res['n_cases']} | {s['threads']} | {_f(t['mean_s'], 2)} / "
                f"{_f(t['median_s'], 2)} / {_f(t['max_s'], 2)} | {t['mean_iterations']:.1f} | "
                f"{res['peak_rss_mb']:.0f} | {_f(load[0], 1)} / {_f(load[1], 1)} |"
            )
    return "\n".join(lines)


def labelfree_ablation_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | Dice best-cluster mean / median / min | selected / truth area (median) | images with area "
        "ratio > 1.5 | Dice border | s per image |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        for name, v in r["results"].items():
            lines.append(
                f"| {name} | {v['dice_mean']:.3f} / {v['dice_median']:.3f} / {v['dice_min']:.3f} | "
                f"{v['area_ratio_median']:.2f} | {v['images_area_ratio_over_1.5']} | {v['border_dice_mean']:.3f} | "
                f"{v['seconds_mean']:.2f} |"
            )
    return "\n".join(lines)


def _per_seed(runs: list[dict[str, Any]], key: str, digits: int) -> str:
    return " / ".join(f"{run[key]:.{digits}f}" for run in runs)


def _mean_of(runs: list[dict[str, Any]], key: str) -> float:
    return sum(run[key] for run in runs) / len(runs)


def s3_lr_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| S3-Net learning rate | Dice mean per seed | mean / median over seeds | selected / truth area (median per "
        "seed) | images > 5 points below k-means, per seed | steps | s per image (1 thread) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for name, v in r["results"].items():
            if name == "kmeans":
                lines.append(f"| k-means (the start) | {v['dice_mean']:.3f} | | | | | |")
                continue
            seeds = v["runs"]
            lines.append(
                f"| {v['lr']:g} | {_per_seed(seeds, 'dice_mean', 3)} | {v['dice_mean_over_seeds']:.3f} / "
                f"{v['dice_median_over_seeds']:.3f} | {_per_seed(seeds, 'area_ratio_median', 2)} | "
                f"{_per_seed(seeds, 'images_below_kmeans', 0)} | {_mean_of(seeds, 'steps_mean'):.1f} | "
                f"{_mean_of(seeds, 'seconds_mean'):.2f} |"
            )
    return "\n".join(lines)


def labelfree_plot(runs: list[dict[str, Any]]) -> None:
    """docs/labelfree_dice.png: per-image Dice of every method under each protocol, one panel per data set."""
    panels: list[tuple[str, str, dict[str, list[dict[str, str]]]]] = []  # (data set, structure, method -> rows)
    for r in runs:
        if "cases_csv" not in r["settings"] or r["settings"].get("seed"):  # other seeds: in the table only
            continue
        with (RESULTS / r["settings"]["cases_csv"]).open() as fh:
            rows = list(csv.DictReader(fh))
        for structure in dict.fromkeys(row["structure"] for row in rows):
            by_method: dict[str, list[dict[str, str]]] = {}
            for row in rows:
                if row["structure"] == structure:
                    by_method.setdefault(row["method"], []).append(row)
            panels.append((r["settings"]["dataset"], structure, by_method))
    if not panels:
        return
    protocols = ["best-cluster", "border", "darkest", "paper-code"]
    cols = min(len(panels), 2)
    rows_n = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(7 * cols, 4.2 * rows_n), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    width = 0.8 / len(protocols)
    for ax, (dataset, structure, by_method) in zip(axes.ravel(), panels, strict=False):
        names = list(by_method)
        for p, protocol in enumerate(protocols):
            data = [[float(row[f"{protocol}_dice"]) for row in by_method[n]] for n in names]
            positions = [i + (p - (len(protocols) - 1) / 2) * width for i in range(len(names))]
            box = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, showfliers=False)
            for patch in box["boxes"]:
                patch.set_facecolor(f"C{p}")
            ax.plot([], [], color=f"C{p}", lw=6, label=protocol)
        ax.set_xticks(range(len(names)), [f"{n}\n({len(by_method[n])} images)" for n in names], fontsize=7)
        ax.set(ylabel="Dice", ylim=(0, 1), title=f"{dataset} {structure}: Dice per image (box: quartiles)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "labelfree_dice.png", dpi=100)
    plt.close(fig)


def time_to_dice_plot(runs: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        pts = r["results"]["time_to_dice"]
        if pts:
            label = f"{r['settings']['dataset']} {r['settings']['fraction']:.0%} labels"
            ax.plot([p["elapsed_s"] / 60 for p in pts], [p["val_dice"] for p in pts], "o-", ms=3, label=label)
    ax.set(
        xlabel="training time on 2 CPU cores (min)",
        ylabel="validation Dice (mean over structures)",
        ylim=(0, 1),
        title="time to Dice",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "time_to_dice.png", dpi=110)
    plt.close(fig)


def pretraining_loss_table(runs: list[dict[str, Any]]) -> str:
    """The pretraining runs of the label-efficiency experiments; one row per run (experiments that share a
    pretraining run, e.g. a longer fine-tuning on the same encoders, list it once)."""
    lines = [
        "| experiment | method | steps | loss, first tenth of the steps | loss, last tenth | minutes | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in runs:
        for method, pre in r["results"].get("pretraining", {}).items():
            key = (r["settings"]["dataset"], method, pre["global_step"], pre["train_seconds"])
            if key in seen:
                continue
            seen.add(key)
            lines.append(
                f"| {r['benchmark']} | {method} | {pre['global_step']} | {_f(pre.get('loss_first_tenth'), 4)} | "
                f"{_f(pre.get('loss_last_tenth'), 4)} | {pre['train_seconds'] / 60:.1f} | {r['commit'][:8]} |"
            )
    return "\n".join(lines)


def encoder_transfer_table(runs: list[dict[str, Any]], fraction: float = 0.1) -> str:
    lines = [
        "| experiment | encoder start | pretraining: change per stage, % of the start's norm | fine-tuning at "
        f"{fraction:.0%}: change per stage, % (runs) | fine-tuning: cos(end, start), deepest stage | "
        "cos(end, unused init), largest magnitude | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        v = r["results"]
        tuned = {row["method"]: row for row in v["finetuning"] if row["fraction"] == fraction}
        for method, row in tuned.items():
            pre = v["pretraining"].get(method)
            pre_text = "-" if pre is None else " / ".join(f"{100 * x:.0f}" for x in pre["relative_change"])
            start = "random init" if pre is None else f"{method} (pretraining seed {pre['seed']})"
            lines.append(
                f"| {r['settings']['experiment']} | {start} | {pre_text} | "
                + " / ".join(f"{100 * x:.0f}" for x in row["relative_change"])
                + f" ({row['n_runs']}) | {row['cos_start'][-1]:.3f} | {max(row['cos_control']):.3f} | "
                f"{r['commit'][:8]} |"
            )
    return "\n".join(lines)


def partial_labels_table(runs: list[dict[str, Any]]) -> str:
    """Per dataset: every method's test Dice over seeds, per structure, HD95, the paired difference to the
    separate networks (t-test over seeds, Wilcoxon over (seed, case) pairs) and to the fully labelled bound."""
    out = []
    for r in runs:
        rows = r["results"]["summary"]
        structures = sorted(k.removeprefix("dice_") for k in rows[0] if k.startswith("dice_"))
        commits = sorted({run.get("commit", r["commit"])[:8] for run in r["results"]["runs"]})
        out += [
            f"**{r['settings']['dataset']}** (commits {', '.join(commits)}; targets: {r['results']['targets']})",
            "",
            "| method | seeds | Dice mean ± sd | " + " | ".join(structures) + " | HD95 | vs separate (points; p seeds;"
            " p Wilcoxon) | vs full (points) | steps | s | plateau stops |",
            "|---" * (9 + len(structures)) + "|",
        ]
        for row in rows:
            vs_sep = (
                f"{100 * row['diff_vs_separate']:+.2f}; {_f(row['p_seeds'], 2)}; {_f(row['p_wilcoxon'], 3)}"
                if row.get("diff_vs_separate") is not None
                else ""
            )
            vs_full = f"{100 * row['diff_vs_full']:+.2f}" if row.get("diff_vs_full") is not None else ""
            out.append(
                f"| {row['method']} | {row['n_seeds']} | {row['mean_dice']:.4f} ± {_f(row['std_dice'], 4)} | "
                + " | ".join(_f(row[f"dice_{s}"]) for s in structures)
                + f" | {_f(row['mean_hd95'], 1)} | {vs_sep} | {vs_full} | {row['mean_steps']:.0f} | "
                f"{row['mean_train_seconds']:.0f} | {row['stopped'].get('plateau', 0)} / {row['n_seeds']} |"
            )
        out.append("")
    return "\n".join(out).rstrip()


def replace_block(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> None:
    finetune = _load("finetune_*.json")
    speed = _load("speed.json")
    label_efficiency = _load("label_efficiency_*.json")
    # labelfree.py's results; the other labelfree_* scripts write other layouts.
    others = ("labelfree_robustness", "labelfree_paired", "labelfree_rule_maps")
    labelfree = [r for r in _load("labelfree_*.json") if not r["benchmark"].startswith(others)]
    text = DOC.read_text()
    text = replace_block(text, "labelfree", labelfree_table(labelfree))
    labelfree_plot(labelfree)
    text = replace_block(text, "labelfree-timing", labelfree_timing_table(_load("timing_labelfree_*.json")))
    text = replace_block(text, "labelfree-ablation", labelfree_ablation_table(_load("ablation_labelfree_*.json")))
    text = replace_block(text, "s3-lr", s3_lr_table(_load("s3_lr_*.json")))
    text = replace_block(text, "finetune", finetune_table(finetune))
    text = replace_block(text, "speed", speed_table(speed))
    text = replace_block(text, "label_efficiency", label_efficiency_table(label_efficiency))
    text = replace_block(text, "pretraining-loss", pretraining_loss_table(label_efficiency))
    text = replace_block(text, "encoder-transfer", encoder_transfer_table(_load("encoder_transfer_*.json")))
    text = replace_block(text, "pgl-cost", pgl_cost_table(_load("pgl_cost.json")))
    text = replace_block(text, "pgl-paper", pgl_paper_table(_load("pgl_paper_preset_*.json")))
    partial = [p for d in ("jsrt", "hippocampus") for p in _load(f"partial_labels_{d}.json")]
    text = replace_block(text, "partial-labels", partial_labels_table(partial))
    DOC.write_text(text)
    time_to_dice_plot(finetune)
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
