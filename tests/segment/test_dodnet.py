"""The "dodnet" segmentation system: the loss of partially labelled structures, all structures at inference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import Tensor

from medssl import api
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.networks.dynamic_head import DoDNet
from medssl.segment.dodnet import DoDNetSegmentation, masked_dice_bce
from medssl.segment.inference import predict_logits
from medssl.segment.losses import SegmentationLoss
from medssl.segment.predict import load_trained_model
from medssl.segment.supervised import foreground_dice
from tests.conftest import TINY


def _plan(dims: int, task: str = "multilabel") -> Plan:
    return Plan(
        spatial_dims=dims,
        data_dims=dims,
        in_channels=1,
        task=task,
        class_values=[0, 1, 2] if task == "labelmap" else [],
        class_names=["c0", "c1", "c2"],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=[8] * dims,
        channels=[4, 8],
        batch_size=2,
    )


def _system(dims: int, task: str = "multilabel", **options: Any) -> DoDNetSegmentation:
    torch.manual_seed(0)
    cfg = FinetuneConfig(affine_probability=0.0)  # no augmentation: the tests recompute the losses
    return DoDNetSegmentation.for_run(_plan(dims, task), cfg, **options)


def _batch(dims: int, task: str = "multilabel") -> dict[str, Tensor]:
    x = torch.rand(2, 1, *[8] * dims, generator=torch.Generator().manual_seed(0))
    y = torch.cat([x > 0.3, x > 0.5, x > 0.7], 1).float() if task == "multilabel" else (x * 3).clamp(max=2).floor()
    return {"image": x, "target": y}


def _loss_and_grads(system: DoDNetSegmentation, batch: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
    system.zero_grad()
    loss = system.training_step(batch, 0)["loss"]  # type: ignore[arg-type]
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in system.parameters() if p.grad is not None]


@pytest.mark.parametrize("dims", [2, 3])
def test_an_unannotated_structure_contributes_nothing(dims: int) -> None:
    system, batch = _system(dims), _batch(dims)
    batch["annotated"] = torch.tensor([[True, False, True], [True, True, False]])
    loss, grads = _loss_and_grads(system, batch)
    changed = {**batch, "target": batch["target"].clone()}
    changed["target"][0, 1] = 1 - changed["target"][0, 1]  # what case 0 does not annotate
    changed["target"][1, 2] = 1.0
    loss2, grads2 = _loss_and_grads(system, changed)
    assert torch.equal(loss, loss2)
    assert len(grads) == len(grads2) == len(list(system.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))
    changed["target"][0, 0] = 1 - changed["target"][0, 0]  # an annotated one does count
    assert not torch.equal(loss, _loss_and_grads(system, changed)[0])


def test_the_gradient_of_unannotated_logits_is_exactly_zero() -> None:
    logits = torch.randn(2, 3, 6, 6, requires_grad=True)
    target = (torch.rand(2, 3, 6, 6) > 0.5).float()
    annotated = torch.tensor([[True, False, True], [False, True, True]])
    masked_dice_bce(logits, target, annotated).backward()
    assert logits.grad is not None
    assert not logits.grad[~annotated].any() and logits.grad[annotated].abs().sum(-1).sum(-1).all()


def test_every_pair_annotated_is_the_supervised_multilabel_loss() -> None:
    logits, target = torch.randn(2, 3, 6, 6), (torch.rand(2, 3, 6, 6) > 0.5).float()
    want = SegmentationLoss(multilabel=True)(logits, target)
    torch.testing.assert_close(masked_dice_bce(logits, target, torch.ones(2, 3, dtype=torch.bool)), want)
    # one case annotating everything, the other nothing: that case's loss alone
    annotated = torch.tensor([[True] * 3, [False] * 3])
    torch.testing.assert_close(
        masked_dice_bce(logits, target, annotated), SegmentationLoss(True)(logits[:1], target[:1])
    )
    assert masked_dice_bce(logits, target, torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_without_annotations_every_structure_counts() -> None:
    system, batch = _system(2), _batch(2)
    loss = system.training_step(batch, 0)["loss"]
    want = system.training_step({**batch, "annotated": torch.ones(2, 3, dtype=torch.bool)}, 0)["loss"]
    assert torch.equal(loss, want)
    with pytest.raises(MedsslError, match="'annotated' must be"):
        system.training_step({**batch, "annotated": torch.ones(2, 2, dtype=torch.bool)}, 0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("task", ["multilabel", "labelmap"])
def test_prediction_and_export_give_every_structure(dims: int, task: str) -> None:
    system = _system(dims, task)
    x = _batch(dims)["image"]
    network = system.export()["network"]
    assert isinstance(network, DoDNet)
    with torch.no_grad():
        out = system.predict(x)
        assert out.shape == (2, 3, *[8] * dims) and torch.equal(network(x), out)
    if task == "labelmap":  # two foreground classes as tasks, a zero background in front
        assert network.num_tasks == 2 and not out[:, 0].any()
        loss = system.training_step(_batch(dims, task), 0)["loss"]
        assert torch.isfinite(loss)


def test_validation_leaves_out_the_structures_a_case_does_not_annotate() -> None:
    system, batch = _system(2), _batch(2)
    with torch.no_grad():  # every structure predicted everywhere: the Dice of each differs (their areas do)
        controller = system.task_network.head.controller
        controller.weight.zero_()
        controller.bias.zero_()
        controller.bias[-1] = 10.0  # the last generated number: the output bias
    case = {"image": batch["image"][:1], "target": batch["target"][:1]}
    logits = predict_logits(system.network, case["image"][0], system.plan)
    dice = foreground_dice(logits, case["target"][0], multilabel=True)
    assert len(set(dice.tolist())) == 3
    assert system.validation_step(case)["dice"].item() == pytest.approx(dice.nanmean().item())
    only_last = system.validation_step({**case, "annotated": torch.tensor([[False, False, True]])})["dice"]
    assert only_last.item() == pytest.approx(dice[2].item())


def test_options_shape_the_head() -> None:
    system = _system(2, head_channels=4, head_layers=2)
    assert system.task_network.head.n_generated == 4 * 4 + 4 + 4 * 1 + 1
    assert _system(2, out_per_task=3).task_network.num_tasks == 1
    with pytest.raises(MedsslError, match="out_per_task must divide the 3 structures"):
        _system(2, out_per_task=2)


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    """``images/`` + ``masks/<structure>/`` PNGs: two overlapping discs, ``inner`` inside ``outer``."""
    root = tmp_path / "partial"
    rng = np.random.default_rng(0)
    grid = np.mgrid[:32, :32]
    for k in range(8):
        cy, cx = rng.uniform(12, 20, size=2)
        r2 = (grid[0] - cy) ** 2 + (grid[1] - cx) ** 2
        outer, inner = r2 <= 100, r2 <= 25
        img = np.clip(50 + 80 * outer + 80 * inner + rng.normal(0, 10, (32, 32)), 0, 255).astype(np.uint8)
        for sub, arr in (("images", img), ("masks/outer", outer * 255), ("masks/inner", inner * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / sub / f"case{k:02d}.png")
    return root


def test_finetune_trains_and_predicts_every_structure(partial: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = api.finetune(partial, run, max_steps=4, quiet=True, system="dodnet", head_channels=4, **TINY)
    assert result.best_checkpoint is not None and result.test_summary
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["system"] == "dodnet" and saved["system_options"]["head_channels"] == 4
    model = load_trained_model(run)
    assert isinstance(model.network, DoDNet) and model.plan.task == "multilabel"
    assert model.network(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    written = api.predict(run, partial / "images", tmp_path / "pred", quiet=True)
    assert written and {p.parent.name for p in written} == {"inner", "outer"}
    # the checkpoint carries the task list and the plan; a run folder whose plan.json differs is refused
    checkpoint = torch.load(model.checkpoint, map_location="cpu", weights_only=False)
    assert checkpoint["tasks"] == [["inner"], ["outer"]]
    assert checkpoint["plan"] == json.loads((run / "plan.json").read_text())
    edited = json.loads((run / "plan.json").read_text())
    edited["target_spacing"] = [2.0, 2.0]
    (run / "plan.json").write_text(json.dumps(edited))
    with pytest.raises(MedsslError, match="trained under another plan.*target_spacing: checkpoint None"):
        load_trained_model(run)
