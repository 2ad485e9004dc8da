"""The ground-truth-free lesion rule: one region, chosen by contrast, compactness, centre, contact and size."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.labelfree.lesion import lesion_mask, score_region, score_regions
from medssl.labelfree.protocols import cluster_protocols, darkest_cluster, select_cluster, select_mask
from medssl.metrics.overlap import dice

ROWS, COLS = np.mgrid[:120, :120]
SKIN, LESION, DARKER = 70.0, 40.0, 15.0


def _picture(lesion: np.ndarray, *dark_regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A two-cluster map (1: the lesion and the dark regions, 2: skin) and its noisy lightness."""
    labels = np.full(lesion.shape, 2, dtype=np.int64)
    lightness = np.full(lesion.shape, SKIN)
    labels[lesion] = 1
    lightness[lesion] = LESION
    for region in dark_regions:
        labels[region] = 1
        lightness[region] = DARKER
    return labels, lightness + np.random.default_rng(0).normal(0, 3, lesion.shape)


def _disc(row: float, col: float, radius: float) -> np.ndarray:
    return np.hypot(ROWS - row, COLS - col) <= radius


def test_the_lesion_wins_over_a_darker_region_at_the_border() -> None:
    lesion = _disc(60, 62, 22)
    corner = _disc(0, 0, 30)
    strip = (ROWS >= 112) & (COLS >= 20) & (COLS < 100)
    labels, lightness = _picture(lesion, corner, strip)
    cluster, mask = lesion_mask(labels, lightness)
    assert cluster == 1 and dice(mask, lesion) > 0.98  # the region only, not the whole dark cluster
    separate = labels.copy()
    separate[corner | strip] = 3  # the darker regions as their own cluster: "darkest" takes them
    assert darkest_cluster(separate, lightness) == 3
    assert dice(lesion_mask(separate, lightness)[1], lesion) > 0.98


def test_a_small_central_lesion_is_kept() -> None:
    lesion = _disc(58, 63, 7)  # about 1 % of the picture
    assert 0.005 < lesion.mean() < 0.02
    labels, lightness = _picture(lesion, _disc(119, 119, 25))
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_a_lesion_touching_one_border_is_kept() -> None:
    lesion = _disc(60, 8, 28)  # cut by the left edge
    labels, lightness = _picture(lesion, _disc(0, 119, 25))
    spot = _disc(60, 64, 8)  # a faint central spot (a third cluster): central, but hardly darker than skin
    labels[spot], lightness[spot] = 3, SKIN - 8
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_a_lesion_filling_the_frame_is_kept() -> None:
    # A close-up: the lesion touches all four edges and leaves skin in the corners only. Its ring lies mostly
    # outside the image, which for an off-centre region (a dark strip) would mean an artefact.
    lesion = np.hypot(ROWS - 59.5, COLS - 59.5) <= 66
    labels, lightness = _picture(lesion)
    assert 0.8 < lesion.mean() < 0.95
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_centred_skin_around_a_lesion_cut_by_the_border_is_not_taken() -> None:
    # The skin fills the frame around a lesion cut by the border and is centred; the lesion must still win.
    lesion = _disc(60, 0, 42)
    labels, lightness = _picture(lesion)
    assert 0.15 < lesion.mean() < 0.25
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_image_edge_contact_is_relieved_only_for_a_centred_darker_region() -> None:
    # A centred region filling the frame around a disc has most of its ring outside the image. Darker than its
    # ring it is a close-up lesion and the edge does not count; brighter it is skin, and the edge counts in full.
    frame = ~_disc(60, 60, 25)
    clustered = np.ones_like(frame)
    dark = np.where(frame, LESION, SKIN)
    bright = np.where(frame, SKIN, LESION)
    spread = float(dark.std())
    darker, brighter = score_region(frame, clustered, dark, spread), score_region(frame, clustered, bright, spread)
    assert darker["centre"] < 0.02 and darker["contact"] == 0.0
    assert brighter["contact"] > 0.5
    assert brighter["contrast"] == pytest.approx(darker["contrast"] / 2, rel=1e-6)  # brighter counts half


def test_a_lesion_split_over_two_clusters_is_taken_whole() -> None:
    lesion = _disc(60, 60, 25)
    left, right = lesion & (COLS < 60), lesion & (COLS >= 60)
    labels, lightness = _picture(lesion)
    labels[right], lightness[right] = 2, lightness[right] + 12  # clusters: 1 left half, 2 right half, 3 skin
    labels[~lesion] = 3
    ranked = score_regions(labels, lightness)
    assert ranked[0].clusters == (1, 2)
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.98
    assert dice(lesion_mask(labels, lightness)[1], left) < 0.8


def test_large_maps_are_scored_strided_and_mapped_back() -> None:
    lesion = np.kron(_disc(60, 62, 22), np.ones((5, 5), bool))  # 600 x 600
    labels, lightness = _picture(lesion)
    _, mask = lesion_mask(labels, lightness)
    assert mask.shape == (600, 600) and dice(mask, lesion) > 0.99


def test_the_rule_is_registered_for_segment_and_evaluate() -> None:
    lesion = _disc(60, 62, 22)
    labels, lightness = _picture(lesion, _disc(0, 0, 30))
    assert "lesion" in cluster_protocols(without_truth=True)
    cluster, mask = select_mask("lesion", labels, None, lightness)
    assert select_cluster("lesion", labels, None, lightness) == cluster == 1
    assert dice(mask, lesion) > 0.98
    assert np.array_equal(select_mask("border", labels)[1], labels == select_cluster("border", labels))
    with pytest.raises(MedsslError, match="images"):
        select_mask("lesion", labels)
    with pytest.raises(MedsslError, match="shape"):
        lesion_mask(labels, lightness[:10])


def test_a_lesion_of_a_few_percent_beats_a_smaller_darker_clump() -> None:
    lesion = _disc(70, 40, 11)  # about 2.6 % of the picture
    clump = _disc(55, 70, 6)  # under 1 %, darker and nearer the centre (a clump of hair)
    labels, lightness = _picture(lesion, clump)
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_a_dark_corner_behind_a_thin_border_line_is_not_taken_for_a_lesion_cut_by_the_edge() -> None:
    # A cut lesion against the left edge, and the dark rim of the field of view in the bottom-right corner,
    # separated from the image edge by a 1-pixel line of the skin cluster (a scanner's border line).
    lesion = _disc(40, 0, 30)
    corner = np.hypot(ROWS - 119, COLS - 119) <= 35
    line = (ROWS == 119) | (COLS == 119)
    labels, lightness = _picture(lesion, corner & ~line)
    lightness[line] = SKIN
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_a_centred_lesion_filling_the_frame_beside_skin_in_one_corner_is_kept() -> None:
    # A close-up cut through the lesion: it fills over 90 % of the frame, textured (its spread makes the contrast
    # modest, as on PH2); the skin is left in one corner.
    lesion = np.hypot(ROWS, COLS) > 35
    labels, lightness = _picture(lesion)
    lightness += np.random.default_rng(1).normal(0, 30, lightness.shape)
    assert lesion.mean() > 0.9
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95


def test_a_contrasted_lesion_cut_by_the_edge_beats_a_faint_blob_of_a_few_percent() -> None:
    # A lesion mostly outside the frame (contact with the edge, off-centre) and, in the centre, a compact blob of
    # a few percent hardly darker than the skin (k-means gives such a shade of skin its own cluster). Its size
    # must not earn it the bonus meant for a lesion of a few percent: a region that does not stand out is none.
    lesion = _disc(60, -22, 32)
    labels, lightness = _picture(lesion)
    blob = _disc(60, 64, 14)
    labels[blob], lightness[blob] = 3, SKIN - 1
    faint = next(r for r in score_regions(labels, lightness) if dice(r.mask, blob) > 0.95)
    assert faint.terms["contrast"] < 0.1 and faint.terms["compactness"] > 0.8 and faint.terms["presence"] == 1.0
    assert dice(lesion_mask(labels, lightness)[1], lesion) > 0.95
