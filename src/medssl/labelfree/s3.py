"""S3-Net's per-image optimisation: a fresh network is fitted to one picture and its argmax map is the result.

Karimijafarbigloo et al., "Self-supervised Semantic Segmentation: Consistency over Transformation", ICCV
Workshops 2023, https://arxiv.org/abs/2309.00143.

Each step feeds the picture and a randomly transformed copy (rotation, scale, translation) through the network
as one batch of two, and minimises ``weight_ce * L_ce + weight_affine * L_AT + weight_spatial * L_S`` (or the
boundary loss instead of ``L_S``) with SGD. The self-training targets of ``L_ce`` (and, transformed, of
``L_AT``) are the network's own argmax map, except during the first ``start_iterations`` steps with
``start="kmeans"``, when they are the k-means clusters of the same features (our default; with the paper's
start, a fresh network's clusters merge across the lesion border within a few steps on many images). The
optimisation stops once at most ``clusters`` clusters remain or fewer than ``stop_change`` of the pixels
changed cluster in a step (after ``min_iterations``), or after ``max_iterations``. Extra clusters are grouped
by colour (``medssl.labelfree.regions.merge_clusters``), so the output never has more than ``clusters``
clusters, which keeps the best-cluster evaluation honest.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from medssl import registry
from medssl.labelfree.config import LabelFreeMethod, S3Config
from medssl.labelfree.kmeans import kmeans, prepared_features
from medssl.labelfree.regions import ClusterResult, finish_clusters
from medssl.labelfree.s3_losses import (
    affine_consistency_loss,
    boundary_loss,
    random_affine,
    self_training_loss,
    spatial_consistency_loss,
    transform_pair,
)
from medssl.networks.s3_blocks import S3Net


def standardise(features: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_]) -> Tensor:
    """``(F, h, w)`` features to a ``(1, F, h, w)`` tensor with zero mean and unit spread inside ``valid``."""
    inside = features[:, valid]
    mean, std = inside.mean(axis=1), inside.std(axis=1)
    scaled = (features - mean[:, None, None]) / np.maximum(std, 1e-6)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray(scaled, dtype=np.float32))[None]


def s3_step_losses(
    network: S3Net,
    image: Tensor,
    valid: Tensor,
    config: S3Config,
    generator: torch.Generator,
    target: Tensor | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """The weighted losses of one optimisation step.

    Args:
        network: the network being fitted.
        image: ``(1, F, h, w)`` standardised features.
        valid: ``(1, h, w)`` field of view.
        config: weights and transform ranges.
        generator: random generator of the affine transform.
        target: ``(1, h, w)`` labels to use instead of the network's own argmax map (the k-means start).

    Returns:
        ``(losses, labels)``: ``{"total", "ce", "affine", "spatial" or "boundary"}`` and the argmax map
        ``(1, h, w)`` of the untransformed picture.
    """
    theta = random_affine(
        1,
        max_degrees=config.max_degrees,
        scale_range=config.scale_range,
        max_translation=config.max_translation,
        generator=generator,
    )
    transformed, _, valid_transformed = transform_pair(image, torch.zeros_like(valid, dtype=torch.long), valid, theta)
    response = network(torch.cat([image, transformed]).contiguous(memory_format=torch.channels_last))
    plain, moved = response[:1], response[1:]
    labels = plain.detach().argmax(dim=1)
    goal = labels if target is None else target
    _, moved_labels, _ = transform_pair(image, goal, valid, theta)
    losses = {
        "ce": self_training_loss(plain, valid, goal),
        "affine": affine_consistency_loss(moved, moved_labels, valid_transformed),
    }
    probabilities = plain.softmax(dim=1)
    if config.boundary_loss:
        losses["boundary"] = boundary_loss(probabilities, valid, config.boundary_factor)
    else:
        losses["spatial"] = spatial_consistency_loss(probabilities, image, valid)
    spatial = losses["boundary" if config.boundary_loss else "spatial"]
    losses["total"] = (
        config.weight_ce * losses["ce"] + config.weight_affine * losses["affine"] + config.weight_spatial * spatial
    )
    return losses, labels


def s3_segment(image: npt.NDArray[np.generic], config: S3Config | None = None) -> ClusterResult:
    """Segment one picture with S3-Net, optimising a freshly initialised network on it.

    Args:
        image: ``(C, H, W)`` picture, ``C`` 1 or 3.
        config: settings (defaults: ``S3Config()``).

    Returns:
        The ``ClusterResult``: an ``(H, W)`` map with clusters ``1..K`` from darkest to brightest, 0 outside the
        field of view; ``iterations`` and per-step ``losses`` recorded.
    """
    cfg = config or S3Config()
    cfg.check()
    start = time.perf_counter()
    prepared, features = prepared_features(image, cfg)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    x = standardise(features, prepared.valid)
    valid = torch.from_numpy(prepared.valid)[None]
    network = S3Net(x.shape[1], cfg.channels, cfg.blocks, cfg.learnable_affine, cfg.stride)
    network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    start_labels = None
    if cfg.start == "kmeans":
        assignment, _ = kmeans(features[:, prepared.valid].T, cfg.clusters, seed=cfg.seed)
        start_map = np.zeros(prepared.valid.shape, dtype=np.int64)
        start_map[prepared.valid] = assignment
        start_labels = torch.from_numpy(start_map)[None]
    labels, history = optimise(network, x, valid, cfg, generator, start_labels)
    working = np.zeros(prepared.valid.shape, dtype=np.int64)
    working[prepared.valid] = labels[0].numpy()[prepared.valid] + 1
    return finish_clusters(
        working, prepared, cfg.clusters, cfg.min_region, iterations=len(history), start=start, losses=history
    )


def mean_iou(labels: Tensor, reference: Tensor, clusters: int) -> float:
    """Mean over the reference's clusters ``0..clusters-1`` (those present) of the IoU with ``labels``."""
    ious = []
    for c in range(clusters):
        ref = reference == c
        if ref.any():
            mine = labels == c
            ious.append(float((ref & mine).sum()) / float((ref | mine).sum()))
    return sum(ious) / max(len(ious), 1)


def optimise(
    network: S3Net,
    x: Tensor,
    valid: Tensor,
    config: S3Config,
    generator: torch.Generator,
    start_labels: Tensor | None = None,
) -> tuple[Tensor, list[dict[str, float]]]:
    """Fit ``network`` to one picture with SGD; the last step's argmax map is the result.

    With ``start_labels``, the self-training targets are those labels until the network's argmax reproduces
    them with a mean IoU over the clusters of ``start_agreement`` (or for ``start_iterations`` steps); then its
    own map. (A share of agreeing pixels would let a small lesion be lost in the 5 % that disagree.)
    The early stop (at most ``clusters`` clusters, or fewer than ``stop_change`` of the pixels changed) is
    checked from ``min_iterations`` on, and never while the start labels are the targets.

    Args:
        network: a freshly initialised network.
        x: ``(1, F, h, w)`` standardised features.
        valid: ``(1, h, w)`` field of view.
        config: the settings.
        generator: random generator of the affine transforms.
        start_labels: ``(1, h, w)`` labels in ``[0, clusters)`` to start from (k-means), or None.

    Returns:
        ``(labels, history)``: the ``(1, h, w)`` argmax map and per-step losses, cluster counts, share of
        pixels changed and (while starting) agreement with the start labels.
    """
    optimiser = torch.optim.SGD(network.parameters(), lr=config.lr, momentum=config.momentum)
    history: list[dict[str, float]] = []
    labels = torch.zeros_like(valid, dtype=torch.long)
    previous: Tensor | None = None
    starting = start_labels is not None
    for step in range(1, config.max_iterations + 1):
        losses, labels = s3_step_losses(network, x, valid, config, generator, start_labels if starting else None)
        optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimiser.step()
        n_clusters = int(labels[valid].unique().numel())
        changed = 1.0 if previous is None else float((labels != previous)[valid].float().mean())
        previous = labels
        record = {**{k: float(v.detach()) for k, v in losses.items()}, "clusters": float(n_clusters)}
        history.append({**record, "changed": changed})
        if starting and start_labels is not None:
            agreement = mean_iou(labels[valid], start_labels[valid], config.clusters)
            history[-1]["agreement"] = agreement
            starting = agreement < config.start_agreement and step < config.start_iterations
            continue
        if step >= config.min_iterations and (n_clusters <= config.clusters or changed < config.stop_change):
            break
    return labels, history


registry.register_object("label-free", "s3", LabelFreeMethod(S3Config, s3_segment))
