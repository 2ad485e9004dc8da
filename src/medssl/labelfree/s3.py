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
from torch import Tensor, nn

from medssl import registry
from medssl.engine.fit_per_image import PerImageSystem, fit_per_image
from medssl.labelfree.choose_k import with_clusters
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
from medssl.systems import Batch


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
    cfg = with_clusters(cfg, features, prepared.valid)  # the K of the k-means start, for clusters: auto
    torch.manual_seed(cfg.seed)  # the network's initialisation
    x = standardise(features, prepared.valid)
    system = S3System(cfg, x.shape[1], torch.from_numpy(prepared.valid)[None])
    if cfg.start == "kmeans":
        system.start_from(kmeans_start(features, prepared.valid, cfg))
    history = fit_per_image(system, {"image": x}, cfg.max_iterations)
    losses = [{("total" if name == "loss" else name): value for name, value in step.items()} for step in history]
    working = np.zeros(prepared.valid.shape, dtype=np.int64)
    working[prepared.valid] = system.labels[0].numpy()[prepared.valid] + 1
    return finish_clusters(
        working, prepared, int(cfg.clusters), cfg.min_region, iterations=len(history), start=start, losses=losses
    )


def kmeans_start(features: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_], config: S3Config) -> Tensor:
    """The k-means start: ``(1, h, w)`` labels in ``[0, clusters)`` of the ``(F, h, w)`` features (0 outside
    ``valid``)."""
    assignment, _ = kmeans(features[:, valid].T, int(config.clusters), seed=config.seed)
    start_map = np.zeros(valid.shape, dtype=np.int64)
    start_map[valid] = assignment
    return torch.from_numpy(start_map)[None]


def mean_iou(labels: Tensor, reference: Tensor, clusters: int) -> float:
    """Mean over the reference's clusters ``0..clusters-1`` (those present) of the IoU with ``labels``."""
    ious = []
    for c in range(clusters):
        ref = reference == c
        if ref.any():
            mine = labels == c
            ious.append(float((ref & mine).sum()) / float((ref | mine).sum()))
    return sum(ious) / max(len(ious), 1)


class S3System(PerImageSystem):
    """S3-Net fitted to one picture (``medssl.engine.fit_per_image``): SGD with momentum, self-training targets
    from the k-means start (``start_from``) until the network reproduces them, then its own argmax map.

    With start labels, the targets are those labels until the network's argmax reproduces them with a mean IoU over
    the clusters of ``start_agreement`` (or for ``start_iterations`` steps); then its own map. (A share of agreeing
    pixels would let a small lesion be lost in the 5 % that disagree.) The early stop (at most ``clusters``
    clusters, or fewer than ``stop_change`` of the pixels changed) is checked from ``min_iterations`` on, and never
    while the start labels are the targets.

    Args:
        config: the settings.
        in_channels: feature channels of the picture.
        valid: ``(1, h, w)`` field of view.

    Attributes:
        labels: the argmax map ``(1, h, w)`` of the picture at the last step (the result).
    """

    def __init__(self, config: S3Config, in_channels: int, valid: Tensor) -> None:
        super().__init__()
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        network = S3Net(in_channels, config.channels, config.blocks, config.learnable_affine, config.stride)
        self.network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.valid = valid
        self.start_labels: Tensor | None = None
        self.labels = torch.zeros_like(valid, dtype=torch.long)
        self.previous: Tensor | None = None
        self.starting = False
        self._record: dict[str, float] = {}
        self._stop = False

    def start_from(self, labels: Tensor) -> None:
        """Use ``labels`` ``(1, h, w)`` in ``[0, clusters)`` (the k-means start) as the first targets."""
        self.start_labels = labels

    def configure_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with momentum (the paper's)."""
        return torch.optim.SGD(parameters, lr=self.config.lr, momentum=self.config.momentum)

    def begin_fit(self, batch: Batch) -> None:
        """Fresh per-fit state: no previous map; the start labels (if any) are the targets."""
        self.labels = torch.zeros_like(self.valid, dtype=torch.long)
        self.previous = None
        self.starting = self.start_labels is not None

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """``"loss"``: the weighted total; the terms (detached) are logged; keeps the step's argmax map."""
        target = self.start_labels if self.starting else None
        losses, self.labels = s3_step_losses(
            self.network, batch["image"], self.valid, self.config, self.generator, target
        )
        total = losses.pop("total")
        return {**{name: value.detach() for name, value in losses.items()}, "loss": total}

    def after_step(self, step: int, max_steps: int) -> None:
        """Cluster count, share of pixels changed, the hand-over from the start labels, and the early stop."""
        valid, config = self.valid, self.config
        n_clusters = int(self.labels[valid].unique().numel())
        changed = 1.0 if self.previous is None else float((self.labels != self.previous)[valid].float().mean())
        self.previous = self.labels
        self._record = {"clusters": float(n_clusters), "changed": changed}
        if self.starting and self.start_labels is not None:
            agreement = mean_iou(self.labels[valid], self.start_labels[valid], int(config.clusters))
            self._record["agreement"] = agreement
            self.starting = agreement < config.start_agreement and step + 1 < config.start_iterations
            self._stop = False
            return
        self._stop = step + 1 >= config.min_iterations and (
            n_clusters <= int(config.clusters) or changed < config.stop_change
        )

    def step_record(self) -> dict[str, float]:
        """``clusters``, ``changed`` and (while starting) ``agreement`` with the start labels."""
        return self._record

    def should_stop(self, step: int) -> bool:
        """At most ``clusters`` clusters or fewer than ``stop_change`` changed, from ``min_iterations`` on."""
        return self._stop

    def predict(self, x: Tensor) -> Tensor:
        """The network's logits ``(B, K, h, w)`` for standardised features ``x``."""
        return self.network(x)

    def export(self) -> dict[str, nn.Module]:
        """The fitted network."""
        return {"network": self.network}


registry.register_object("label-free", "s3", LabelFreeMethod(S3Config, s3_segment))
