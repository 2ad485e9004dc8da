"""k-means clustering of pixel features: the baseline of the label-free methods.

Lloyd's algorithm with k-means++ seeding (Arthur and Vassilvitskii, "k-means++: the advantages of careful
seeding", SODA 2007) on the features of ``medssl.labelfree.preprocess`` (colour or intensity, optionally the
pixel position), inside the field of view.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from medssl import registry
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, LabelFreeMethod
from medssl.labelfree.preprocess import PreparedImage, prepare_image
from medssl.labelfree.regions import ClusterResult, finish_clusters


def kmeans(
    points: npt.NDArray[np.floating], k: int, *, iterations: int = 50, restarts: int = 3, seed: int = 0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Cluster points with k-means (k-means++ seeding, Lloyd iterations, best of ``restarts``).

    Args:
        points: ``(N, F)`` points.
        k: number of clusters (``<= N``).
        iterations: Lloyd iterations at most (stops early when no assignment changes).
        restarts: independent seedings; the lowest within-cluster sum of squares wins.
        seed: random seed.

    Returns:
        ``(assignment, centres)``: ``(N,)`` cluster index in ``[0, k)`` and ``(k, F)`` centres.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"need points of shape (N, F) with N >= k >= 1, got {x.shape} and k={k}")
    rng = np.random.default_rng(seed)
    best: tuple[float, npt.NDArray[np.int64], npt.NDArray[np.float64]] | None = None
    for _ in range(restarts):
        centres = _seed_centres(x, k, rng)
        assignment = np.full(len(x), -1, dtype=np.int64)
        for _ in range(iterations):
            distances = _squared_distances(x, centres)
            new = distances.argmin(axis=1)
            if np.array_equal(new, assignment):
                break
            assignment = new
            for j in range(k):
                members = x[assignment == j]
                if len(members):
                    centres[j] = members.mean(axis=0)
        inertia = float(_squared_distances(x, centres)[np.arange(len(x)), assignment].sum())
        if best is None or inertia < best[0]:
            best = (inertia, assignment.copy(), centres.copy())
    assert best is not None
    return best[1], best[2]


def _squared_distances(x: npt.NDArray[np.float64], centres: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)


def _seed_centres(x: npt.NDArray[np.float64], k: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """k-means++: each next centre drawn with probability proportional to the squared distance to the nearest."""
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[index])
        nearest = np.minimum(nearest, ((x - x[index]) ** 2).sum(axis=1))
    return np.stack(centres)


def pixel_features(prepared: PreparedImage, position_weight: float) -> npt.NDArray[np.float32]:
    """``(F, h, w)`` features, with two position channels (row, column in [0, 1]) times ``position_weight``
    times the mean per-channel spread of the colour features inside the field of view when the weight is > 0."""
    features = prepared.features
    if position_weight <= 0:
        return features
    h, w = features.shape[1:]
    spread = float(features[:, prepared.valid].std(axis=1).mean())
    rows, cols = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    position = np.stack([rows, cols]).astype(np.float32) * position_weight * spread
    return np.concatenate([features, position])


def prepared_features(
    image: npt.NDArray[np.generic], config: LabelFreeConfig
) -> tuple[PreparedImage, npt.NDArray[np.float32]]:
    """The working-size picture (``prepare_image`` with the config's settings) and its ``(F, h, w)`` pixel
    features: the shared first step of every label-free method."""
    prepared = prepare_image(
        image,
        size=config.size,
        colour_space=config.colour_space,
        detect_field_of_view=config.field_of_view,
        hair_size=config.hair_size,
        smooth_sigma=config.smooth_sigma,
        artefact_steps=config.artefact_steps,
    )
    return prepared, pixel_features(prepared, config.position_weight)


def kmeans_segment(image: npt.NDArray[np.generic], config: KMeansConfig | None = None) -> ClusterResult:
    """Cluster a picture's pixels with k-means.

    Args:
        image: ``(C, H, W)`` picture, ``C`` 1 or 3.
        config: settings (defaults: ``KMeansConfig()``).

    Returns:
        The ``ClusterResult``: an ``(H, W)`` map with clusters ``1..K`` from darkest to brightest (K chosen per image
        with ``clusters: auto``), 0 outside the field of view and on excluded artefacts.
    """
    from medssl.labelfree.choose_k import with_clusters

    cfg = config or KMeansConfig()
    cfg.check()
    start = time.perf_counter()
    prepared, features = prepared_features(image, cfg)
    cfg = with_clusters(cfg, features, prepared.valid)
    assignment, _ = kmeans(
        features[:, prepared.valid].T,
        int(cfg.clusters),
        iterations=cfg.iterations,
        restarts=cfg.restarts,
        seed=cfg.seed,
    )
    labels = np.zeros(prepared.valid.shape, dtype=np.int64)
    labels[prepared.valid] = assignment + 1
    return finish_clusters(labels, prepared, int(cfg.clusters), cfg.min_region, iterations=0, start=start)


registry.register_object("label-free", "kmeans", LabelFreeMethod(KMeansConfig, kmeans_segment))
