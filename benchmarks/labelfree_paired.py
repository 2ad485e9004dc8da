"""Paired per-image comparison of two label-free methods from the per-image CSVs of ``labelfree_robustness.py``.

For each rule's Dice (``best-cluster``, ``lesion``, ...): the mean difference ``a - b`` over the images both files
hold in a set, how many images are better / worse by more than ``--margin``, and the Wilcoxon signed-rank p.
Writes ``benchmarks/results/labelfree_paired_<name>.json``.

    python benchmarks/labelfree_paired.py \\
        benchmarks/results/labelfree_robustness_ph2_s3-clean_cases.csv s3 \\
        benchmarks/results/labelfree_robustness_ph2_cases.csv kmeans --set clean --name ph2_s3_vs_kmeans
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path
from typing import Any

from _common import write_result


def per_image(path: Path, method: str, set_name: str) -> dict[str, dict[str, float]]:
    """case -> column -> value of the Dice columns of one method and set."""
    rows = [r for r in csv.DictReader(path.open()) if r["method"] == method and r["set"] == set_name]
    return {r["case"]: {k: float(v) for k, v in r.items() if k.endswith("_dice") and v != ""} for r in rows}


def paired(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], margin: float) -> dict[str, Any]:
    """Per Dice column: mean difference a - b over the common images, better / worse counts, Wilcoxon p."""
    from scipy.stats import wilcoxon

    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {"images": len(common)}
    for column in sorted(set.intersection(*(set(a[c]) & set(b[c]) for c in common))):
        diffs = [a[c][column] - b[c][column] for c in common]
        out[column] = {
            "mean_difference": statistics.fmean(diffs),
            "better": sum(d > margin for d in diffs),
            "worse": sum(d < -margin for d in diffs),
            "p_wilcoxon": float(wilcoxon(diffs).pvalue) if any(diffs) else 1.0,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv_a", type=Path)
    parser.add_argument("method_a")
    parser.add_argument("csv_b", type=Path)
    parser.add_argument("method_b")
    parser.add_argument("--set", dest="set_name", default="clean")
    parser.add_argument("--margin", type=float, default=0.005, help="Dice difference that counts as better/worse")
    parser.add_argument("--name", required=True, help="result file suffix")
    args = parser.parse_args()
    a = per_image(args.csv_a, args.method_a, args.set_name)
    b = per_image(args.csv_b, args.method_b, args.set_name)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_result(f"labelfree_paired_{args.name}", settings, paired(a, b, args.margin))


if __name__ == "__main__":
    main()
