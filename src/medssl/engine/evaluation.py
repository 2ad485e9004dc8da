"""Scoring a trained model on held-out cases: predictions written, metrics computed, overlays drawn."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.loading import LoadedCase
from medssl.data.plan import Plan
from medssl.engine.plots import OverlayCase, save_overlays
from medssl.evaluation.report import write_evaluation
from medssl.metrics.label_maps import binary_metrics, evaluate_arrays, summarize
from medssl.segment.predict import TrainedModel, predict_image, write_prediction


def evaluate_test_cases(
    model: TrainedModel,
    cases: Iterable[LoadedCase],
    run: Path,
    *,
    overlap: float = 0.25,
    tolerance: float = 1.0,
    overlay_cases: int = 6,
    progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
    n: int | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Predict, write and score each case (distances in mm where the image has physical spacing).

    Returns:
        The per-label summary and the files written (predictions folder, evaluation JSON/CSV, overlays).
    """
    plan = model.plan
    pred_dir = run / "predictions" / "test"
    rows: list[dict[str, Any]] = []
    units: dict[str, str] = {}
    panels: list[OverlayCase] = []
    items = progress(cases, f"scoring {n or ''} test cases") if progress else cases
    for case in items:
        labels = predict_image(model, case.image, case.meta, overlap=overlap)
        write_prediction(labels, case.meta, plan, pred_dir, case.case_id)
        spacing = case.meta.spacing if case.meta.physical else None
        units[case.case_id] = "mm" if spacing else "px"
        per_label = _score(labels, case, plan, spacing, tolerance)
        rows.extend({"case": case.case_id, "label": k, **v} for k, v in per_label.items())
        if len(panels) < overlay_cases:
            dices = [v["dice"] for v in per_label.values() if v["dice"] is not None]
            pred_masks, truth_masks = _masks(labels, case, plan)
            panels.append(
                OverlayCase(
                    case.case_id,
                    case.image,
                    pred_masks,
                    truth_masks,
                    float(np.mean(dices)) if dices else None,
                    physical=case.meta.physical,
                )
            )
    result: dict[str, Any] = {
        "cases": rows,
        "summary": summarize(rows),
        "settings": {
            "tolerance": tolerance,
            "units": units,
            "checkpoint": str(model.checkpoint),
            "sw_overlap": overlap,
        },
    }
    json_path, csv_path = write_evaluation(result, run / "evaluation" / "test.json")
    files = {"predictions": str(pred_dir), "evaluation": str(json_path), "evaluation_csv": str(csv_path)}
    if panels:
        files["overlays"] = str(
            save_overlays(
                panels, plan.class_names[1:] if plan.task == "labelmap" else plan.class_names, run / "overlays.png"
            )
        )
    return result["summary"], files


def _score(
    labels: np.ndarray, case: LoadedCase, plan: Plan, spacing: tuple[float, ...] | None, tolerance: float
) -> dict[str, dict[str, Any]]:
    if plan.task == "multilabel":
        assert case.structures is not None
        return {
            name: binary_metrics(labels[s] > 0, case.structures[s], spacing, tolerance)
            for s, name in enumerate(plan.class_names)
        }
    assert case.label is not None
    return evaluate_arrays(labels, case.label, spacing, plan.foreground_labels, tolerance)


def _masks(labels: np.ndarray, case: LoadedCase, plan: Plan) -> tuple[np.ndarray, np.ndarray | None]:
    if plan.task == "multilabel":
        return labels.astype(bool), case.structures
    values = plan.class_values[1:]
    pred = np.stack([labels == v for v in values])
    truth = np.stack([case.label == v for v in values]) if case.label is not None else None
    return pred, truth
