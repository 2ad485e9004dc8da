"""The "mrnet" segmentation system: soft targets, the three conditions and their weights, each rater's
reconstruction against that rater, the perception module on each condition's own prediction, and a tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce

from medssl import api
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.errors import MedsslError
from medssl.networks.mrnet import MRNet
from medssl.segment.mrnet import MRNetSegmentation, draw_conditions, rater_bce, soft_target
from medssl.segment.predict import load_trained_model
from tests.conftest import TINY


def _plan() -> Plan:
    return Plan(
        spatial_dims=2,
        data_dims=2,
        in_channels=1,
        task="labelmap",
        class_values=[0, 255],
        class_names=["background", "vessel"],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=[16, 16],
        channels=[4, 8],
        batch_size=2,
        extra={"raters": ["rater_1", "rater_2"]},
    )


def _system(refine: bool = True) -> MRNetSegmentation:
    torch.manual_seed(0)
    cfg = FinetuneConfig(affine_probability=0.0)  # no augmentation: the tests recompute the losses
    return MRNetSegmentation.for_run(_plan(), cfg, refine=refine, width=4, blur_size=5)


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    raters = torch.stack([x[:, 0] > 0.4, x[:, 0] > 0.6], 1).float()  # rater 2 draws less
    return {"image": x, "target": raters}


def test_the_soft_target_is_the_expertise_weighted_average() -> None:
    masks = torch.tensor([[[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [1.0, 0.0]]]]])  # (1, R=2, K=1, 2, 2)
    out = soft_target(masks, torch.tensor([[0.25, 0.75]]))
    torch.testing.assert_close(out, torch.tensor([[[[0.25, 0.0], [1.0, 0.25]]]]))


def test_the_three_conditions() -> None:
    onehot, weights, uniform = draw_conditions(64, 3, torch.Generator().manual_seed(0))
    for c in (onehot, weights, uniform):
        torch.testing.assert_close(c.sum(1), torch.ones(64))
    assert ((onehot == 0) | (onehot == 1)).all() and (onehot.sum(1) == 1).all()
    assert len(set(onehot.argmax(1).tolist())) == 3  # every rater gets drawn
    integers = weights / weights.min(1, keepdim=True).values  # ratios of integers in 1..10
    assert (integers <= 10 + 1e-5).all() and len(set(weights.flatten().tolist())) > 10
    torch.testing.assert_close(uniform, torch.full((64, 3), 1 / 3))


def test_each_reconstruction_head_is_trained_against_its_own_rater() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 1, 4, 4, requires_grad=True)
    masks = (torch.rand(2, 3, 1, 4, 4) > 0.5).float()
    want = torch.stack([bce(logits[:, r], masks[:, r]) for r in range(3)]).mean()
    torch.testing.assert_close(rater_bce(logits, masks), want)
    rater_bce(logits, masks).backward()
    grad = logits.grad.clone()  # type: ignore[union-attr]
    logits.grad = None
    changed = masks.clone()
    changed[:, 1] = 1 - changed[:, 1]
    rater_bce(logits, changed).backward()
    assert torch.equal(grad[:, [0, 2]], logits.grad[:, [0, 2]])  # type: ignore[index]
    assert not torch.equal(grad[:, 1], logits.grad[:, 1])  # type: ignore[index]


def _replay(system: MRNetSegmentation, batch: dict[str, torch.Tensor], state: torch.Tensor) -> dict[str, float]:
    """The step's losses recomputed by hand with the same conditions."""
    net = system.mrnet
    masks = system.rater_masks(batch["target"])
    conditions = draw_conditions(2, 2, torch.Generator().set_state(state))
    inference, perception, recon = [], [], []
    for c in conditions:
        logits, features = net.inference(batch["image"], c)
        truth = soft_target(masks, c)
        inference.append(bce(logits, truth))
        if net.perception is not None:
            rebuilt, _ = net.reconstruct(batch["image"], torch.sigmoid(logits), c)
            recon.append(rater_bce(rebuilt, masks).item())  # rater r's head against rater r's mask
            perception.append(bce(net.perception(rebuilt, features, logits), truth))
    out = {"inference": 0.7 * (inference[0] + 2 * inference[1] + 3 * inference[2]).item() / 6}
    if perception:
        out["perception"] = (perception[0] + 2 * perception[1] + 3 * perception[2]).item() / 6
        out["reconstruction"] = sum(recon) / 3
    return out


@pytest.mark.parametrize("refine", [False, True])
def test_the_losses_weight_the_conditions_one_two_three(refine: bool) -> None:
    system, batch = _system(refine), _batch()
    state = system.conditions.get_state()
    losses = system.training_step(batch, 0)
    want = _replay(system, batch, state)
    if not refine:
        assert set(losses) == {"loss"} and list(system.optimizer_groups()) == ["inference"]
        assert losses["loss"].item() == pytest.approx(want["inference"], rel=1e-5)
        return
    assert list(system.optimizer_groups()) == ["inference", "reconstruction", "perception"]
    # each condition's own coarse prediction feeds its perception branch
    assert losses["perception"].item() == pytest.approx(want["perception"], rel=1e-5)
    assert losses["reconstruction"].item() == pytest.approx(want["reconstruction"], rel=1e-5)
    consistency = (losses["inference"].item() - want["inference"]) / 0.3
    assert consistency > 0


def test_validation_scores_against_the_raters_mean() -> None:
    system = _system()
    batch = _batch()
    case = {"image": batch["image"][:1], "target": batch["target"][:1]}
    dice = system.validation_step(case)["dice"]
    assert 0 <= dice.item() <= 1


def test_each_rater_validation_adds_every_one_hot_vector_against_its_rater() -> None:
    """``validate="each-rater"``: the mean of the stored vector against the raters' mean and each rater's one-hot
    vector against that rater (by hand on the network's output: the 16x16 case is one patch); the stored vector
    is kept."""
    torch.manual_seed(0)
    cfg = FinetuneConfig(affine_probability=0.0)
    system = MRNetSegmentation.for_run(_plan(), cfg, width=4, blur_size=5, validate="each-rater")
    batch = _batch()
    case = {"image": batch["image"][:1], "target": batch["target"][:1]}
    system.mrnet.set_expertise([0.25, 0.75])
    system.eval()
    got = system.validation_step(case)["dice"].item()
    assert system.mrnet.expertise.tolist() == [0.25, 0.75]

    def dice(c: list[float], truth: torch.Tensor) -> float:
        with torch.no_grad():
            pred = system.mrnet(case["image"], torch.tensor(c)).softmax(1)[0, 1] > 0.5
        return _dice(pred.float(), truth.float())

    raters = case["target"][0] > 0
    want = [dice([0.25, 0.75], raters[0] & raters[1]), dice([1.0, 0.0], raters[0]), dice([0.0, 1.0], raters[1])]
    assert got == pytest.approx(np.mean(want), abs=1e-5)
    assert len({round(w, 4) for w in want}) == 3  # three different scores: an average, not one of them
    with pytest.raises(MedsslError, match="validate must be one of raters-mean, each-rater"):
        MRNetSegmentation.for_run(_plan(), cfg, validate="best")


def _two_styles(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a smooth field and two raters of different style: one draws wide (field > -0.3), one narrow
    (field > 0.3); ``(n, 1, 32, 32)`` and label maps ``(n, 2, 32, 32)``."""
    field = nn.functional.interpolate(torch.randn(n, 1, 4, 4, generator=g), size=(32, 32), mode="bicubic")
    field = field / field.flatten(1).std(1).reshape(-1, 1, 1, 1)
    return field + 0.3 * torch.randn(field.shape, generator=g), torch.cat((field > -0.3, field > 0.3), 1).float()


def test_training_teaches_the_network_to_follow_the_expertise_vector() -> None:
    """Trained on two raters of different style, each rater's one-hot vector gives the output closer to that
    rater than the other rater's one-hot vector does (the conditioning learned, coarse and refined)."""
    plan = _plan()
    plan.patch_size, plan.channels = [32, 32], [8, 16, 32]
    torch.manual_seed(0)
    system = MRNetSegmentation.for_run(plan, FinetuneConfig(affine_probability=0.0), width=8, blur_size=5)
    groups = system.optimizer_groups()
    optimizers = {k: torch.optim.AdamW(v, 2e-3) for k, v in groups.items()}
    g = torch.Generator().manual_seed(0)
    for step in range(150):  # each group on its own loss, as the engine steps them
        x, y = _two_styles(8, g)
        losses = system.training_step({"image": x, "target": y}, step)
        grads = {k: torch.autograd.grad(losses[k], v, allow_unused=True, retain_graph=True) for k, v in groups.items()}
        for k, v in groups.items():
            for param, grad in zip(v, grads[k], strict=True):
                param.grad = grad
            optimizers[k].step()
    net = system.mrnet.eval()
    x, y = _two_styles(16, g)
    onehot = torch.eye(2)
    with torch.no_grad():
        for output in (lambda c: net.inference(x, c)[0], lambda c: net.refined(x, c)):
            wide, narrow = ((output(onehot[r]) > 0).float() for r in range(2))
            dice = [[_dice(p, y[:, r : r + 1]) for r in range(2)] for p in (wide, narrow)]
            assert dice[0][0] > dice[1][0] + 0.03, dice  # the wide rater's vector matches the wide rater
            assert narrow.sum() < 0.9 * wide.sum()  # the narrow rater's vector draws narrower (truth: 0.6)


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return (2 * (pred * truth).sum() / (pred.sum() + truth.sum())).item()


@pytest.fixture
def raters(tmp_path: Path) -> Path:
    """``images/`` + ``rater_1/`` + ``rater_2/`` PNGs: a disc, the second rater's a little larger."""
    root = tmp_path / "raters"
    rng = np.random.default_rng(0)
    grid = np.mgrid[:32, :32]
    for k in range(8):
        cy, cx = rng.uniform(12, 20, size=2)
        r2 = (grid[0] - cy) ** 2 + (grid[1] - cx) ** 2
        img = np.clip(60 + 120 * (r2 <= 64) + rng.normal(0, 10, (32, 32)), 0, 255).astype(np.uint8)
        for sub, arr in (("images", img), ("rater_1", (r2 <= 64) * 255), ("rater_2", (r2 <= 81) * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / sub / f"case{k:02d}.png")
    return root


def test_finetune_trains_mrnet_on_every_rater(raters: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(raters, run, max_steps=2, quiet=True, system="mrnet", blur_size=5, width=4, **TINY)
    model = load_trained_model(run)
    assert isinstance(model.network, MRNet) and model.plan.extra["raters"] == ["rater_1", "rater_2"]
    assert model.network.expertise.tolist() == [0.5, 0.5]
    # prediction for a chosen rater, with probability maps beside the masks
    maps = {}
    for who in ("rater_1", "0,1"):
        out = tmp_path / f"pred-{who}"
        written = api.predict(run, raters / "images", out, quiet=True, raters=who, probabilities=True)
        assert len(written) == 16 and (out / "probabilities" / "foreground" / "case00.png").is_file()
        maps[who] = np.stack(
            [np.asarray(Image.open(out / "probabilities" / "foreground" / f"case{k:02d}.png")) for k in range(8)]
        )
    assert maps["rater_1"].dtype == np.uint8 and not np.array_equal(maps["rater_1"], maps["0,1"])
    with pytest.raises(MedsslError, match="--raters takes 'uniform', a rater's name \\(rater_1, rater_2\\) or 2"):
        api.predict(run, raters / "images", tmp_path / "bad", quiet=True, raters="1,2,3")
    (raters / "rater_2" / "case03.png").unlink()  # a case one rater did not draw
    with pytest.raises(MedsslError, match=r"needs the masks of all raters.*case03 \(has rater_1\)"):
        api.finetune(raters, tmp_path / "run2", max_steps=2, quiet=True, system="mrnet", **TINY)


def test_mrnet_needs_several_raters() -> None:
    plan = _plan()
    plan.extra = {}
    with pytest.raises(MedsslError, match="several raters"):
        MRNetSegmentation.for_run(plan, FinetuneConfig())


def test_raters_declared_in_dataset_json_are_read_from_masks(raters: Path) -> None:
    """``masks/<rater>/`` with the raters declared: the observers layout, in the declared order, not structures."""
    from medssl.data.check import check_dataset
    from medssl.data.layouts import discover

    (raters / "masks").mkdir()
    (raters / "rater_1").rename(raters / "masks" / "bob")
    (raters / "rater_2").rename(raters / "masks" / "alice")
    (raters / "dataset.json").write_text('{"raters": ["bob", "alice"]}')
    index = discover(raters)
    assert index.layout == "observers" and index.observers == ["bob", "alice"] and len(index.cases) == 8
    assert index.cases[0].label == raters / "masks" / "bob" / "case00.png"
    (raters / "dataset.json").write_text('{"raters": ["bob", "alice", "carol"]}')
    assert any("declares rater 'carol'" in p for p in check_dataset(raters))
