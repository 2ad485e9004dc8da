"""Writing an evaluation: the result as JSON and its cases as CSV, each written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import MedsslError
from medssl.metrics.label_maps import METRICS


def write_evaluation(result: Mapping[str, Any], out_file: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write an evaluation as JSON (``out_file``) and a per-case CSV beside it (same stem, ``.csv``).

    Args:
        result: the output of ``evaluate_folders``.
        out_file: path ending in ``.json``; parent folders are created.

    Returns:
        ``(json_path, csv_path)``.
    """
    json_path = Path(out_file)
    if json_path.suffix.lower() != ".json":
        raise MedsslError(f"evaluation output must be a .json file, got {json_path}")
    csv_path = json_path.with_suffix(".csv")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN that slipped past json_safe would be a bug, never silently invalid JSON.
    _write_text(json_path, json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    _write_text(csv_path, _cases_csv(result.get("cases", [])))
    return json_path, csv_path


def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None, paths to strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _cases_csv(cases: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    # Other numeric columns of the rows (e.g. the selected cluster, or "hm" of the paper-code protocol) follow.
    extra = [k for k in dict.fromkeys(k for row in cases for k in row) if k not in ("case", "label", *METRICS)]
    writer.writerow(["case", "label", *METRICS, *extra])
    for row in cases:
        values = [json_safe(row.get(m)) for m in (*METRICS, *extra)]
        writer.writerow([row["case"], row["label"], *("" if v is None else repr(float(v)) for v in values)])
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
