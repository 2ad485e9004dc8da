from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medssl.errors import MedsslError
from medssl.labelfree.config import S3Config, resolve_method_config
from medssl.labelfree.s3 import mean_iou, s3_segment, s3_step_losses, standardise
from medssl.networks.s3_blocks import S3Net
from tests.labelfree.conftest import dermoscopy_like

TINY = {
    "size": 32,
    "channels": 8,
    "blocks": 1,
    "max_iterations": 4,
    "min_iterations": 1,
    "start_iterations": 2,
    "hair_size": 0,
    "boundary_factor": 8,
}
# Enough steps for the network to reproduce the k-means start (mean IoU 0.85) and take over, at full resolution:
# on the two-region picture below this takes 4 steps (about 0.5 s).
SETTLED = {**TINY, "max_iterations": 12, "start_iterations": 8, "stride": 1}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize(
    "variant", [{}, {"boundary_loss": True, "learnable_affine": True}, {"start": "argmax", "start_iterations": 0}]
)
def test_s3_segment_returns_at_most_k_clusters_at_the_input_size(variant: dict[str, object]) -> None:
    image, _ = dermoscopy_like((40, 56))
    result = s3_segment(image, S3Config(**{**TINY, **variant}))
    assert result.labels.shape == (40, 56)
    clusters = set(np.unique(result.labels)) - {0}
    assert 1 <= len(clusters) <= 2 and clusters <= {1, 2}
    assert 1 <= result.iterations <= 4
    assert len(result.losses) == result.iterations
    assert all(np.isfinite(v) for step in result.losses for v in step.values())


def test_s3_is_repeatable_with_a_seed() -> None:
    image, _ = dermoscopy_like((32, 32), vignette=False)
    first = s3_segment(image, S3Config(**TINY, seed=3))
    torch.manual_seed(123)  # the global generator's state must not matter: the seed sets everything
    second = s3_segment(image, S3Config(**TINY, seed=3))
    assert np.array_equal(first.labels, second.labels)
    assert first.losses == second.losses  # every step's losses, bit for bit
    other = s3_segment(image, S3Config(**TINY, seed=4))
    assert other.losses != first.losses  # the seed is used


@pytest.mark.parametrize(("vignette", "seed"), [(False, 0), (True, 1)])
def test_s3_separates_the_lesion_from_the_skin(vignette: bool, seed: int) -> None:
    # Measured Dice of the darkest cluster: 0.981 / 0.972 (k-means start, then the network's own map); the
    # paper's start (own argmax from the first step) reaches only 0.67 / 0.81 in 4 steps on these pictures.
    image, lesion = dermoscopy_like((32, 32), vignette=vignette)
    result = s3_segment(image, S3Config(**SETTLED, seed=seed))
    assert _dice(result.labels == 1, lesion) > 0.95
    assert (result.labels[lesion] != 0).all()  # the lesion is inside the field of view
    if vignette:  # the dark corners are outside the field of view (label 0), not lesion
        assert (result.labels[0, 0], result.labels[-1, -1]) == (0, 0)


def test_s3_reproduces_the_kmeans_start_then_takes_over_and_its_losses_fall() -> None:
    image, _ = dermoscopy_like((32, 32), vignette=False)
    history = s3_segment(image, S3Config(**SETTLED)).losses
    agreement = [step["agreement"] for step in history if "agreement" in step]
    starting = len(agreement)
    # The start labels are the targets until the network's argmax reproduces them (mean IoU >= 0.85), and only
    # then: the agreement is recorded for exactly those steps, and grows until it passes the threshold.
    assert all("agreement" in step for step in history[:starting])
    assert agreement[-1] >= 0.85 and all(a < 0.85 for a in agreement[:-1]) and starting < 8
    assert agreement == sorted(agreement)
    # The early stop is not checked while starting: with a threshold that every step meets, the run stops at the
    # first step after the hand-over, the same run up to there.
    eager = s3_segment(image, S3Config(**SETTLED, stop_change=0.9)).losses
    assert len(eager) == starting + 1 and eager[:starting] == history[:starting]
    ce = [step["ce"] for step in history]
    assert ce == sorted(ce, reverse=True) and len(set(ce)) == len(ce)  # falls at every step
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    # With few start steps the hand-over happens after start_iterations, however low the agreement.
    short = s3_segment(image, S3Config(**TINY)).losses
    assert [("agreement" in step) for step in short] == [True, True, False, False]
    assert short[1]["agreement"] < 0.85


@pytest.mark.parametrize(
    ("clusters", "stop_change", "min_iterations", "steps"),
    [(8, 0.005, 2, 2), (2, 0.25, 1, 3), (2, 0.25, 5, 5), (2, 0.005, 1, 6)],
)
def test_the_early_stop(clusters: int, stop_change: float, min_iterations: int, steps: int) -> None:
    # With the paper's start, 8 channels keep 8 clusters here and the share of changed pixels falls step by step
    # (1, 0.31, 0.23, 0.13, 0.06, 0.05): at most `clusters` clusters, or fewer changed pixels than `stop_change`,
    # stops at the first such step from `min_iterations` on.
    image, _ = dermoscopy_like((32, 32), vignette=False)
    settings = {"start": "argmax", "start_iterations": 0, "max_iterations": 6, "min_iterations": min_iterations}
    history = s3_segment(
        image, S3Config(**{**TINY, **settings, "clusters": clusters, "stop_change": stop_change})
    ).losses
    assert len(history) == steps
    due = [n for n, step in enumerate(history, 1) if step["clusters"] <= clusters or step["changed"] < stop_change]
    assert [n for n in due if n >= min_iterations][:1] == ([steps] if steps < 6 else [])


def test_mean_iou_over_the_reference_clusters() -> None:
    reference = torch.tensor([0, 0, 1, 1, 1, 1])
    labels = torch.tensor([0, 1, 1, 1, 1, 2])
    # Cluster 0: 1 / 2; cluster 1: 3 / 5; cluster 2 is absent from the reference and not counted.
    assert mean_iou(labels, reference, 3) == pytest.approx((1 / 2 + 3 / 5) / 2)
    assert mean_iou(reference, reference, 3) == 1.0


def test_standardise_uses_the_field_of_view_statistics() -> None:
    rng = np.random.default_rng(0)
    features = np.stack([rng.normal(50, 10, (6, 8)), rng.normal(-1, 0.1, (6, 8))]).astype(np.float32)
    features[:, :, :2] = 1000.0  # outside the field of view: ignored by the statistics
    valid = np.ones((6, 8), bool)
    valid[:, :2] = False
    x = standardise(features, valid)[0].numpy()
    assert x.shape == (2, 6, 8)
    np.testing.assert_allclose(x[:, valid].mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, valid].std(1), 1.0, atol=1e-5)
    inside = features[:, valid]
    expected = (1000.0 - inside.mean(1)) / inside.std(1)  # outside pixels get the same affine map
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-5)


def test_one_step_gives_named_losses_with_gradients() -> None:
    image, _ = dermoscopy_like((32, 32), vignette=False)
    x = standardise(image.astype(np.float32), np.ones((32, 32), bool))
    network = S3Net(3, channels=6, blocks=1)
    losses, labels = s3_step_losses(
        network, x, torch.ones(1, 32, 32, dtype=torch.bool), S3Config(**TINY), torch.Generator().manual_seed(0)
    )
    assert set(losses) == {"ce", "affine", "spatial", "total"}
    assert labels.shape == (1, 32, 32)
    losses["total"].backward()
    assert all(p.grad is not None for p in network.parameters())


@pytest.mark.parametrize("boundary", [False, True])
def test_step_losses_weights_and_self_training_targets(boundary: bool) -> None:
    image, _ = dermoscopy_like((32, 32), vignette=False)
    x = standardise(image.astype(np.float32), np.ones((32, 32), bool))
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    network = S3Net(3, channels=4, blocks=1)
    config = S3Config(**TINY, weight_ce=1.5, weight_affine=0.25, weight_spatial=4.0, boundary_loss=boundary)
    third = "boundary" if boundary else "spatial"

    def step(target: torch.Tensor | None = None) -> tuple[dict[str, float], torch.Tensor]:
        losses, labels = s3_step_losses(network, x, valid, config, torch.Generator().manual_seed(0), target)
        return {k: float(v) for k, v in losses.items()}, labels

    own, labels = step()
    assert set(own) == {"ce", "affine", third, "total"}
    assert own["total"] == pytest.approx(1.5 * own["ce"] + 0.25 * own["affine"] + 4.0 * own[third], rel=1e-6)
    # Without a target the targets are the network's own argmax map: giving that map changes nothing.
    given, same_labels = step(labels)
    assert given == pytest.approx(own, rel=1e-6) and torch.equal(same_labels, labels)
    # Any other target is used (for the cross-entropy and, transformed, the affine term) and costs more, since
    # the argmax is the cheapest target of each pixel; the returned map stays the network's own.
    other, other_labels = step((labels + 1) % 4)
    assert other["ce"] > own["ce"] + 0.1 and other["affine"] > own["affine"] + 0.1
    assert other[third] == pytest.approx(own[third], rel=1e-6) and torch.equal(other_labels, labels)


def test_bad_settings_are_refused_with_the_field_name() -> None:
    with pytest.raises(MedsslError, match="clusters"):
        resolve_method_config("s3", clusters=1)
    with pytest.raises(MedsslError, match="start_iterations"):
        resolve_method_config("s3", max_iterations=3)
    with pytest.raises(MedsslError, match="start must be"):
        resolve_method_config("s3", start="random")
    with pytest.raises(MedsslError, match="boundary_factor"):
        resolve_method_config("s3", boundary_factor=7)
    with pytest.raises(MedsslError, match="unknown option"):
        resolve_method_config("kmeans", channels=8)
    with pytest.raises(MedsslError, match="unknown label-free method"):
        resolve_method_config("sam")


def test_settings_layer_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"method": "s3", "clusters": 3, "channels": 8}))
    resolved = resolve_method_config("s3", config, clusters=None, lr=0.2)
    assert isinstance(resolved, S3Config)
    assert (resolved.clusters, resolved.channels, resolved.lr, resolved.blocks) == (3, 8, 0.2, 2)
    assert resolve_method_config("s3", config, clusters=4).clusters == 4
    with pytest.raises(MedsslError, match="for method 's3'"):
        resolve_method_config("kmeans", config)
