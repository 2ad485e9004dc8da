from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medssl.errors import MedsslError
from medssl.labelfree.config import S3Config, resolve_method_config
from medssl.labelfree.s3 import s3_segment, s3_step_losses, standardise
from medssl.labelfree.s3net import S3Net
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


@pytest.mark.parametrize("variant", [{}, {"boundary_loss": True, "learnable_affine": True}, {"start": "kmeans"}])
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
    second = s3_segment(image, S3Config(**TINY, seed=3))
    assert np.array_equal(first.labels, second.labels)


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
