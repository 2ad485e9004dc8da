"""The engine's per-image fit: the system's own optimiser, its early stop and step records; S3-Net as a system gives
what its former hand-written loop gave, step for step."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor, nn

from medssl.engine.fit_per_image import PerImageSystem, fit_per_image
from medssl.labelfree.config import S3Config
from medssl.labelfree.kmeans import prepared_features
from medssl.labelfree.s3 import S3System, kmeans_start, mean_iou, s3_segment, s3_step_losses, standardise
from medssl.systems import Batch
from tests.labelfree.conftest import dermoscopy_like


class _Quadratic(PerImageSystem):
    """``loss = sum((w - image)^2)`` with plain SGD at lr 0.1; stops after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.stop_after = stop_after
        self.calls: list[str] = []

    def configure_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(parameters, lr=0.1)

    def begin_fit(self, batch: Batch) -> None:
        self.calls.append("begin")

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        self.calls.append(f"step{step}")
        return {"loss": (self.w - batch["image"]).square().sum()}

    def after_step(self, step: int, max_steps: int) -> None:
        self.calls.append(f"after{step}/{max_steps}")

    def step_record(self) -> dict[str, float]:
        return {"w0": float(self.w[0])}

    def should_stop(self, step: int) -> bool:
        return self.stop_after is not None and step + 1 >= self.stop_after

    def export(self) -> dict[str, nn.Module]:
        return {}


def test_the_fit_uses_the_optimiser_the_system_declares() -> None:
    system = _Quadratic()
    image = torch.tensor([1.0, 2.0, -1.0])
    history = fit_per_image(system, {"image": image}, 2)
    # plain SGD: w <- w - 0.1 * 2 (w - image), twice: w = image * (1 - 0.8^2); AdamW would move every w by ~lr
    assert torch.allclose(system.w.detach(), image * (1 - 0.8**2))
    assert [step["loss"] for step in history] == [6.0, float(((0.2 * image - image) ** 2).sum())]
    assert [step["w0"] for step in history] == [float(np.float32(0.2)), float(np.float32(0.36))]
    assert system.calls == ["begin", "step0", "after0/2", "step1", "after1/2"]


def test_the_fit_stops_when_the_system_says_so() -> None:
    system = _Quadratic(stop_after=3)
    history = fit_per_image(system, {"image": torch.ones(3)}, 10)
    assert len(history) == 3
    assert system.calls[-2:] == ["step2", "after2/10"]
    assert len(fit_per_image(_Quadratic(), {"image": torch.ones(3)}, 10)) == 10


def test_s3_system_declares_sgd_with_momentum() -> None:
    config = S3Config(size=32, channels=8, blocks=1, lr=0.07, momentum=0.8)
    system = S3System(config, 3, torch.ones(1, 16, 16, dtype=torch.bool))
    optimiser = system.configure_optimizer(list(system.parameters()))
    assert isinstance(optimiser, torch.optim.SGD)
    assert optimiser.defaults["lr"] == 0.07 and optimiser.defaults["momentum"] == 0.8
    assert set(system.export()) == {"network"}


def _former_loop(image: np.ndarray, cfg: S3Config) -> tuple[Tensor, list[dict[str, float]]]:
    """S3-Net's hand-written optimisation loop before it moved into the engine (the reference)."""
    prepared, features = prepared_features(image, cfg)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    x = standardise(features, prepared.valid)
    valid = torch.from_numpy(prepared.valid)[None]
    network = S3System(cfg, x.shape[1], valid).network  # built as the system builds it: same initialisation
    start_labels = kmeans_start(features, prepared.valid, cfg) if cfg.start == "kmeans" else None
    optimiser = torch.optim.SGD(network.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    history: list[dict[str, float]] = []
    labels, previous, starting = torch.zeros_like(valid, dtype=torch.long), None, start_labels is not None
    for step in range(1, cfg.max_iterations + 1):
        losses, labels = s3_step_losses(network, x, valid, cfg, generator, start_labels if starting else None)
        optimiser.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimiser.step()
        n_clusters = int(labels[valid].unique().numel())
        changed = 1.0 if previous is None else float((labels != previous)[valid].float().mean())
        previous = labels
        history.append(
            {**{k: float(v.detach()) for k, v in losses.items()}, "clusters": float(n_clusters), "changed": changed}
        )
        if starting and start_labels is not None:
            history[-1]["agreement"] = agreement = mean_iou(labels[valid], start_labels[valid], cfg.clusters)
            starting = agreement < cfg.start_agreement and step < cfg.start_iterations
            continue
        if step >= cfg.min_iterations and (n_clusters <= cfg.clusters or changed < cfg.stop_change):
            break
    return labels, history


def test_s3_through_the_engine_matches_its_former_loop_bit_for_bit() -> None:
    """The hand-over from the k-means start, the early stop (never while starting) and every loss, step for step;
    with the argmax start too, and a variant that runs to ``max_iterations``."""
    image, _ = dermoscopy_like((40, 48))
    tiny = {"size": 32, "channels": 8, "blocks": 1, "hair_size": 0, "boundary_factor": 8, "stride": 1}
    variants = [
        S3Config(**tiny, max_iterations=12, start_iterations=8, min_iterations=1),
        S3Config(**tiny, max_iterations=6, start_iterations=5, min_iterations=2, start_agreement=1.0),
        S3Config(**tiny, max_iterations=5, start="argmax", start_iterations=0, clusters=2, stop_change=0.0),
        S3Config(**tiny, max_iterations=6, start_iterations=3, boundary_loss=True, learnable_affine=True, seed=2),
        # at most `clusters` clusters from the first step: stops at min_iterations, or right after the start
        S3Config(**tiny, max_iterations=6, start="argmax", start_iterations=0, clusters=8, min_iterations=3),
        S3Config(**tiny, max_iterations=6, start_iterations=4, clusters=8, min_iterations=1, start_agreement=1.0),
    ]
    lengths = []
    for cfg in variants:
        if cfg.clusters == "auto":  # the former loop had a fixed K: 2, the former default
            cfg = dataclasses.replace(cfg, clusters=2)
        labels, expected = _former_loop(image, cfg)
        result = s3_segment(image, cfg)
        assert result.losses == expected and [list(step) for step in result.losses] == [list(s) for s in expected]
        assert result.iterations == len(expected)
        lengths.append(len(expected))
        prepared, features = prepared_features(image, cfg)
        torch.manual_seed(cfg.seed)
        x = standardise(features, prepared.valid)
        system = S3System(cfg, x.shape[1], torch.from_numpy(prepared.valid)[None])
        if cfg.start == "kmeans":
            system.start_from(kmeans_start(features, prepared.valid, cfg))
        fit_per_image(system, {"image": x}, cfg.max_iterations)
        assert torch.equal(system.labels, labels)
    assert lengths == [6, 6, 5, 6, 3, 5]  # hand-over by agreement / by start_iterations, no early stop, ...
