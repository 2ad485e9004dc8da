"""``clusters: auto``: the number of clusters chosen per image by the silhouette."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.errors import MedsslError
from medssl.labelfree.choose_k import choose_clusters, silhouette
from medssl.labelfree.config import KMeansConfig, S3Config
from medssl.labelfree.kmeans import kmeans_segment
from medssl.labelfree.s3 import s3_segment


def _regions(colours: list[tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """A ``(3, 48, 48)`` picture of vertical bands, one per colour, with noise."""
    image = np.zeros((3, 48, 48))
    bands = np.array_split(np.arange(48), len(colours))
    for band, colour in zip(bands, colours, strict=True):
        image[:, :, band] = np.array(colour)[:, None, None]
    image += np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_silhouette_by_hand() -> None:
    points = np.array([[0.0], [1.0], [10.0], [11.0]])
    # a = 1 for every point, b = 10 or 9 (mean distance to the other pair): s = 1 - a / b.
    expected = np.mean([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5])
    assert silhouette(points, np.array([0, 0, 1, 1])) == pytest.approx(expected)
    assert silhouette(points, np.array([0, 1, 0, 1])) < 0  # a wrong split scores below zero
    assert silhouette(points, np.zeros(4, int)) == 0.0


def test_auto_picks_three_on_three_regions_and_two_on_two() -> None:
    three = _regions([(220, 180, 170), (150, 100, 75), (60, 35, 25)])
    two = _regions([(220, 180, 170), (110, 70, 50)])
    for image, k in ((three, 3), (two, 2)):
        labels = kmeans_segment(image, KMeansConfig(size=48, clusters="auto", field_of_view=False)).labels
        assert labels.max() == k
        assert kmeans_segment(image, KMeansConfig(size=48, clusters=4, field_of_view=False)).labels.max() == 4
    centres = np.repeat([[0.0, 0.0], [9.0, 0.0]], 150, axis=0)
    k, scores = choose_clusters(np.random.default_rng(0).normal(size=(300, 2)) + centres)
    assert k == 2 and set(scores) == {2, 3, 4, 5}


def test_s3_starts_from_the_automatic_number_of_clusters() -> None:
    three = _regions([(220, 180, 170), (150, 100, 75), (60, 35, 25)])
    config = S3Config(size=32, field_of_view=False, channels=8, blocks=1, max_iterations=3, start_iterations=2)
    assert s3_segment(three, config).labels.max() == 3
    with pytest.raises(MedsslError, match="channels"):
        S3Config(channels=4).check()  # auto may need up to five clusters
    S3Config(channels=4, clusters=3).check()
