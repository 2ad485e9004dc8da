from __future__ import annotations

import numpy as np
import pytest

from medssl.labelfree.config import KMeansConfig
from medssl.labelfree.kmeans import kmeans, kmeans_segment, pixel_features
from medssl.labelfree.preprocess import prepare_image
from tests.labelfree.conftest import dermoscopy_like


def test_kmeans_recovers_planted_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 50)
    points = centres[truth] + rng.normal(0, 0.5, (150, 2))
    assignment, found = kmeans(points, 3, seed=1)
    # The same partition up to renumbering, and centres near the planted ones.
    pairs = {(int(a), int(t)) for a, t in zip(assignment, truth, strict=True)}
    assert len(pairs) == 3
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.3


def test_kmeans_is_repeatable_and_checks_its_arguments() -> None:
    points = np.random.default_rng(1).normal(size=(40, 3))
    assert np.array_equal(kmeans(points, 4, seed=3)[0], kmeans(points, 4, seed=3)[0])
    with pytest.raises(ValueError, match="k="):
        kmeans(points, 41)


def test_position_features_are_appended_only_when_weighted() -> None:
    prepared = prepare_image(dermoscopy_like((32, 32), vignette=False)[0], size=32)
    assert pixel_features(prepared, 0.0).shape == (3, 32, 32)
    with_position = pixel_features(prepared, 1.0)
    assert with_position.shape == (5, 32, 32)
    assert with_position[3, 0, 0] == 0 and with_position[3, -1, 0] > 0 and with_position[4, 0, -1] > 0


def test_kmeans_segment_finds_the_lesion_and_excludes_the_vignette() -> None:
    image, lesion = dermoscopy_like((96, 128))
    result = kmeans_segment(image, KMeansConfig(size=64, hair_size=0))
    assert result.labels.shape == lesion.shape
    assert set(np.unique(result.labels)) == {0, 1, 2}
    dark = result.labels == 1
    assert (dark & lesion).sum() / (dark | lesion).sum() > 0.9
    assert result.labels[0, 0] == 0  # corner outside the field of view


def test_without_the_field_of_view_the_dark_corners_join_the_lesion() -> None:
    # The failure the field of view fixes: with two clusters, the vignette is clustered with the lesion.
    image, lesion = dermoscopy_like((96, 128))
    plain = KMeansConfig(clusters=2, size=64, hair_size=0, field_of_view=False, dark_corners=False, min_region=0)
    result = kmeans_segment(image, plain)
    dark = result.labels == 1
    assert dark[0, 0] and dark[-1, -1]
    assert (dark & lesion).sum() / (dark | lesion).sum() < 0.9
    # The dark-corner step, run without the field of view, leaves the corners out instead.
    corners = kmeans_segment(image, KMeansConfig(clusters=2, size=64, hair_size=0, field_of_view=False, min_region=0))
    dark = corners.labels == 1
    assert corners.labels[0, 0] == corners.labels[-1, -1] == 0
    assert (dark & lesion).sum() / (dark | lesion).sum() > 0.9
