"""Adversarial segmentation (issue 17): each discriminator's loss by value (real pairs labelled real), the engine
stepping each group on its own loss only, unlabelled images kept out of the supervised loss, the confidence
threshold of the semi-supervised loss, warm-up, the state dict, and finetune -> predict with Luc and SegAN."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from torch import Tensor, nn
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader

from medssl import api
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.engine.module import SystemModule
from medssl.errors import MedsslError
from medssl.networks.discriminators import (
    class_maps,
    luc_input,
    multiscale_l1,
    product_input,
    scaled_truth,
    target_maps,
)
from medssl.networks.weights import load_checkpoint_file
from medssl.segment.adversarial import AdversarialSegmentation, masked_pseudo_label_loss
from medssl.segment.predict import load_trained_model
from medssl.systems.options import system_options
from tests.conftest import TINY

WIDTHS = (4, 8)


def _plan(dims: int, task: str = "labelmap") -> Plan:
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


def _system(dims: int, task: str = "labelmap", **options: Any) -> AdversarialSegmentation:
    torch.manual_seed(0)
    options.setdefault("discriminator_widths", WIDTHS)
    cfg = FinetuneConfig(affine_probability=0.0)  # no augmentation: the tests recompute the losses
    return AdversarialSegmentation.for_run(_plan(dims, task), cfg, **options)


def _batch(dims: int, task: str = "labelmap", unlabelled: int = 0, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, *[8] * dims, generator=g)
    y = torch.cat([x > 0.3, x > 0.5, x > 0.7], 1).float() if task == "multilabel" else (x * 3).clamp(max=2).floor()
    batch = {"image": x, "target": y}
    if unlabelled:
        batch["unlabelled"] = torch.rand(unlabelled, 1, *[8] * dims, generator=g)
    return batch


def _maps(system: AdversarialSegmentation, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    logits = system.network(batch["image"])
    probs = class_maps(logits, multilabel=system.multilabel)
    return logits, probs, target_maps(batch["target"], 3, multilabel=system.multilabel)


# ----------------------------------------------------------------------------------------- losses by value


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("kind", ["basic", "product", "scaling"])
@pytest.mark.parametrize("task", ["labelmap", "multilabel"])
def test_luc_losses_label_real_pairs_real(dims: int, kind: str, task: str) -> None:
    system = _system(dims, task, discriminator="luc", luc_input=kind, adversarial_weight=0.5)
    batch = _batch(dims, task)
    losses = system.training_step(batch, 0)
    _, probs, truth = _maps(system, batch)
    x, d, multilabel = batch["image"], system.discriminator, task == "multilabel"
    real_maps = scaled_truth(probs, truth, 0.9, multilabel=multilabel) if kind == "scaling" else truth
    real, fake = d(luc_input(kind, x, real_maps)), d(luc_input(kind, x, probs))
    want = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(losses["discriminator"], want)
    flipped = bce(real, torch.zeros_like(real)) + bce(fake, torch.zeros_like(fake))
    assert not torch.isclose(want, flipped)  # the check above can tell the labels apart
    supervised = system.loss(system.network(x), batch["target"])
    torch.testing.assert_close(losses["generator"], supervised + 0.5 * bce(fake, torch.ones_like(fake)))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("task", ["labelmap", "multilabel"])
def test_semi_discriminator_labels_truth_real_and_every_prediction_fake(dims: int, task: str) -> None:
    system = _system(dims, task, discriminator="semi")
    batch = _batch(dims, task, unlabelled=2)
    losses = system.training_step(batch, 0)
    _, probs, truth = _maps(system, batch)
    u_probs = class_maps(system.network(batch["unlabelled"]), multilabel=system.multilabel)
    d = system.discriminator
    real, fake = d(truth), d(torch.cat([probs, u_probs]))
    assert real.shape == (2, 1, *[8] * dims)  # one confidence per pixel, at the input's size
    want = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    torch.testing.assert_close(losses["discriminator"], want)


@pytest.mark.parametrize("dims", [2, 3])
def test_segan_critic_maximises_the_multiscale_l1_and_the_segmenter_minimises_it(dims: int) -> None:
    system = _system(dims, discriminator="segan")
    batch = _batch(dims)
    losses = system.training_step(batch, 0)
    _, probs, truth = _maps(system, batch)
    critic, x = system.discriminator, batch["image"]
    l1 = multiscale_l1(critic(product_input(x, probs)), critic(product_input(x, truth)))
    torch.testing.assert_close(losses["discriminator"], -l1)
    torch.testing.assert_close(losses["adversarial"], l1.detach())  # SegAN's weight 1


def test_segan_clips_the_critic_after_each_step() -> None:
    system = _system(2, discriminator="segan", critic_clip=0.01)
    system.after_step(0, 10)
    assert all(p.abs().max() <= 0.01 for p in system.discriminator.parameters())
    assert any(p.abs().max() > 0.01 for p in system.network.parameters())


# ---------------------------------------------------------------------------------- unlabelled images


class _FixedConfidence(nn.Module):
    """A discriminator whose confidence logit is +5 on the left half of every image and -5 on the right half."""

    def forward(self, maps: Tensor) -> Tensor:
        out = torch.full((maps.shape[0], 1, *maps.shape[2:]), -5.0)
        out[..., : maps.shape[-1] // 2] = 5.0
        return out + 0 * maps.sum()  # keeps the graph (as a real discriminator's output)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("task", ["labelmap", "multilabel"])
def test_only_confident_unlabelled_pixels_become_targets(dims: int, task: str) -> None:
    system = _system(dims, task, discriminator="semi", semi_threshold=0.2, semi_weight=1.0)
    system.discriminator = _FixedConfidence()
    batch = _batch(dims, task, unlabelled=3)
    losses = system.training_step(batch, 0)
    logits = system.network(batch["unlabelled"])
    half = logits[..., :4]  # sigmoid(5) > 0.2 on the left, sigmoid(-5) < 0.2 on the right
    want = bce(half, (half > 0).float()) if task == "multilabel" else cross_entropy(half, half.argmax(1))
    torch.testing.assert_close(losses["semi"], want)
    assert losses["confident"].item() == 0.5
    # above every pixel's confidence: no target at all
    system.semi_threshold = 0.999
    assert system.training_step(batch, 0)["semi"].item() == 0.0


def test_masked_pseudo_label_loss_averages_over_the_mask() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 3.0]]]])  # (1, K=2, 1, 2)
    mask = torch.tensor([[[[True, False]]]])
    want = cross_entropy(logits[..., :1], torch.tensor([[[0]]]))
    torch.testing.assert_close(masked_pseudo_label_loss(logits, mask, multilabel=False), want)
    assert masked_pseudo_label_loss(logits, ~mask & mask, multilabel=False).item() == 0.0


@pytest.mark.parametrize("dims", [2, 3])
def test_unlabelled_images_never_enter_the_supervised_loss(dims: int) -> None:
    system = _system(dims, discriminator="semi", adversarial_weight=0.0, semi_weight=0.0, semi_adversarial_weight=0.0)
    a, b = _batch(dims, unlabelled=2, seed=0), _batch(dims, unlabelled=2, seed=1)
    b["image"], b["target"] = a["image"], a["target"]  # same labelled images, other unlabelled ones
    supervised = system.loss(system.network(a["image"]), a["target"])
    for batch in (a, b):
        losses = system.training_step(batch, 0)
        torch.testing.assert_close(losses["supervised"], supervised.detach())
        torch.testing.assert_close(losses["generator"], supervised)
    assert system.uses_unlabelled and not _system(dims, discriminator="luc").uses_unlabelled


def test_warmup_trains_the_segmenter_on_the_supervised_loss_alone() -> None:
    system = _system(2, discriminator="semi", warmup_steps=3)
    batch = _batch(2, unlabelled=2)
    early = system.training_step(batch, 2)
    torch.testing.assert_close(early["generator"], early["supervised"])
    assert early["discriminator"].requires_grad  # the discriminator trains during the warm-up
    late = system.training_step(batch, 3)
    assert {"adversarial", "semi", "semi_adversarial"} <= set(late)
    assert late["generator"].item() != pytest.approx(late["supervised"].item())


# ------------------------------------------------------------------------------------------------- engine


def _adamw(params: list[nn.Parameter], loss: Tensor, lr: float, wd: float) -> None:
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()


@pytest.mark.parametrize("dims", [2, 3])
def test_each_group_steps_on_its_own_loss_only(dims: int) -> None:
    """One engine step equals an AdamW step of the discriminator on its loss alone (recomputed here from the
    public pieces, real pairs labelled real) and of the segmenter on supervised + lambda * BCE(D(fake), 1)."""
    lr, wd, weight = 0.01, 0.001, 0.5
    system = _system(dims, discriminator="luc", luc_input="product", adversarial_weight=weight)
    reference = copy.deepcopy(system)
    batch = _batch(dims)

    module = SystemModule(system, lr=lr, weight_decay=wd, max_steps=1, schedule="poly")
    trainer = L.Trainer(
        max_steps=module.trainer_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))

    x, d = batch["image"], reference.discriminator
    logits = reference.network(x)
    probs = class_maps(logits, multilabel=False)
    truth = target_maps(batch["target"], 3, multilabel=False)
    real, fake = d(product_input(x, truth)), d(product_input(x, probs.detach()))
    d_loss = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    g_fake = d(product_input(x, probs))
    g_loss = reference.loss(logits, batch["target"]) + weight * bce(g_fake, torch.ones_like(g_fake))
    _adamw(list(reference.network.parameters()), g_loss, lr, wd)
    _adamw(list(d.parameters()), d_loss, lr, wd)
    for (name, want), got in zip(reference.state_dict().items(), system.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=lambda m, name=name: f"{name}: {m}")


# ------------------------------------------------------------------------------------- state and options


def test_state_dict_keeps_the_network_unprefixed_and_the_discriminator_apart() -> None:
    system = _system(2, discriminator="luc")
    keys = list(system.state_dict())
    assert set(keys) == set(system.network.state_dict()) | {
        f"discriminator.{k}" for k in system.discriminator.state_dict()
    }
    fresh = _system(2, discriminator="luc")
    for p in fresh.parameters():
        nn.init.zeros_(p)
    fresh.load_state_dict(system.state_dict())
    for (k, want), got in zip(system.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(want, got), k


def test_options_are_declared_and_checked() -> None:
    options = system_options("segmentation", "adversarial")
    for name in ("discriminator", "luc_input", "adversarial_weight", "semi_weight", "semi_threshold", "warmup_steps"):
        assert name in options and options[name].doc, name
    assert options["discriminator"].default == "semi" and options["semi_threshold"].default == 0.2
    with pytest.raises(MedsslError, match="semi_threshold"):
        _system(2, semi_threshold=1.5)
    with pytest.raises(MedsslError, match="warmup_steps"):
        _system(2, warmup_steps=-1)


# ------------------------------------------------------------------------------------ finetune -> predict


@pytest.mark.parametrize("discriminator", ["luc", "segan"])
def test_finetune_trains_and_predict_loads_the_segmenter(paired_2d: Path, tmp_path: Path, discriminator: str) -> None:
    run = tmp_path / "run"
    result = api.finetune(
        paired_2d,
        run,
        max_steps=4,
        quiet=True,
        system="adversarial",
        discriminator=discriminator,
        discriminator_widths=[4, 8],
        **TINY,
    )
    assert result.best_checkpoint is not None and result.test_summary
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["system"] == "adversarial" and saved["system_options"]["discriminator"] == discriminator
    state = load_checkpoint_file(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("model.discriminator.") for k in state)
    model = load_trained_model(run)
    saved = load_checkpoint_file(model.checkpoint)["state_dict"]
    for k, v in model.network.state_dict().items():  # the checkpoint's segmenter, not a fresh network
        assert torch.equal(v, saved[f"model.{k}"]), k
    x = torch.rand(1, 1, 32, 32)
    assert model.network(x).shape == (1, model.plan.out_channels, 32, 32)


def test_runs_without_a_system_in_their_config_load_as_supervised(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["system"], saved["system_options"]  # as written by versions before segmentation systems
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert load_trained_model(run).network is not None
    (run / "config.yaml").unlink()
    assert load_trained_model(run).network is not None
