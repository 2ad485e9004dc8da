"""Several raters in ``medssl finetune`` (a dataset with one mask folder per rater): the raters a plan records, and
every rater's mask as the training target of a system that learns from all of them (``System.uses_raters``)."""

from __future__ import annotations

import numpy as np

from medssl.data.layouts import Case, DatasetIndex
from medssl.data.loading import load_checked_case
from medssl.data.plan import Plan
from medssl.data.preprocess import encode_raters
from medssl.errors import MedsslError

__all__ = ["rater_targets", "record_raters"]


def record_raters(plan: Plan, index: DatasetIndex) -> None:
    """Put the dataset's raters (observer folders, when there are several) in ``plan.extra["raters"]``."""
    if index.observers and len(index.observers) > 1:
        plan.extra["raters"] = list(index.observers)


def rater_targets(cases: list[Case], index: DatasetIndex, plan: Plan) -> list[np.ndarray]:
    """Every rater's label map of each case on the plan's grid, ``(R, *S)`` (``encode_raters``).

    Raises:
        MedsslError: a case lacks one of the plan's raters (named, with the raters it has).
    """
    raters = list(plan.extra.get("raters") or [])
    lacking = [
        f"{c.case_id} (has {', '.join(c.observers or {}) or 'one rater'})"
        for c in cases
        if sorted(c.observers or {}) != sorted(raters)
    ]
    if lacking:
        raise MedsslError(
            f"every training and validation case needs the masks of all raters ({', '.join(raters)}); these lack "
            f"some: {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''} (`medssl data check` lists them; "
            "leave them out of the dataset folder)"
        )
    return [encode_raters(load_checked_case(c, index, raters=True), plan) for c in cases]
