"""Partially labelled data in ``medssl finetune`` (``annotations.json``: cases that annotate only some
structures): which systems may train on it, which cases may be held out, and the per-case ``annotated`` rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from medssl import registry
from medssl.data.layouts import DatasetIndex
from medssl.data.loading import LoadedCase
from medssl.data.plan import Plan
from medssl.errors import MedsslError

__all__ = ["annotated_rows", "check_held_out", "check_partial_labels", "fully_annotated"]


def fully_annotated(index: DatasetIndex) -> set[str] | None:
    """The cases that annotate every structure when some do not (partially labelled data), else None."""
    return {c.case_id for c in index.cases if c.annotated is None} if index.partially_annotated else None


def check_partial_labels(index: DatasetIndex, name: str) -> None:
    """Refuse a system that would learn the structures a case does not annotate as background."""
    if not getattr(registry.get("segmentation", name), "uses_annotated", False):
        n = sum(c.annotated is not None for c in index.cases)
        raise MedsslError(
            f"{n} case(s) of {index.root} annotate only some structures (annotations.json), but segmentation "
            f"system {name!r} would learn the others as background: use --set system=dodnet"
        )


def check_held_out(split: dict[str, Any], full: set[str] | None) -> None:
    """Refuse a split whose validation or test cases do not annotate every structure (their scores would not be
    honest); ``full``: ``fully_annotated``'s cases, None for fully labelled data."""
    partial = sorted({*split["val"], *split["test"]} - full) if full is not None else []
    if partial:
        raise MedsslError(
            "validation and test cases must annotate every structure (so that their scores are honest), but "
            f"these of the split do not (annotations.json): {', '.join(partial[:5])}"
        )


def annotated_rows(cases: list[LoadedCase], plan: Plan) -> list[np.ndarray]:
    """Which structures each case annotates, ``(K,)`` bool in the plan's order (every one: ``annotated`` None)."""
    every = np.ones(len(plan.class_names), bool)
    return [every if c.annotated is None else c.annotated for c in cases]
