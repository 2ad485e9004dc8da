"""Settings of the label-free methods (dataclass defaults < YAML file < keyword overrides, as in
``medssl.config``); the resolved settings are written into every output folder as ``config.yaml``.

S3-Net's defaults follow the source document (seeds/003) where it gives a value: loss weights 3.5 / 0.5 / 2,
at most 50 iterations, SGD with momentum 0.9, 256x256 working size, two I-LKA blocks, boundary downsampling
factor 16. Where our defaults differ (learning rate, start, channels, stride), the field says why;
``S3Config.paper()`` gives the paper's values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from medssl import registry
from medssl.config import load_yaml, resolve
from medssl.errors import MedsslError
from medssl.labelfree.preprocess import ARTEFACT_STEPS, COLOUR_SPACES

if TYPE_CHECKING:
    from medssl.labelfree.regions import ClusterResult

S3_STARTS = ("argmax", "kmeans")
#: The numbers of clusters that ``clusters: auto`` chooses from.
AUTO_CLUSTERS = (2, 3, 4, 5)


@dataclass
class LabelFreeConfig:
    """Settings shared by every label-free method.

    Attributes:
        clusters: number of clusters ``K`` in the output (>= 2), or ``auto`` (the default): chosen per image
            from ``AUTO_CLUSTERS`` by the silhouette of k-means on a seeded sample of pixels
            (``medssl.labelfree.choose_k``; on the first 40 PH2 images it picked 2 on 38 and 3 on two, and raised
            k-means' best-cluster Dice from 0.910 to 0.921).
        size: working size; pictures are resized to ``size x size`` and the result mapped back.
        colour_space: ``lab`` (CIELAB) or ``rgb`` for colour pictures.
        field_of_view: exclude the dark ring of a circular field of view (label 0 in the output).
        hair_size: black-hat window (working-size pixels) for hair removal; 0 turns it off (do so for vessels).
        patches: exclude coloured calibration patches and stickers at the border (colour pictures; label 0).
        rulers: exclude rulers and scale marks near an edge (colour pictures; label 0).
        dark_corners: exclude dark corners and off-centre vignettes (colour pictures; label 0).
        ink: inpaint purple or blue ink strokes from the nearest skin (colour pictures).
        smooth_sigma: Gaussian smoothing of the features (working-size pixels).
        position_weight: append the pixel position (row, column in [0, 1]) to the features, times this weight
            times the mean feature spread; 0: colour only.
        min_region: connected regions smaller than this share of the field of view join the cluster around them.
        seed: random seed.
    """

    clusters: int | Literal["auto"] = "auto"
    size: int = 256
    colour_space: str = "lab"
    field_of_view: bool = True
    hair_size: int = 9
    patches: bool = True
    rulers: bool = True
    dark_corners: bool = True
    ink: bool = True
    smooth_sigma: float = 0.0
    position_weight: float = 0.0
    min_region: float = 0.01
    seed: int = 0

    def check(self) -> None:
        """Raise ``MedsslError`` naming the first invalid field."""
        if self.clusters != "auto" and (not isinstance(self.clusters, int) or self.clusters < 2):
            raise MedsslError(f"clusters must be at least 2 or auto, not {self.clusters}")
        if self.size < 16:
            raise MedsslError(f"size must be at least 16, not {self.size}")
        if self.colour_space not in COLOUR_SPACES:
            raise MedsslError(f"colour_space must be one of {', '.join(COLOUR_SPACES)}, not {self.colour_space!r}")
        for name in ("hair_size", "smooth_sigma", "position_weight", "seed"):
            if getattr(self, name) < 0:
                raise MedsslError(f"{name} must not be negative, not {getattr(self, name)}")
        if not 0 <= self.min_region < 1:
            raise MedsslError(f"min_region must be in [0, 1), not {self.min_region}")

    @property
    def artefact_steps(self) -> tuple[str, ...]:
        """The artefact steps switched on (``medssl.labelfree.preprocess.ARTEFACT_STEPS``)."""
        return tuple(name for name in ARTEFACT_STEPS if getattr(self, name))

    @property
    def most_clusters(self) -> int:
        """The largest number of clusters an output can have (``clusters``, or the largest automatic one)."""
        return max(AUTO_CLUSTERS) if self.clusters == "auto" else int(self.clusters)


@dataclass
class KMeansConfig(LabelFreeConfig):
    """k-means on pixel features (colour or intensity, optionally position).

    Attributes:
        smooth_sigma: as in ``LabelFreeConfig``; 2 px by default (k-means has no spatial term of its own).
        iterations: Lloyd iterations at most.
        restarts: k-means++ initialisations; the one with the lowest within-cluster sum of squares wins.
    """

    smooth_sigma: float = 2.0
    iterations: int = 50
    restarts: int = 3

    def check(self) -> None:
        """Raise ``MedsslError`` naming the first invalid field."""
        super().check()
        for name in ("iterations", "restarts"):
            if getattr(self, name) < 1:
                raise MedsslError(f"{name} must be at least 1, not {getattr(self, name)}")


@dataclass
class S3Config(LabelFreeConfig):
    """S3-Net's per-image optimisation.

    Attributes:
        smooth_sigma: as in ``LabelFreeConfig``; 2 px by default, as for k-means, whose clusters are the start.
        max_iterations: optimiser steps at most (document: 50).
        min_iterations: steps before the early stop may trigger.
        stop_change: stop early once fewer than this share of the field of view changed cluster in a step
            (or once at most ``clusters`` clusters remain; the public code stops on the cluster count only).
        start: ``argmax``: the self-training targets are the fresh network's own argmax map from the first step
            (the paper's); ``kmeans``: they are the k-means clusters of the same features until the network
            reproduces them (``start_agreement``), then the network's own map. Our default: with the paper's
            start the clusters merge across the lesion border within a few steps on many images, and a start
            of a fixed three k-means steps left the network too far from them (docs/benchmarks.md).
        start_iterations: most steps with the k-means targets (``start: kmeans``).
        start_agreement: mean IoU over the k-means clusters that the network's argmax must reach before its
            own map takes over.
        lr: SGD learning rate (document: 0.36; ours 0.05, chosen on the first 40 PH2 images over three seeds,
            ``benchmarks/labelfree_s3_lr.py``: with 0.36 the network drifts away from its start within a step or
            two, and with 0.1 the momentum still overshoots on some images in the update after the start labels
            were reproduced, which is the state that is returned).
        momentum: SGD momentum (document: 0.9).
        channels: feature width, also the largest number of clusters (paper code: 64; ours 16, for time: at
            64 channels and full resolution one step takes seconds on 2 CPU cores).
        blocks: I-LKA blocks (paper: 2).
        stride: the stem's stride; the network runs at ``size / stride`` and its response is upsampled to
            ``size`` (paper: 1; ours 2, four times cheaper).
        weight_ce: weight of the self-training cross-entropy (document lambda1: 3.5).
        weight_affine: weight of the affine-consistency loss (document lambda2: 0.5).
        weight_spatial: weight of the spatial-consistency (or, with ``boundary_loss``, the boundary) loss
            (document lambda3: 2).
        boundary_loss: replace spatial consistency by the boundary loss ``|up(down(S)) - S|`` (improved variant).
        boundary_factor: downsampling factor of the boundary loss (document beta: 16).
        learnable_affine: add the localisation network (improved variant).
        max_degrees: rotation range of the random affine transforms, degrees.
        scale_range: scale range of the random affine transforms.
        max_translation: translation range, as a share of the image size.
    """

    smooth_sigma: float = 2.0
    max_iterations: int = 50
    min_iterations: int = 3
    stop_change: float = 0.005
    start: str = "kmeans"
    start_iterations: int = 20
    start_agreement: float = 0.85
    lr: float = 0.05
    momentum: float = 0.9
    channels: int = 16
    blocks: int = 2
    stride: int = 2
    weight_ce: float = 3.5
    weight_affine: float = 0.5
    weight_spatial: float = 2.0
    boundary_loss: bool = False
    boundary_factor: int = 16
    learnable_affine: bool = False
    max_degrees: float = 30.0
    scale_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    max_translation: float = 0.1

    @classmethod
    def paper(cls, **overrides: Any) -> S3Config:
        """The paper's and public code's settings: RGB, no field of view, artefact steps, hair or region clean-up,
        the network's own argmax from the start, learning rate 0.36, 64 channels at full resolution."""
        values: dict[str, Any] = {
            "smooth_sigma": 0.0,
            "colour_space": "rgb",
            "field_of_view": False,
            "hair_size": 0,
            "patches": False,
            "rulers": False,
            "dark_corners": False,
            "ink": False,
            "min_region": 0.0,
            "start": "argmax",
            "start_iterations": 0,
            "lr": 0.36,
            "channels": 64,
            "stride": 1,
        }
        return cls(**{**values, **overrides})

    def check(self) -> None:
        """Raise ``MedsslError`` naming the first invalid field."""
        super().check()
        if self.max_iterations < 1:
            raise MedsslError(f"max_iterations must be at least 1, not {self.max_iterations}")
        if not 1 <= self.min_iterations <= self.max_iterations:
            raise MedsslError(
                f"min_iterations must be in [1, max_iterations={self.max_iterations}], not {self.min_iterations}"
            )
        if self.start not in S3_STARTS:
            raise MedsslError(f"start must be one of {', '.join(S3_STARTS)}, not {self.start!r}")
        if not 0 <= self.start_iterations < self.max_iterations:
            raise MedsslError(
                f"start_iterations ({self.start_iterations}) must be at least 0 and below max_iterations "
                f"({self.max_iterations})"
            )
        if not 0 < self.start_agreement <= 1:
            raise MedsslError(f"start_agreement must be in (0, 1], not {self.start_agreement}")
        if not 0 <= self.stop_change < 1:
            raise MedsslError(f"stop_change must be in [0, 1), not {self.stop_change}")
        if self.lr <= 0:
            raise MedsslError(f"lr must be greater than 0, not {self.lr}")
        if not 0 <= self.momentum < 1:
            raise MedsslError(f"momentum must be in [0, 1), not {self.momentum}")
        if self.channels < self.most_clusters:
            raise MedsslError(f"channels ({self.channels}) must be at least clusters ({self.most_clusters})")
        if self.blocks < 0:
            raise MedsslError(f"blocks must not be negative, not {self.blocks}")
        if self.stride not in (1, 2, 4):
            raise MedsslError(f"stride must be 1, 2 or 4, not {self.stride}")
        for name in ("weight_ce", "weight_affine", "weight_spatial", "max_degrees", "max_translation"):
            if getattr(self, name) < 0:
                raise MedsslError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.boundary_factor < 2 or self.size % self.boundary_factor:
            raise MedsslError(f"boundary_factor must be >= 2 and divide size {self.size}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise MedsslError(f"scale_range must be two positive numbers, low first, not {self.scale_range}")


@dataclass(frozen=True)
class LabelFreeMethod:
    """A label-free method as registered (``medssl.registry`` kind ``"label-free"``, e.g.
    ``register_object("label-free", "kmeans", LabelFreeMethod(KMeansConfig, kmeans_segment))``).

    Attributes:
        config: its settings class (``resolve_method_config`` builds it from defaults < YAML < overrides).
        segment: ``segment(image, config)``: the cluster map of one ``(C, H, W)`` picture.
    """

    config: type[LabelFreeConfig]
    segment: Callable[[npt.NDArray[np.generic], Any], ClusterResult]

    @property
    def description(self) -> str:
        """The first line of the settings class's docstring (for ``medssl list``)."""
        return (inspect.getdoc(self.config) or "").split("\n\n")[0]


def label_free_method(method: str) -> LabelFreeMethod:
    """The registered label-free method ``method``.

    Raises:
        MedsslError: unknown method; the message lists the registered ones.
    """
    found: LabelFreeMethod = registry.get("label-free", method)
    return found


def resolve_method_config(method: str, yaml_path: str | Path | None = None, **overrides: Any) -> LabelFreeConfig:
    """The checked settings of ``method`` (a registered label-free method, e.g. ``s3`` or ``kmeans``) from
    defaults < YAML < ``overrides``.

    Raises:
        MedsslError: unknown method, unknown option, or an invalid value.
    """
    config_class = label_free_method(method).config
    from_file = load_yaml(yaml_path) if yaml_path is not None else {}
    saved_method = from_file.pop("method", method)  # the config.yaml of an output folder names its method
    if saved_method != method:
        raise MedsslError(f"config file {yaml_path} is for method {saved_method!r}, not {method!r}")
    given = {key: value for key, value in overrides.items() if value is not None}
    config = resolve(config_class, None, **{**from_file, **given})
    config.check()
    return config
