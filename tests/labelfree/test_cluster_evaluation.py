from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medssl.errors import MedsslError
from medssl.labelfree.cluster_evaluation import evaluate_clusters, score_clusters


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """Two cases: cluster maps (1 = a dark square, 2 = the rest), 0/255 lesion masks, multi-label masks, images."""
    for i, shift in enumerate((0, 2)):
        labels = np.full((16, 16), 2, np.uint8)
        labels[4:10, 4:10] = 1
        truth = np.zeros((16, 16), np.uint8)
        truth[4 + shift : 10 + shift, 4:10] = 255
        image = np.where(labels == 1, 40, 200).astype(np.uint8)
        _write(tmp_path / "maps" / f"c{i}.png", labels)
        _write(tmp_path / "lesion" / f"c{i}.png", truth)
        _write(tmp_path / "multi" / "spot" / f"c{i}.png", truth)
        _write(tmp_path / "multi" / "rest" / f"c{i}.png", 255 - truth)
        _write(tmp_path / "images" / f"c{i}.png", image)
    return tmp_path


def test_best_cluster_scores_the_overlapping_cluster(folders: Path) -> None:
    result = evaluate_clusters(folders / "maps", folders / "lesion", protocol="best-cluster")
    rows = result["cases"]
    assert [r["cluster"] for r in rows] == [1, 1]
    assert rows[0]["dice"] == 1.0
    assert rows[1]["dice"] == pytest.approx(2 * 24 / 72)
    summary = result["summary"]["255"]
    assert summary["dice"] == pytest.approx((1 + 2 * 24 / 72) / 2)
    assert summary["dice_median"] == pytest.approx((1 + 2 * 24 / 72) / 2)
    assert result["settings"]["protocol"] == "best-cluster"


def test_multi_label_references_pick_a_cluster_per_structure(folders: Path) -> None:
    result = evaluate_clusters(folders / "maps", folders / "multi", protocol="best-cluster")
    picked = {(r["case"], r["label"]): r["cluster"] for r in result["cases"]}
    assert picked == {("c0", "rest"): 2, ("c0", "spot"): 1, ("c1", "rest"): 2, ("c1", "spot"): 1}


def test_no_ground_truth_protocols_and_paper_code(folders: Path) -> None:
    darkest = evaluate_clusters(folders / "maps", folders / "lesion", protocol="darkest", images_dir=folders / "images")
    border = evaluate_clusters(folders / "maps", folders / "lesion", protocol="border")
    assert [r["cluster"] for r in darkest["cases"]] == [1, 1] == [r["cluster"] for r in border["cases"]]
    paper = evaluate_clusters(folders / "maps", folders / "lesion", protocol="paper-code")
    assert set(paper["summary"]["255"]) >= {"dice", "hm", "xor"}
    assert "hd95" not in paper["cases"][0]


def test_missing_maps_and_missing_images_are_clear_errors(folders: Path) -> None:
    (folders / "maps" / "c1.png").unlink()
    with pytest.raises(MedsslError, match="c1"):
        evaluate_clusters(folders / "maps", folders / "lesion")
    with pytest.raises(MedsslError, match="--images"):
        evaluate_clusters(folders / "maps", folders / "lesion", protocol="darkest")
    with pytest.raises(MedsslError, match="unknown protocol"):
        evaluate_clusters(folders / "maps", folders / "lesion", protocol="oracle")


def test_score_clusters_on_arrays() -> None:
    labels = np.array([[1, 1, 2, 2]])
    truth = np.array([[0, 0, 1, 1]])
    scores = score_clusters(labels, truth, "best-cluster")
    assert scores["cluster"] == 2 and scores["n_clusters"] == 2 and scores["dice"] == 1.0
