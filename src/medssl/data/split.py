"""Fixed, seeded train/validation/test splits and label-fraction subsets.

The test and validation cases depend only on ``split_seed`` so that every method, label fraction and seed of
an experiment is scored on the same held-out cases. The labelled subset is drawn from the training cases
only, with ``seed``; subsets are nested (the 10 % cases are among the 25 % cases of the same seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import MedsslError


def make_split(
    case_ids: list[str],
    *,
    test_fraction: float,
    val_fraction: float,
    label_fraction: float = 1.0,
    seed: int = 0,
    split_seed: int = 0,
) -> dict[str, Any]:
    """Split ``case_ids`` into train / val / test and pick the labelled training subset.

    Returns:
        ``{"train": [...], "train_labelled": [...], "val": [...], "test": [...], "seed", "split_seed",
        "label_fraction"}``.
    """
    if not 0 < label_fraction <= 1:
        raise MedsslError(f"--label-fraction must be in (0, 1], not {label_fraction}")
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise MedsslError(f"test_fraction {test_fraction} + val_fraction {val_fraction} must be below 1")
    ids = sorted(case_ids)
    n = len(ids)
    n_test = round(n * test_fraction) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise MedsslError(f"{n} labelled case(s) are too few for a train/validation/test split; need at least 3")
    order = [ids[i] for i in np.random.default_rng(split_seed).permutation(n)]
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    # N / len(train) must label exactly N cases: float products such as 25 * (7 / 25) = 7.000000000000001 must not
    # round up to N + 1
    wanted = max(1, math.ceil(len(train) * label_fraction - 1e-9))
    picked = np.random.default_rng(seed).permutation(len(train))[:wanted]
    labelled = sorted(train[i] for i in picked)
    return {
        "train": sorted(train),
        "train_labelled": labelled,
        "val": sorted(val),
        "test": sorted(test),
        "seed": seed,
        "split_seed": split_seed,
        "label_fraction": label_fraction,
    }


def save_split(split: dict[str, Any], path: str | Path) -> None:
    """Write the split as JSON."""
    Path(path).write_text(json.dumps(split, indent=2))


def load_split(path: str | Path, known: set[str]) -> dict[str, Any]:
    """Read a split file and check that it names only known cases."""
    p = Path(path)
    try:
        split = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MedsslError(f"cannot read split file {p}: {exc}") from None
    for key in ("train_labelled", "val", "test"):
        if key not in split or not isinstance(split[key], list):
            raise MedsslError(f"split file {p} lacks the list {key!r}")
        missing = sorted(set(split[key]) - known)
        if missing:
            raise MedsslError(f"split file {p} names cases not in the dataset: {', '.join(missing[:5])}")
    split.setdefault("train", split["train_labelled"])
    return split
