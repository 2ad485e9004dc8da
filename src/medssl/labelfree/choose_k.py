"""The number of clusters per image (``clusters: auto``): the K of ``AUTO_CLUSTERS`` whose k-means clustering of
a seeded sample of the pixels has the largest mean silhouette (Rousseeuw, "Silhouettes: a graphical aid to the
interpretation and validation of cluster analysis", 1987).

The silhouette of a point is ``(b - a) / max(a, b)`` with ``a`` its mean distance to the other points of its
cluster and ``b`` the smallest mean distance to the points of another cluster; its mean over the points is high
when the clusters are compact and apart. Unlike the within-cluster sum of squares it does not keep improving
with K, and unlike a Gaussian mixture's BIC it needs no covariance model of colour noise (which over the tens
of thousands of pixels of one picture favours many components). On a sample of ``sample`` pixels it costs
``sample**2`` distances per K.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import cdist

from medssl.labelfree.config import AUTO_CLUSTERS, LabelFreeConfig

ConfigT = TypeVar("ConfigT", bound=LabelFreeConfig)
_SAMPLE = 1500


def silhouette(
    points: npt.NDArray[np.floating],
    assignment: npt.NDArray[np.integer],
    distances: npt.NDArray[np.floating] | None = None,
) -> float:
    """Mean silhouette of ``(N, F)`` points clustered by ``assignment`` ``(N,)``; points alone in their cluster
    count 0 (Rousseeuw's convention), and a single cluster gives 0.

    Args:
        points: ``(N, F)`` points.
        assignment: ``(N,)`` cluster of each point.
        distances: their ``(N, N)`` Euclidean distances, when already computed (they do not depend on the
            clustering: ``choose_clusters`` computes them once for every K).

    Returns:
        The mean silhouette in [-1, 1].
    """
    x = np.asarray(points, dtype=np.float64)
    ids, index = np.unique(assignment, return_inverse=True)
    if len(ids) < 2:
        return 0.0
    if distances is None:
        distances = cdist(x, x)
    one_hot = np.eye(len(ids))[index]  # (N, k)
    sizes = one_hot.sum(axis=0)
    sums = distances @ one_hot  # (N, k): summed distance of each point to each cluster
    own = sizes[index] - 1
    a = np.where(own > 0, sums[np.arange(len(x)), index] / np.maximum(own, 1), 0.0)
    others = sums / sizes
    others[np.arange(len(x)), index] = np.inf
    b = others.min(axis=1)
    s = np.where(own > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def choose_clusters(
    points: npt.NDArray[np.floating],
    candidates: tuple[int, ...] = AUTO_CLUSTERS,
    *,
    sample: int = _SAMPLE,
    seed: int = 0,
) -> tuple[int, dict[int, float]]:
    """The K of ``candidates`` with the largest silhouette of k-means on a seeded sample of ``points``.

    Args:
        points: ``(N, F)`` pixel features.
        candidates: the numbers of clusters to try.
        sample: points drawn (without replacement) for the k-means and the silhouette.
        seed: seed of the sample and of the k-means.

    Returns:
        ``(k, scores)``: the chosen K (ties: the smaller) and the silhouette of every K tried.
    """
    from medssl.labelfree.kmeans import kmeans  # kmeans_segment imports this module

    rng = np.random.default_rng(seed)
    x = np.asarray(points, dtype=np.float64)
    drawn = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    scores: dict[int, float] = {}
    distances = cdist(drawn, drawn)
    for k in candidates:
        if k <= len(np.unique(drawn, axis=0)):
            assignment, _ = kmeans(drawn, k, restarts=2, seed=seed)
            scores[k] = silhouette(drawn, assignment, distances)
    if not scores:
        return min(candidates), scores
    best = max(scores.values())
    return min(k for k, s in scores.items() if s >= best - 1e-9), scores


def with_clusters(config: ConfigT, features: npt.NDArray[np.floating], valid: npt.NDArray[np.bool_]) -> ConfigT:
    """``config`` itself for a fixed number of clusters; for ``clusters: auto``, a copy with the number that
    ``choose_clusters`` picks for the ``(F, h, w)`` features inside ``valid``."""
    if config.clusters != "auto":
        return config
    k, _ = choose_clusters(features[:, valid].T, seed=config.seed)
    return dataclasses.replace(config, clusters=k)
