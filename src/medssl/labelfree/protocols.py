"""Turning a cluster map into one predicted structure, and the public code's scoring for comparison.

A label-free method outputs clusters, not a structure; an evaluation protocol says which cluster is the
prediction:

- ``best-cluster``: the cluster that overlaps the ground truth most (the paper's protocol, after Ahn et al.,
  MICCAI 2021). It needs the ground truth, so it measures how well the clusters can separate the structure,
  not what a user without labels gets.
- ``border``: the cluster whose pixels touch the border least (the image edge, or the edge of the field of
  view): a lesion or organ is usually surrounded by background. Needs no ground truth.
- ``darkest``: the cluster of lowest mean lightness (lesions, lungs on a display-convention X-ray and vessels
  are darker than their surroundings). Needs the image, not the ground truth.
- ``lesion``: the connected region (of one cluster or of the union of the darkest clusters) that scores best
  on contrast with the skin around it, compactness, closeness to the centre, little contact with excluded
  pixels and a size that is not most of the image (``medssl.labelfree.lesion``); the prediction is that region,
  not a whole cluster. Needs the image, not the ground truth: the rule a user without labels runs, and the
  default of ``medssl segment``.

``paper_code_scores`` reproduces how S3-Net's public code scores a prediction, for comparison only: the
prediction is first multiplied by the ground truth dilated twice with a 5x5 kernel (which deletes every false
positive farther than 4 pixels from the truth), and its "hm" is ``1 - IoU``, not a Hausdorff distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from medssl import registry
from medssl.errors import MedsslError
from medssl.labelfree.lesion import lesion_mask
from medssl.metrics.overlap import dice, xor_error

# (cluster map, ground truth or None, lightness or None) -> the selected cluster (0: none).
Selector = Callable[[npt.NDArray[np.integer], npt.ArrayLike | None, npt.NDArray[np.floating] | None], int]
# (cluster map, ground truth or None, lightness or None) -> (the cluster holding the prediction, the prediction).
MaskSelector = Callable[
    [npt.NDArray[np.integer], npt.ArrayLike | None, npt.NDArray[np.floating] | None], tuple[int, npt.NDArray[np.bool_]]
]
#: The rule ``medssl segment`` writes masks with when none is named.
DEFAULT_RULE = "lesion"
# Border zone width as a share of the shorter image side (at least 2 pixels).
_BORDER_SHARE = 0.02


def cluster_ids(labels: npt.NDArray[np.integer]) -> list[int]:
    """The cluster values (non-zero) present in a map, in increasing order."""
    return [int(v) for v in np.unique(labels) if v > 0]


def best_overlap_cluster(labels: npt.NDArray[np.integer], truth: npt.ArrayLike) -> int:
    """The cluster with the most pixels inside the ground truth (ties: the smaller cluster value).

    Args:
        labels: ``(*spatial)`` cluster map, 0 = not clustered.
        truth: ``(*spatial)`` binary ground truth.

    Returns:
        The cluster value, or 0 when the map has no cluster.
    """
    mask = np.asarray(truth).astype(bool)
    if labels.shape != mask.shape:
        raise MedsslError(f"cluster map shape {labels.shape} does not match ground truth shape {mask.shape}")
    ids = cluster_ids(labels)
    if not ids:
        return 0
    overlap = np.bincount(labels[mask].ravel(), minlength=max(ids) + 1)
    return max(ids, key=lambda i: (int(overlap[i]), -i))


def border_zone(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """Pixels within ``2 %`` of the shorter side (at least 2 pixels) of the image edge or of unclustered (0)
    pixels, for a 2D ``(H, W)`` map."""
    width = max(2, round(_BORDER_SHARE * min(labels.shape)))
    outside = np.pad(labels == 0, 1, constant_values=True)
    distance = ndimage.distance_transform_edt(~outside)[1:-1, 1:-1]
    return distance <= width


def border_cluster(labels: npt.NDArray[np.integer]) -> int:
    """The cluster with the smallest share of its pixels in the border zone (ties: the smaller cluster).

    Args:
        labels: ``(H, W)`` cluster map, 0 = outside the field of view.

    Returns:
        The cluster value, or 0 when the map has no cluster.
    """
    ids = cluster_ids(labels)
    if not ids:
        return 0
    zone = border_zone(labels)
    sizes = np.bincount(labels.ravel(), minlength=max(ids) + 1)
    touching = np.bincount(labels[zone].ravel(), minlength=max(ids) + 1)
    return min(ids, key=lambda i: (touching[i] / sizes[i], sizes[i], i))


def darkest_cluster(labels: npt.NDArray[np.integer], lightness: npt.NDArray[np.floating]) -> int:
    """The cluster of lowest mean ``lightness`` (ties: the smaller cluster value).

    Args:
        labels: ``(*spatial)`` cluster map, 0 = not clustered.
        lightness: ``(*spatial)`` image lightness (e.g. CIELAB L* or the grey value).

    Returns:
        The cluster value, or 0 when the map has no cluster.
    """
    if labels.shape != lightness.shape:
        raise MedsslError(f"cluster map shape {labels.shape} does not match image shape {lightness.shape}")
    ids = cluster_ids(labels)
    if not ids:
        return 0
    sums = np.bincount(labels.ravel(), weights=lightness.ravel().astype(np.float64), minlength=max(ids) + 1)
    sizes = np.bincount(labels.ravel(), minlength=max(ids) + 1)
    return min(ids, key=lambda i: (sums[i] / sizes[i], i))


@dataclass(frozen=True)
class ClusterProtocol:
    """An evaluation protocol for cluster maps (``medssl.registry`` kind ``"evaluation"``): which cluster is the
    prediction, and how it is scored.

    Attributes:
        description: one line, shown by ``medssl list`` and written into the evaluation's settings.
        select: picks the cluster; it gets the ground truth only when ``needs_truth``, the image lightness only
            when ``needs_images``.
        needs_truth: the selection uses the ground truth (so ``medssl segment --select`` cannot use it).
        needs_images: the selection uses the images (``medssl evaluate --images``).
        paper_code: scored the way S3-Net's public code scores (``paper_code_scores``) instead of the project's
            metrics.
        select_mask: for rules whose prediction is a region rather than a whole cluster, the region (and the
            cluster holding most of it); None: the prediction is the selected cluster.
    """

    description: str
    select: Selector
    needs_truth: bool = False
    needs_images: bool = False
    paper_code: bool = False
    select_mask: MaskSelector | None = None


def cluster_protocol(name: str) -> ClusterProtocol:
    """The registered protocol ``name`` that scores cluster maps.

    Raises:
        MedsslError: unknown protocol, or one that scores label maps (``label-map``).
    """
    found = registry.get("evaluation", name)
    if not isinstance(found, ClusterProtocol):
        raise MedsslError(
            f"protocol {name!r} does not score cluster maps; choose one of {', '.join(cluster_protocols())}"
        )
    return found


def cluster_protocols(*, without_truth: bool = False) -> list[str]:
    """The registered protocols for cluster maps, sorted; ``without_truth``: only those that select without the
    ground truth (the rules of ``medssl segment --select``)."""
    return [
        name
        for name in registry.names("evaluation")
        if isinstance(found := registry.get("evaluation", name), ClusterProtocol)
        and not (without_truth and found.needs_truth)
    ]


def select_cluster(
    protocol: str,
    labels: npt.NDArray[np.integer],
    truth: npt.ArrayLike | None = None,
    lightness: npt.NDArray[np.floating] | None = None,
) -> int:
    """The cluster a registered cluster-map protocol takes as the prediction.

    Raises:
        MedsslError: unknown protocol, or the input it needs (truth, lightness) is missing.
    """
    chosen = cluster_protocol(protocol)
    if chosen.needs_truth and truth is None:
        raise MedsslError(f"protocol {protocol} needs the ground truth")
    if chosen.needs_images and lightness is None:
        raise MedsslError(f"protocol {protocol} needs the images (--images)")
    return chosen.select(labels, truth, lightness)


def select_mask(
    protocol: str,
    labels: npt.NDArray[np.integer],
    truth: npt.ArrayLike | None = None,
    lightness: npt.NDArray[np.floating] | None = None,
) -> tuple[int, npt.NDArray[np.bool_]]:
    """The prediction a registered cluster-map protocol makes: ``(cluster, mask)``, the mask being the selected
    cluster, or for region rules (``lesion``) the selected region (and the cluster holding most of it).

    Raises:
        MedsslError: unknown protocol, or the input it needs (truth, lightness) is missing.
    """
    chosen = cluster_protocol(protocol)
    if chosen.select_mask is None:
        cluster = select_cluster(protocol, labels, truth, lightness)
        return cluster, (labels == cluster) if cluster else np.zeros(labels.shape, dtype=bool)
    if chosen.needs_truth and truth is None:
        raise MedsslError(f"protocol {protocol} needs the ground truth")
    if chosen.needs_images and lightness is None:
        raise MedsslError(f"protocol {protocol} needs the images (--images)")
    return chosen.select_mask(labels, truth, lightness)


def _lesion_region(
    labels: npt.NDArray[np.integer], _: npt.ArrayLike | None, lightness: npt.NDArray[np.floating] | None
) -> tuple[int, npt.NDArray[np.bool_]]:
    assert lightness is not None  # needs_images: checked before
    return lesion_mask(labels, lightness)


def _by_lesion(
    labels: npt.NDArray[np.integer], truth: npt.ArrayLike | None, lightness: npt.NDArray[np.floating] | None
) -> int:
    return _lesion_region(labels, truth, lightness)[0]


def _by_overlap(
    labels: npt.NDArray[np.integer], truth: npt.ArrayLike | None, _: npt.NDArray[np.floating] | None
) -> int:
    assert truth is not None  # needs_truth: select_cluster checked it
    return best_overlap_cluster(labels, truth)


def _by_border(labels: npt.NDArray[np.integer], _: npt.ArrayLike | None, __: npt.NDArray[np.floating] | None) -> int:
    return border_cluster(labels)


def _by_lightness(
    labels: npt.NDArray[np.integer], _: npt.ArrayLike | None, lightness: npt.NDArray[np.floating] | None
) -> int:
    assert lightness is not None  # needs_images: select_cluster checked it
    return darkest_cluster(labels, lightness)


def paper_code_scores(pred: npt.ArrayLike, truth: npt.ArrayLike) -> dict[str, float | None]:
    """Scores the way S3-Net's public code computes them (optimistic; for comparison with the paper only).

    The prediction is multiplied by the ground truth dilated twice with a 5x5 kernel of ones, then Dice, XOR
    (``|P xor G| / |G|``) and "hm" = ``1 - IoU`` are computed on it.

    Args:
        pred: ``(H, W)`` binary prediction (the selected cluster).
        truth: ``(H, W)`` binary ground truth.

    Returns:
        ``{"dice", "hm", "xor"}``; hm is 0 when both masks are empty, xor None for an empty truth.
    """
    p = np.asarray(pred).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise MedsslError(f"prediction shape {p.shape} does not match reference shape {t.shape}")
    window = ndimage.binary_dilation(t, structure=np.ones((5, 5), dtype=bool), iterations=2)
    masked = p & window
    union = int((masked | t).sum())
    iou = int((masked & t).sum()) / union if union else 1.0
    return {"dice": dice(masked, t), "hm": 1.0 - iou, "xor": xor_error(masked, t)}


registry.register_object(
    "evaluation",
    "best-cluster",
    ClusterProtocol(
        "the cluster overlapping the ground truth most is the prediction (the paper's protocol)",
        _by_overlap,
        needs_truth=True,
    ),
)
registry.register_object(
    "evaluation",
    "border",
    ClusterProtocol(
        "the cluster touching the image or field-of-view border least is the prediction (no ground truth)", _by_border
    ),
)
registry.register_object(
    "evaluation",
    "darkest",
    ClusterProtocol(
        "the cluster of lowest mean lightness is the prediction (no ground truth)",
        _by_lightness,
        needs_images=True,
    ),
)
registry.register_object(
    "evaluation",
    "lesion",
    ClusterProtocol(
        "the region scoring best on contrast with its surroundings, compactness, centrality, little contact with "
        "excluded pixels and size is the prediction (no ground truth; the default rule)",
        _by_lesion,
        needs_images=True,
        select_mask=_lesion_region,
    ),
)
registry.register_object(
    "evaluation",
    "paper-code",
    ClusterProtocol(
        "S3-Net's public code, for comparison only: best-overlap cluster multiplied by the ground truth dilated "
        "twice with a 5x5 kernel (optimistic), hm = 1 - IoU (not a Hausdorff distance)",
        _by_overlap,
        needs_truth=True,
        paper_code=True,
    ),
)
