"""Annotation-free segmentation: S3-Net and a k-means baseline, and the protocols that score cluster maps.

- ``s3_segment(image, S3Config(...))``: S3-Net's per-image optimisation (``s3``, ``s3_losses``; the network is
  ``medssl.networks.s3_blocks``).
- ``kmeans_segment(image, KMeansConfig(...))``: k-means on pixel colours/intensities (and position).
- ``prepare_image``: working size, colour space, field of view, artefacts (``detectors``), hair removal (shared
  by both); ``choose_clusters``: the number of clusters per image (``clusters: auto``).
- ``lesion_mask``: the ground-truth-free lesion rule (``lesion``; the protocols are in ``protocols``).
- ``segment_folder``: the ``medssl segment`` runner; ``evaluate_clusters``: ``medssl evaluate --protocol ...``.
"""

from medssl.labelfree.choose_k import choose_clusters
from medssl.labelfree.cluster_evaluation import evaluate_clusters, score_clusters
from medssl.labelfree.config import KMeansConfig, LabelFreeConfig, S3Config, resolve_method_config
from medssl.labelfree.kmeans import kmeans, kmeans_segment
from medssl.labelfree.lesion import lesion_mask
from medssl.labelfree.preprocess import PreparedImage, prepare_image
from medssl.labelfree.regions import ClusterResult
from medssl.labelfree.s3 import s3_segment
from medssl.labelfree.segment import SegmentResult, segment_folder

__all__ = [
    "ClusterResult",
    "KMeansConfig",
    "LabelFreeConfig",
    "PreparedImage",
    "S3Config",
    "SegmentResult",
    "choose_clusters",
    "evaluate_clusters",
    "kmeans",
    "kmeans_segment",
    "lesion_mask",
    "prepare_image",
    "resolve_method_config",
    "s3_segment",
    "score_clusters",
    "segment_folder",
]
