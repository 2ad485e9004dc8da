"""Evaluate folders of predicted segmentations against references, and write CSV/JSON reports.

Two folder layouts are understood (the layout is read from the reference folder):
- ``label_map``: label images directly in the folder (``truth/case1.nii.gz``); each non-zero value is a label;
- ``multi_label``: one sub-folder per structure holding binary masks (``truth/heart/case1.png``, ``> 0`` is
  foreground); the label key is the sub-folder name.
Predictions and references are matched by file stem (``medssl.data.io.stem``), so formats may differ; stems
that match no file are then paired by their first ``_``/``-``-separated token where it is unique on both sides
(DRIVE's ``01_test`` prediction with its ``01_manual1`` truth, as ``medssl.data.layouts`` pairs them). Every
prediction needs a reference (otherwise ``MedsslError`` names the files); references without a prediction are
not scored, and are counted and named in the result (``settings["unused_references"]``) and in its warnings.

Every pair is read and checked before anything is scored: all unreadable files, non-integer or non-finite values
and shape mismatches are reported together in one ``MedsslError``. A geometry difference (spacing, origin,
direction; ``medssl.data.check.geometry_difference``) between a prediction and its reference, and prediction
values that occur in no reference, are warnings (``result["warnings"]``). A prediction folder written by
``medssl segment`` (cluster maps ``1..K``, not labels) is refused with the protocols that score it.

The metrics themselves are pure functions of arrays in ``medssl.metrics``. Modules: ``folders`` (reference
layout, files by stem, matched pairs), ``checks`` (reading and checking the pairs), ``scoring``
(``evaluate_folders``), ``report`` (``write_evaluation``).
"""

from medssl.evaluation.folders import LABEL_MAP, MULTI_LABEL, image_files, reference_layout, structure_dirs
from medssl.evaluation.report import write_evaluation
from medssl.evaluation.scoring import evaluate_folders

__all__ = [
    "LABEL_MAP",
    "MULTI_LABEL",
    "evaluate_folders",
    "image_files",
    "reference_layout",
    "structure_dirs",
    "write_evaluation",
]
