"""Metrics: pure functions of arrays (overlap, surface distances, per-label metrics of label maps; several raters
and calibration; image quality of super-resolution).

Array functions take masks of equal shape (non-zero is foreground) and ``spacing`` (per axis; None = 1, i.e.
distances in voxels). Empty-mask rules:

- ``dice(pred, truth) -> float``: both empty 1.0, one empty 0.0; it calls ``dice_scores``, the one Dice
  implementation (torch, per leading index over the trailing spatial axes, the both-empty value an argument),
  which validation's ``medssl.segment.supervised.foreground_dice`` calls too, with NaN for both empty;
- ``xor_error(pred, truth) -> float | None``: ``|P xor G| / |G|``; None when G is empty (counted as undefined);
- ``hausdorff(pred, truth, spacing, percentile=100) -> float | None``: both empty 0.0, one empty None;
- ``normalized_surface_dice(pred, truth, spacing, tolerance) -> float``: both empty 1.0, one empty 0.0
  (``tolerance`` in the unit of ``spacing``; ``d <= tolerance`` counts as correct).

Surfaces: a surface voxel is a foreground voxel with a background face-neighbour, the image border counting as
background. ``percentile=95`` gives HD95 as the larger of the two directed 95th percentiles (MONAI's
convention). NSD (Nikolov et al. 2021) counts surface voxels, each weighing 1 (MONAI's
``compute_surface_dice`` with ``use_subvoxels=False``), rather than weighting surfels by area.

Modules: ``overlap`` (dice, dice_scores, xor_error), ``surface`` (surface extraction, distances, hausdorff, NSD),
``label_maps`` (``binary_metrics``, ``evaluate_arrays``, ``summarize``), ``raters`` (soft Dice, Dice per rater,
agreement, GED), ``calibration`` (reliability bins, ECE), ``image_quality`` (PSNR, SSIM). Reading and matching
folders and writing CSV/JSON reports is ``medssl.evaluation``'s.
"""

from medssl.metrics.calibration import Bins, calibration_bins, expected_calibration_error, merge_bins
from medssl.metrics.image_quality import psnr, ssim
from medssl.metrics.label_maps import METRICS, MetricValues, binary_metrics, evaluate_arrays, summarize
from medssl.metrics.overlap import dice, dice_scores, xor_error
from medssl.metrics.raters import (
    generalized_energy_distance,
    rater_agreement,
    rater_dice,
    soft_dice,
    soft_truth,
)
from medssl.metrics.surface import (
    hausdorff,
    hausdorff_from_distances,
    normalized_surface_dice,
    nsd_from_distances,
    surface_distances,
    surface_voxels,
)

__all__ = [
    "METRICS",
    "Bins",
    "MetricValues",
    "binary_metrics",
    "calibration_bins",
    "dice",
    "dice_scores",
    "evaluate_arrays",
    "expected_calibration_error",
    "generalized_energy_distance",
    "hausdorff",
    "hausdorff_from_distances",
    "merge_bins",
    "normalized_surface_dice",
    "nsd_from_distances",
    "psnr",
    "rater_agreement",
    "rater_dice",
    "soft_dice",
    "soft_truth",
    "ssim",
    "summarize",
    "surface_distances",
    "surface_voxels",
    "xor_error",
]
