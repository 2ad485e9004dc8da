"""DoDNet's baselines as systems ("multihead", "masked-sigmoid", "separate"): the same masked loss, their own
networks, trained and predicted through the run workflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medssl import api, registry
from medssl.config import FinetuneConfig
from medssl.networks.task_outputs import MultiHeadUNet, SeparateUNets, SigmoidUNet, TaskOutputs
from medssl.segment.dodnet import DoDNetSegmentation
from medssl.segment.predict import load_trained_model
from tests.conftest import TINY
from tests.segment.test_dodnet import _batch, _loss_and_grads, _plan, partial  # noqa: F401 (a fixture)

NETWORKS = {"multihead": MultiHeadUNet, "masked-sigmoid": SigmoidUNet, "separate": SeparateUNets}


def _system(name: str, dims: int = 2, task: str = "multilabel") -> DoDNetSegmentation:
    torch.manual_seed(0)
    system = registry.get("segmentation", name).for_run(_plan(dims, task), FinetuneConfig(affine_probability=0.0))
    assert isinstance(system, DoDNetSegmentation)
    return system


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("task", ["multilabel", "labelmap"])
def test_each_baseline_builds_its_network(name: str, task: str) -> None:
    system = _system(name, 3, task)
    network = system.export()["network"]
    assert type(network) is NETWORKS[name] and isinstance(network, TaskOutputs)
    assert system.tasks == [["c0"], ["c1"], ["c2"]] if task == "multilabel" else [["c1"], ["c2"]]
    x = _batch(3)["image"]
    with torch.no_grad():
        assert system.predict(x).shape == (2, 3, 8, 8, 8)
    assert torch.isfinite(system.training_step(_batch(3, task), 0)["loss"])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_an_unannotated_structure_contributes_nothing(name: str) -> None:
    system, batch = _system(name), _batch(2)
    batch["annotated"] = torch.tensor([[True, False, True], [True, True, False]])
    loss, grads = _loss_and_grads(system, batch)
    changed = {**batch, "target": batch["target"].clone()}
    changed["target"][0, 1] = 1 - changed["target"][0, 1]
    changed["target"][1, 2] = 1.0
    loss2, grads2 = _loss_and_grads(system, changed)
    assert torch.equal(loss, loss2) and all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


def test_a_separate_network_learns_only_from_the_cases_annotating_its_task() -> None:
    system, batch = _system("separate"), _batch(2)
    batch["annotated"] = torch.tensor([[True, False, True], [True, False, False]])  # nobody annotates c1
    system.zero_grad()
    system.training_step(batch, 0)["loss"].backward()  # type: ignore[arg-type]
    network = system.export()["network"]
    assert isinstance(network, SeparateUNets)
    trained = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in n.parameters()) for n in network.networks]
    assert trained == [True, False, True]


def test_finetune_trains_a_baseline_and_predicts_every_structure(partial: Path, tmp_path: Path) -> None:  # noqa: F811
    run = tmp_path / "run"
    api.finetune(partial, run, max_steps=3, quiet=True, system="separate", **TINY)
    model = load_trained_model(run)
    assert isinstance(model.network, SeparateUNets) and len(model.network.networks) == 2
    written = api.predict(run, partial / "images", tmp_path / "pred", quiet=True)
    assert written and {p.parent.name for p in written} == {"inner", "outer"}
