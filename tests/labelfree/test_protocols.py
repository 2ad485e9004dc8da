from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.labelfree.protocols import (
    best_overlap_cluster,
    border_cluster,
    darkest_cluster,
    paper_code_scores,
    select_cluster,
)

# 8x8 map: cluster 1 a centred square, cluster 2 everything else inside, 0 the left column (outside the view).
LABELS = np.full((8, 8), 2, dtype=np.int64)
LABELS[2:6, 2:6] = 1
LABELS[:, 0] = 0


def test_best_cluster_is_the_one_overlapping_the_truth_most() -> None:
    truth = np.zeros((8, 8), bool)
    truth[1:5, 1:5] = True  # 9 pixels of cluster 1, 6 of cluster 2 (and one outside)
    assert best_overlap_cluster(LABELS, truth) == 1
    truth[:, 6:] = True  # now 6 + 16 pixels of cluster 2
    assert best_overlap_cluster(LABELS, truth) == 2
    assert best_overlap_cluster(np.zeros((8, 8), np.int64), truth) == 0
    with pytest.raises(MedsslError, match="shape"):
        best_overlap_cluster(LABELS, truth[:4])


def test_border_rule_picks_the_cluster_away_from_the_edges() -> None:
    assert border_cluster(LABELS) == 1
    swapped = np.where(LABELS == 0, 0, 3 - LABELS)
    assert border_cluster(swapped) == 2


def test_darkest_rule_uses_mean_lightness() -> None:
    lightness = np.where(LABELS == 1, 20.0, 70.0)
    assert darkest_cluster(LABELS, lightness) == 1
    assert darkest_cluster(LABELS, 100.0 - lightness) == 2
    with pytest.raises(MedsslError, match="images"):
        select_cluster("darkest", LABELS)
    with pytest.raises(MedsslError, match="ground truth"):
        select_cluster("best-cluster", LABELS)
    with pytest.raises(MedsslError, match="unknown protocol"):
        select_cluster("oracle", LABELS)


def test_paper_code_scoring_by_hand() -> None:
    # Truth: a 2x2 square at rows/cols 10-11 of a 30x30 image. Prediction: the truth, a 1-pixel bump next to
    # it, and a far-away blob. The dilated truth (5x5 twice: +-4 px) keeps the bump and deletes the blob.
    truth = np.zeros((30, 30), bool)
    truth[10:12, 10:12] = True
    pred = truth.copy()
    pred[10, 12] = True  # inside the dilated truth: kept as a false positive
    pred[25:28, 25:28] = True  # 9 pixels far away: deleted by the mask
    scores = paper_code_scores(pred, truth)
    # After masking: P = 5 pixels, G = 4, overlap 4, union 5.
    assert scores["dice"] == pytest.approx(2 * 4 / 9)
    assert scores["hm"] == pytest.approx(1 - 4 / 5)
    assert scores["xor"] == pytest.approx(1 / 4)
    honest = 2 * 4 / (4 + 1 + 9 + 4)
    assert scores["dice"] > honest  # the masking is what makes the public code's numbers optimistic


def test_paper_code_scoring_of_empty_masks() -> None:
    empty = np.zeros((6, 6), bool)
    assert paper_code_scores(empty, empty) == {"dice": 1.0, "hm": 0.0, "xor": None}
