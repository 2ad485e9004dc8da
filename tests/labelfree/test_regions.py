from __future__ import annotations

import numpy as np

from medssl.labelfree.regions import absorb_small_regions, merge_clusters, order_by_lightness, to_input_size


def test_small_regions_join_the_cluster_around_them() -> None:
    labels = np.ones((12, 12), dtype=np.int64)
    labels[:, 6:] = 2
    labels[2, 2] = 2  # a speck in cluster 1
    labels[8:10, 8:10] = 1  # a hole in cluster 2
    labels[0, :] = 0  # outside the field of view: never changed
    cleaned = absorb_small_regions(labels, min_size=5)
    expected = np.ones((12, 12), dtype=np.int64)
    expected[:, 6:] = 2
    expected[0, :] = 0
    assert np.array_equal(cleaned, expected)
    assert np.array_equal(absorb_small_regions(labels, min_size=0), labels)


def test_merge_groups_clusters_by_mean_feature() -> None:
    labels = np.repeat(np.arange(1, 5), 4).reshape(4, 4)  # four rows, four clusters
    features = np.array([0.0, 1.0, 10.0, 11.0])[labels - 1][None].astype(np.float32)
    merged = merge_clusters(labels, features, clusters=2)
    assert len(np.unique(merged)) == 2
    assert merged[0, 0] == merged[1, 0] != merged[2, 0] == merged[3, 0]
    assert np.array_equal(merge_clusters(labels, features, clusters=4), labels)


def test_clusters_are_numbered_from_dark_to_bright() -> None:
    labels = np.array([[5, 5, 9, 0]])
    lightness = np.array([[80.0, 80.0, 20.0, 0.0]])
    assert order_by_lightness(labels, lightness).tolist() == [[2, 2, 1, 0]]


def test_mapping_back_keeps_the_labels_and_reaches_the_input_size() -> None:
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[2:6, 2:6] = 3
    labels[:, :1] = 7
    big = to_input_size(labels, (20, 30))
    assert big.shape == (20, 30)
    assert set(np.unique(big)) == {0, 3, 7}
    assert big[10, 15] == 3 and big[0, 15] == 0
