"""The ``System`` contract and the one engine module (``SystemModule``) that drives any system.

A toy two-group system proves that the engine alternates its optimisers (each group's parameters change only in its
own step, in the order of ``optimizer_groups``, once per batch each) with each group's gradient from its own loss;
one group is Lightning's automatic optimisation and equals a hand-written AdamW loop; ``after_step`` gets the index
of the step just taken. Every registered pretraining method and the supervised system, in 2D and 3D, returns finite
losses, gives every trainable parameter a gradient and exports modules whose state dicts round-trip.
"""

from __future__ import annotations

import io
import math

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medssl import registry as kinds
from medssl.config import FinetuneConfig
from medssl.data.plan import Plan
from medssl.engine.module import SystemModule, fusable, lr_factor
from medssl.errors import MedsslError
from medssl.pretrain import registry
from medssl.segment.predict import build_network
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import BATCH_FIELDS, Batch, System, as_batch
from tests.pretrain.conftest import SMALL, images

LR, WD, STEPS = 0.1, 0.01, 4


class TwoGroups(System):
    """Two groups of one vector each, whose losses each depend on both groups (so a gradient leaking from the other
    group's loss, or a step of the wrong optimiser, changes the result)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.b = nn.Parameter(torch.tensor([0.5, 3.0]))
        self.after: list[tuple[int, int]] = []

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"first": [self.a], "second": [self.b]}

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        x = batch["image"].mean()
        first = ((self.a * self.b - x) ** 2).sum()
        second = ((self.a + 2 * self.b - 3 * x) ** 2).sum()
        return {"first": first, "second": second, "product": (self.a * self.b).sum().detach()}

    def after_step(self, step: int, max_steps: int) -> None:
        self.after.append((step, max_steps))

    def export(self) -> dict[str, nn.Module]:
        return {"system": self}


class OneGroup(TwoGroups):
    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"main": [self.a, self.b]}

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        losses = super().training_step(batch, step)
        return {"loss": losses["first"] + losses["second"]}


def _data() -> list[Tensor]:
    return [torch.full((2, 1, 4, 4), float(i + 1)) for i in range(STEPS)]


def _fit(module: SystemModule, callbacks: list[L.Callback] | None = None) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=module.trainer_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )
    trainer.fit(module, train_dataloaders=DataLoader(_data(), batch_size=None))
    return trainer


class _StepRecorder(L.Callback):
    """Records, for every optimiser step, the group stepped and both groups' values after it."""

    def __init__(self, system: TwoGroups) -> None:
        self.system, self.steps = system, []  # type: ignore[var-annotated]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert isinstance(pl_module, SystemModule)
        for name, opt in zip(pl_module.group_names, trainer.optimizers, strict=True):
            opt.register_step_post_hook(lambda *_, name=name: self.steps.append((name, *self._values())))

    def _values(self) -> tuple[Tensor, Tensor]:
        return self.system.a.detach().clone(), self.system.b.detach().clone()


def _hand_written(groups: str, schedule: str = "cosine", warmup: int = 0) -> tuple[Tensor, Tensor]:
    """The reference: per batch, each group's gradient of its own loss at the batch's starting parameters, then an
    AdamW step per group in order, with the schedule's learning rate."""
    system = TwoGroups()
    params = [[system.a], [system.b]] if groups == "two" else [[system.a, system.b]]
    opts = [torch.optim.AdamW(p, lr=LR, weight_decay=WD) for p in params]
    for step, x in enumerate(_data()):
        losses = system.training_step({"image": x}, step)
        wanted = [losses["first"], losses["second"]] if groups == "two" else [losses["first"] + losses["second"]]
        grads = [torch.autograd.grad(loss, p, retain_graph=True) for loss, p in zip(wanted, params, strict=True)]
        for opt, p, g in zip(opts, params, grads, strict=True):
            for param, grad in zip(p, g, strict=True):
                param.grad = grad
            for group in opt.param_groups:
                group["lr"] = LR * lr_factor(step, STEPS, schedule, warmup)
            opt.step()
    return system.a.detach(), system.b.detach()


def test_two_groups_alternate_their_optimisers() -> None:
    system = TwoGroups()
    module = SystemModule(system, lr=LR, weight_decay=WD, max_steps=STEPS, schedule="poly")
    assert not module.automatic_optimization and module.trainer_steps == 2 * STEPS
    recorder = _StepRecorder(system)
    trainer = _fit(module, [recorder])

    assert [name for name, _, _ in recorder.steps] == ["first", "second"] * STEPS
    before = (torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0]))
    for name, a, b in recorder.steps:
        changed_a, changed_b = not torch.equal(a, before[0]), not torch.equal(b, before[1])
        assert (changed_a, changed_b) == ((True, False) if name == "first" else (False, True)), name
        before = (a, b)
    assert trainer.global_step == 2 * STEPS
    assert system.after == [(k, STEPS) for k in range(STEPS)]
    want_a, want_b = _hand_written("two", "poly")
    torch.testing.assert_close(system.a.detach(), want_a)
    torch.testing.assert_close(system.b.detach(), want_b)


def test_one_group_is_automatic_and_equals_a_hand_written_adamw_loop() -> None:
    system = OneGroup()
    module = SystemModule(system, lr=LR, weight_decay=WD, max_steps=STEPS, schedule="cosine", warmup_steps=1)
    assert module.automatic_optimization and module.trainer_steps == STEPS
    _fit(module)
    assert system.after == [(k, STEPS) for k in range(STEPS)]
    want_a, want_b = _hand_written("one", "cosine", warmup=1)
    torch.testing.assert_close(system.a.detach(), want_a)
    torch.testing.assert_close(system.b.detach(), want_b)


def test_adamw_is_fused_where_it_can_be() -> None:
    """One fused kernel per step on the CPU (the same update as the loop: the two tests above hold with it)."""
    optimizers = SystemModule(TwoGroups(), lr=LR, weight_decay=WD, max_steps=STEPS).configure_optimizers()
    assert [c["optimizer"].param_groups[0]["fused"] for c in optimizers] == [True, True]
    assert fusable([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))])
    assert not fusable([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, device="meta"))])
    assert not fusable([nn.Parameter(torch.zeros(2, device="meta"))])


def test_schedules_are_the_engines_former_ones() -> None:
    # the former segmentation schedule, (1 - s / max_steps) ** 0.9, and the pretraining warm-up + cosine
    for s in range(12):
        assert lr_factor(s, 10, "poly") == max(0.0, 1 - s / 10) ** 0.9
        want = (s + 1) / 3 if s < 3 else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - 3) / 7)))
        assert lr_factor(s, 10, "cosine", 3) == want


def test_a_missing_group_loss_is_named() -> None:
    class Forgetful(TwoGroups):
        def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
            return {"first": super().training_step(batch, step)["first"]}

    with pytest.raises(MedsslError, match="returned no 'second'"):
        _fit(SystemModule(Forgetful(), max_steps=STEPS))


def test_batches_are_dicts_of_named_fields() -> None:
    x, y = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    assert BATCH_FIELDS == ("image", "target", "annotated", "task", "raters", "high_res", "unlabelled")
    assert as_batch(x)["image"] is x
    got = as_batch((x, y))
    assert got["image"] is x and got["target"] is y
    assert as_batch({"image": x}) == {"image": x}
    with pytest.raises(TypeError):
        as_batch((x, y, y))


# --------------------------------------------------------------------------------------------- every system


def _plan(dims: int, task: str = "labelmap", raters: bool = False) -> Plan:
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
        patch_size=[16] * dims,
        channels=[4, 8],
        batch_size=2,
        extra={"raters": ["r1", "r2"]} if raters else {},
    )


MULTILABEL = "-multilabel"  # a segmentation system on a multi-label plan


def _system(name: str, dims: int, seed: int = 0) -> System:
    torch.manual_seed(seed)
    if name.removesuffix(MULTILABEL) in kinds.names("segmentation"):
        cls = kinds.get("segmentation", name.removesuffix(MULTILABEL))
        plan = _plan(dims, "multilabel" if name.endswith(MULTILABEL) else "labelmap", raters=cls.uses_raters)
        system: System = cls.for_run(plan, FinetuneConfig(affine_probability=1.0), seed=seed)
        return system
    return registry.create(name, spatial_dims=dims, in_channels=1, channels=SMALL)


def _batch(name: str, dims: int) -> Batch:
    x = images(dims, batch=2)
    if name.endswith(MULTILABEL):
        return {"image": x, "target": torch.cat([x > 0.3, x > 0.5, x > 0.7], 1).float()}
    if name in kinds.names("segmentation") and kinds.get("segmentation", name).uses_raters:  # two raters' maps
        return {"image": x, "target": torch.cat([(x * 3).clamp(max=2).floor(), (x * 3 + 0.4).clamp(max=2).floor()], 1)}
    if name in kinds.names("segmentation"):
        return {"image": x, "target": (x * 3).clamp(max=2).floor()}
    return {"image": x, "target": torch.zeros_like(x)}


# every registered pretraining method and segmentation system (each segmentation system on both kinds of plan)
SEGMENTATION = kinds.names("segmentation")
# (the systems that learn from several raters take label maps only)
SYSTEMS = [
    *registry.names(),
    *SEGMENTATION,
    *(name + MULTILABEL for name in SEGMENTATION if not kinds.get("segmentation", name).uses_raters),
]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", SYSTEMS)
def test_system_contract(name: str, dims: int) -> None:
    system = _system(name, dims)
    losses = system.training_step(_batch(name, dims), 0)
    groups = list(system.optimizer_groups())
    wanted = ["loss"] if len(groups) == 1 else groups
    assert set(wanted) <= set(losses), f"losses {sorted(losses)} lack {wanted}"
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(losses[k] for k in wanted).backward()  # type: ignore[union-attr]
    for param_name, param in system.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), f"{param_name}: no finite gradient"

    exported = system.export()
    assert exported and all(isinstance(m, nn.Module) for m in exported.values())
    fresh = _system(name, dims, seed=1).export()
    for key, module in exported.items():
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        fresh[key].load_state_dict(torch.load(buffer, weights_only=True))
        for (k, want), (k2, got) in zip(module.state_dict().items(), fresh[key].state_dict().items(), strict=True):
            assert k == k2 and torch.equal(want, got), f"{key}.{k} did not round-trip"


def _module_keys(module: L.LightningModule) -> set[str]:
    return set(module.state_dict())


def test_checkpoint_keys_keep_their_prefixes() -> None:
    plan = _plan(2)
    network = build_network(plan)
    module = SystemModule(SupervisedSegmentation(network, plan), name="model")  # what finetune trains
    assert _module_keys(module) == {f"model.{k}" for k in network.state_dict()}
    # and they load back into the module (the supervised system's state is its network's)
    state = {k: torch.zeros_like(v) for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    assert all(not v.any() for v in network.state_dict().values())

    method = registry.create("byol", spatial_dims=2, in_channels=1, channels=SMALL)
    assert _module_keys(SystemModule(method, name="method")) == {f"method.{k}" for k in method.state_dict()}


def test_supervised_validation_step_gives_the_case_dice() -> None:
    plan = _plan(2)

    class Echo(nn.Module):  # logits whose argmax is the image's value: the prediction is the input
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))

        def forward(self, x: Tensor) -> Tensor:
            return -((x - torch.arange(3.0).view(1, -1, 1, 1)) ** 2)

    system = SupervisedSegmentation(Echo(), plan)
    truth = torch.zeros(1, 1, 16, 16)
    truth[..., :8, :8] = 1  # class 1: 64 pixels; class 2 absent everywhere (NaN, left out)
    pred = torch.zeros_like(truth)
    pred[..., :8, :4] = 1  # 32 predicted pixels, all right: Dice 2 * 32 / (32 + 64)
    got = system.validation_step({"image": pred, "target": truth})["dice"]
    assert got.item() == pytest.approx(2 * 32 / 96)


@pytest.mark.parametrize("name", ["byol", "simclr"])
def test_pretraining_optimiser_keeps_the_layout_of_earlier_checkpoints(name: str) -> None:
    """Earlier versions gave AdamW every parameter of the method, BYOL's frozen target included; an optimiser over
    fewer parameters could not load the state of their checkpoints on --resume."""
    method = registry.create(name, spatial_dims=2, in_channels=1, channels=SMALL)
    config = SystemModule(method).configure_optimizers()
    params = config["optimizer"].param_groups[0]["params"]
    assert [id(p) for p in params] == [id(p) for p in method.parameters()]
