"""Smoke tests on real dermoscopy (PH2); skipped when ../shared/data is absent. Full runs: benchmarks/labelfree.py."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.data.io import read_image, read_label
from medssl.labelfree.cluster_evaluation import score_clusters
from medssl.labelfree.config import KMeansConfig, S3Config
from medssl.labelfree.kmeans import kmeans_segment
from medssl.labelfree.s3 import s3_segment
from tests.conftest import real_dataset

CASES = ("IMD002", "IMD004", "IMD008")


@pytest.mark.realdata
def test_field_of_view_stops_the_vignette_joining_the_lesion_on_ph2() -> None:
    root = real_dataset("ph2")
    ours, plain = [], []
    for case in CASES:
        image, _ = read_image(root / "images" / f"{case}.png")
        truth = read_label(root / "masks" / f"{case}.png")[0] > 0
        ours.append(score_clusters(kmeans_segment(image).labels, truth, "best-cluster")["dice"])
        no_fov = kmeans_segment(image, KMeansConfig(field_of_view=False, hair_size=0, colour_space="rgb"))
        plain.append(score_clusters(no_fov.labels, truth, "best-cluster")["dice"])
    assert np.mean(ours) > 0.9
    assert np.mean(ours) > np.mean(plain) + 0.05


@pytest.mark.realdata
def test_s3_on_one_ph2_image() -> None:
    root = real_dataset("ph2")
    image, _ = read_image(root / "images" / "IMD002.png")
    truth = read_label(root / "masks" / "IMD002.png")[0] > 0
    result = s3_segment(image, S3Config())
    assert result.labels.shape == truth.shape
    assert score_clusters(result.labels, truth, "best-cluster")["dice"] > 0.85
    assert score_clusters(result.labels, truth, "border")["cluster"] == 1
