"""Fixed, seeded train/validation/test splits and label-fraction subsets.

The test and validation cases depend only on ``split_seed`` so that every method, label fraction and seed of
an experiment is scored on the same held-out cases. The labelled subset is drawn from the training cases
only, with ``seed``; subsets are nested (the 10 % cases are among the 25 % cases of the same seed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
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
    held_out_from: Collection[str] | None = None,
) -> dict[str, Any]:
    """Split ``case_ids`` into train / val / test and pick the labelled training subset.

    Args:
        held_out_from: the only cases that may be validation or test cases (partially labelled data: the fully
            annotated ones, so that the scores are honest); as many are drawn as without it, by a permutation of
            these cases with ``split_seed``, and the training cases are all the others, sorted. None: any case.

    Raises:
        MedsslError: a fraction out of range, too few cases, or fewer cases in ``held_out_from`` than the
            validation and test cases need.

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
    if held_out_from is None:
        order = [ids[i] for i in np.random.default_rng(split_seed).permutation(n)]
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    else:
        pool = sorted(set(held_out_from) & set(ids))
        if len(pool) < n_test + n_val:
            raise MedsslError(
                f"only {len(pool)} of {n} case(s) annotate every structure, but the validation and test cases must "
                f"(so that their scores are honest) and the split needs {n_val + n_test}: declare more cases fully "
                "annotated or lower val_fraction / test_fraction"
            )
        order = [pool[i] for i in np.random.default_rng(split_seed).permutation(len(pool))]
        test, val = order[:n_test], order[n_test : n_test + n_val]
        train = sorted(set(ids) - set(test) - set(val))
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
