"""Surface metrics against a brute-force reference and against MONAI.

The reference below shares no code with ``medssl.metrics.surface``: surfaces come from a binary erosion with a
cross structuring element (border_value=0, so the image border is background) and distances from all pairwise
distances between scaled surface coordinates (``cdist``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage
from scipy.spatial.distance import cdist

from medssl.errors import MedsslError
from medssl.metrics.surface import hausdorff, normalized_surface_dice, surface_distances, surface_voxels

SHAPES = {2: (23, 19), 3: (13, 11, 9)}
SPACINGS = {2: (0.7, 1.9), 3: (0.6, 1.3, 2.2)}
# Tolerances chosen away from the distances reachable on these grids (checked in _assert_no_tie).
TOLERANCES = (0.9, 1.77, 3.1)

# MONAI warns about its own deprecated internals (get_mask_edges' always_return_as_numpy).
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def reference_surface(mask: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def reference_directed(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    sp = np.argwhere(reference_surface(pred)) * np.asarray(spacing)
    st = np.argwhere(reference_surface(truth)) * np.asarray(spacing)
    pairwise = cdist(sp, st)
    return pairwise.min(axis=1), pairwise.min(axis=0)


def reference_hausdorff(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], q: float) -> float:
    return max(float(np.percentile(d, q)) for d in reference_directed(pred, truth, spacing))


def reference_nsd(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tol: float) -> float:
    d_pt, d_tp = reference_directed(pred, truth, spacing)
    return (np.sum(d_pt <= tol) + np.sum(d_tp <= tol)) / (d_pt.size + d_tp.size)


def random_blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth blobs with interiors (so surfaces differ from the masks)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=1.5)
    return field > np.quantile(field, 0.6)


def random_cases(ndim: int, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1234 + ndim)
    shape = SHAPES[ndim]
    cases = [(random_blobs(rng, shape), random_blobs(rng, shape)) for _ in range(n)]
    cases.append((rng.random(shape) > 0.7, rng.random(shape) > 0.5))  # salt noise: nearly all voxels surface
    return cases


def _assert_no_tie(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tol: float) -> None:
    distances = np.concatenate(reference_directed(pred, truth, spacing))
    assert np.min(np.abs(distances - tol)) > 1e-4, "test tolerance sits on a reachable distance"


@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_voxels_match_erosion_reference(ndim: int) -> None:
    for pred, truth in random_cases(ndim):
        np.testing.assert_array_equal(surface_voxels(pred), reference_surface(pred))
        np.testing.assert_array_equal(surface_voxels(truth), reference_surface(truth))


def test_surface_border_counts_as_background() -> None:
    full = np.ones((3, 4), dtype=bool)
    expected = np.array([[1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(surface_voxels(full), expected)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("isotropic", [False, True])
def test_directed_distances_match_brute_force(ndim: int, isotropic: bool) -> None:
    spacing = (1.0,) * ndim if isotropic else SPACINGS[ndim]
    for pred, truth in random_cases(ndim):
        d_pt, d_tp = surface_distances(pred, truth, None if isotropic else spacing)
        r_pt, r_tp = reference_directed(pred, truth, spacing)
        np.testing.assert_allclose(d_pt, r_pt, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(d_tp, r_tp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("percentile", [100.0, 95.0, 50.0])
def test_hausdorff_matches_brute_force(ndim: int, percentile: float) -> None:
    spacing = SPACINGS[ndim]
    for pred, truth in random_cases(ndim):
        expected = reference_hausdorff(pred, truth, spacing, percentile)
        assert hausdorff(pred, truth, spacing, percentile) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_nsd_matches_brute_force(ndim: int, tolerance: float) -> None:
    spacing = SPACINGS[ndim]
    for pred, truth in random_cases(ndim):
        _assert_no_tie(pred, truth, spacing, tolerance)
        expected = reference_nsd(pred, truth, spacing, tolerance)
        assert normalized_surface_dice(pred, truth, spacing, tolerance) == pytest.approx(expected, rel=1e-12)


def _monai_input(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32))[None, None]  # (B=1, C=1, *spatial)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("percentile", [100.0, 95.0])
def test_hausdorff_matches_monai(ndim: int, percentile: float) -> None:
    # MONAI: edges = mask ^ binary_erosion(mask) (cross, border 0), HD-p = max of directed torch.quantile
    # (linear interpolation), distances in float32; include_background=True keeps our single channel.
    spacing = SPACINGS[ndim]
    for pred, truth in random_cases(ndim):
        expected = compute_hausdorff_distance(
            _monai_input(pred),
            _monai_input(truth),
            include_background=True,
            percentile=None if percentile == 100.0 else percentile,
            spacing=list(spacing),
        ).item()
        assert hausdorff(pred, truth, spacing, percentile) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("tolerance", TOLERANCES)
def test_nsd_matches_monai_voxel_counting(ndim: int, tolerance: float) -> None:
    # Matches MONAI with use_subvoxels=False (each edge voxel weighs 1). MONAI's use_subvoxels=True (DeepMind's
    # surfel areas) is a different convention and is not compared. Empty masks differ too: MONAI gives NaN for
    # both empty where we give 1.0 (see test_empty_rules).
    spacing = SPACINGS[ndim]
    for pred, truth in random_cases(ndim):
        _assert_no_tie(pred, truth, spacing, tolerance)
        expected = compute_surface_dice(
            _monai_input(pred),
            _monai_input(truth),
            class_thresholds=[tolerance],
            include_background=True,
            spacing=list(spacing),
            use_subvoxels=False,
        ).item()
        assert normalized_surface_dice(pred, truth, spacing, tolerance) == pytest.approx(expected, rel=1e-6)


def test_monai_one_empty_agrees_on_nsd_zero() -> None:
    truth = np.zeros((8, 8), dtype=bool)
    truth[2:5, 2:6] = True
    empty = np.zeros_like(truth)
    expected = compute_surface_dice(
        _monai_input(empty), _monai_input(truth), class_thresholds=[1.0], include_background=True
    ).item()
    assert expected == 0.0
    assert normalized_surface_dice(empty, truth) == 0.0


def test_hand_computed_single_voxels() -> None:
    pred = np.zeros((5, 6), dtype=bool)
    truth = np.zeros((5, 6), dtype=bool)
    pred[0, 0] = True
    truth[3, 4] = True
    assert hausdorff(pred, truth) == pytest.approx(5.0)
    assert hausdorff(pred, truth, spacing=(2.0, 0.5)) == pytest.approx(np.sqrt(6.0**2 + 2.0**2))
    assert hausdorff(pred, truth, spacing=2.0) == pytest.approx(10.0)
    assert normalized_surface_dice(pred, truth, tolerance=4.9) == 0.0
    assert normalized_surface_dice(pred, truth, tolerance=5.0) == 1.0  # inclusive


def test_hand_computed_shifted_square() -> None:
    # 4x4 squares shifted by one row; spacing (2, 0.5): row steps cost 2 mm, column steps 0.5 mm.
    truth = np.zeros((9, 8), dtype=bool)
    truth[2:6, 2:6] = True
    pred = np.roll(truth, 1, axis=0)
    # pred -> truth: 6 boundary voxels on the truth boundary (0), 2 inner top-row voxels 0.5 mm from the side
    # columns, 4 bottom-row voxels 2 mm away; symmetric the other way round.
    assert hausdorff(pred, truth, (2.0, 0.5)) == pytest.approx(2.0)
    assert hausdorff(pred, truth, (2.0, 0.5), percentile=50) == pytest.approx(0.25)  # median of 0x6, 0.5x2, 2x4
    assert normalized_surface_dice(pred, truth, (2.0, 0.5), tolerance=1.0) == pytest.approx(16 / 24)
    assert hausdorff(pred, truth) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, truth) == 1.0


def test_empty_rules() -> None:
    empty = np.zeros((6, 5, 4), dtype=bool)
    blob = np.zeros_like(empty)
    blob[1:4, 1:3, 1:3] = True
    assert hausdorff(empty, empty) == 0.0
    assert hausdorff(empty, empty, percentile=95) == 0.0
    assert hausdorff(blob, empty) is None
    assert hausdorff(empty, blob, percentile=95) is None
    assert normalized_surface_dice(empty, empty) == 1.0
    assert normalized_surface_dice(blob, empty) == 0.0
    assert normalized_surface_dice(empty, blob) == 0.0
    d_pt, d_tp = surface_distances(empty, blob)
    assert d_pt.size == 0
    assert np.isinf(d_tp).all()
    assert d_tp.size == reference_surface(blob).sum()


@pytest.mark.parametrize("ndim", [2, 3])
def test_cropping_gives_identical_results(ndim: int) -> None:
    rng = np.random.default_rng(7)
    spacing = SPACINGS[ndim]
    big = tuple(3 * s for s in SHAPES[ndim])
    cases = []
    for pred, truth in random_cases(ndim):
        # Small masks placed off-centre in a larger image: the crop removes most of the array.
        p, t = np.zeros(big, dtype=bool), np.zeros(big, dtype=bool)
        offset = tuple(slice(s, 2 * s) for s in SHAPES[ndim])
        p[offset], t[offset] = pred, truth
        cases.append((p, t))
    cases.append((rng.random(SHAPES[ndim]) > 0.3, rng.random(SHAPES[ndim]) > 0.6))  # touches every border
    corner = np.zeros(big, dtype=bool)
    corner[(0,) * ndim] = True
    far = np.zeros(big, dtype=bool)
    far[(-1,) * ndim] = True
    cases.append((corner, far))
    for pred, truth in cases:
        cropped = surface_distances(pred, truth, spacing, crop=True)
        full = surface_distances(pred, truth, spacing, crop=False)
        for a, b in zip(cropped, full, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bad_arguments() -> None:
    a = np.zeros((4, 4), dtype=bool)
    a[1, 1] = True
    with pytest.raises(MedsslError, match="spacing"):
        hausdorff(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(MedsslError, match="spacing"):
        hausdorff(a, a, spacing=(1.0, 0.0))
    with pytest.raises(MedsslError, match="percentile"):
        hausdorff(a, a, percentile=101)
    with pytest.raises(MedsslError, match="tolerance"):
        normalized_surface_dice(a, a, tolerance=-1.0)
    with pytest.raises(MedsslError, match="shape"):
        hausdorff(a, np.zeros((4, 5), dtype=bool))
