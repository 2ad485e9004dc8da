"""DDP on CPU: ``medssl pretrain`` (BYOL) and ``medssl finetune`` (supervised U-Net) with two processes over gloo.

Lightning's ``ddp`` strategy re-launches the running script once per extra process, so the runs cannot start inside
pytest: each test runs this file as a script (``_worker``) in a subprocess, whose two ranks record their first step
(the patches, the random streams the system draws its views / augmentations from, the gradient of the rank's own
loss, the all-reduced gradient and the weights before and after the step).

Checked: the two ranks drew other patches (``RunRecipe.patch_seed``) and other views / augmentations
(``seed_rank_streams``), and both end the step with the same weights: those of an AdamW step with the mean of the two
ranks' gradients. BYOL's loss is a per-sample mean (instance norm, LayerNorm heads, no negatives), so there the DDP
gradient is also that of one process on twice the batch (both ranks' images and views). The U-Net's Dice is a batch
Dice over each rank's own patches, so a fine-tuning DDP step is the mean of the ranks' gradients, not the step of one
process with twice the batch (likewise SimCLR, whose NT-Xent contrasts each rank's own batch; see
``docs/distributed.md``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow  # a 2-process launch of 20-50 s per test on a busy 2-core machine

TINY = {"channels": [4, 8], "batch_size": 2}


def _launch(kind: str, data: Path, out: Path, records: Path) -> list[dict[str, Any]]:
    """Run ``_worker`` (2 ranks, 2 steps); the two ranks' records of step 1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)  # Lightning picks a free port
    args = [sys.executable, __file__, kind, str(data), str(out), str(records)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(records / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _check_gradients_averaged(ranks: list[dict[str, Any]]) -> None:
    """Both ranks' reduced gradient is the mean of their own; both take the AdamW step of that mean, from the same
    weights, and end with the same weights."""
    r0, r1 = ranks
    assert r0["names"] == r1["names"] and r0["names"]
    for name in r0["names"]:
        assert torch.equal(r0["before"][name], r1["before"][name]), f"ranks start apart at {name}"
        assert torch.equal(r0["after"][name], r1["after"][name]), f"ranks end apart at {name}"
    mean = {n: (r0["local"][n] + r1["local"][n]) / 2 for n in r0["names"] if r0["local"][n] is not None}
    assert mean, "no parameter got a gradient"
    differ = [n for n in mean if not torch.allclose(r0["local"][n], r1["local"][n], atol=1e-6)]
    assert differ, "the ranks' own gradients are the same: they trained on the same patches and views"
    for name, g in mean.items():
        torch.testing.assert_close(r0["reduced"][name], g, rtol=1e-5, atol=1e-7, msg=f"reduced gradient of {name}")
    params = {n: r0["before"][n].clone().requires_grad_(True) for n in mean}
    for name, p in params.items():
        p.grad = mean[name].clone()
    torch.optim.AdamW(list(params.values()), **r0["adamw"]).step()
    for name, p in params.items():
        torch.testing.assert_close(r0["after"][name], p.detach(), rtol=0, atol=1e-6, msg=f"weights of {name}")


def test_ddp_pretraining_draws_per_rank_and_steps_as_one_process_with_twice_the_batch(
    paired_2d: Path, tmp_path: Path
) -> None:
    ranks = _launch("pretrain", paired_2d, tmp_path / "run", tmp_path)
    r0, r1 = ranks
    assert not torch.equal(r0["image"], r1["image"]), "both ranks drew the same patches (patch_seed ignores the rank)"
    # BYOL draws its views from torch's global generator
    assert not torch.equal(r0["torch_rng"], r1["torch_rng"]), "both ranks draw the same views (no seed_rank_streams)"
    assert not torch.equal(r0["views"][0], r1["views"][0])
    _check_gradients_averaged(ranks)
    # one process, the same weights, both ranks' images and views in one batch: the same gradient
    from medssl.pretrain import create

    method = create("byol", spatial_dims=2, in_channels=1, channels=TINY["channels"])
    method.load_state_dict(r0["state"])
    views = [torch.cat((r0["views"][i], r1["views"][i])) for i in (0, 1)]
    method.views = lambda batch, generator=None: (views[0], views[1])
    named = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    loss = method.losses(torch.cat((r0["image"], r1["image"])))["loss"]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    for (name, _), g in zip(named, grads, strict=True):
        if g is not None:
            torch.testing.assert_close(r0["reduced"][name], g, rtol=1e-4, atol=1e-7, msg=f"gradient of {name}")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["global_step"] == 2


def test_ddp_finetuning_draws_per_rank_and_averages_gradients(paired_2d: Path, tmp_path: Path) -> None:
    ranks = _launch("finetune", paired_2d, tmp_path / "run", tmp_path)
    r0, r1 = ranks
    assert not torch.equal(r0["image"], r1["image"]), "both ranks drew the same patches (patch_seed ignores the rank)"
    # the U-Net system draws its affine augmentations from its own generator
    assert r0["generators"] and len(r0["generators"]) == len(r1["generators"])
    same = [torch.equal(a, b) for a, b in zip(r0["generators"], r1["generators"], strict=True)]
    assert not any(same), "both ranks draw the same augmentations (no seed_rank_streams)"
    _check_gradients_averaged(ranks)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["global_step"] == 2 and result["best_val_dice"] is not None
    # one validation, after step 2 (val_interval): every rank draws a whole interval of patches, none is cut short
    logged = [row for row in csv.DictReader((tmp_path / "run" / "logs" / "metrics.csv").open()) if row.get("val_dice")]
    assert [int(row["step"]) for row in logged] == [1]


# ------------------------------------------------------------------------------------------------- the worker


def _generators(module: torch.nn.Module) -> list[torch.Generator]:
    return [v for m in module.modules() for v in vars(m).values() if isinstance(v, torch.Generator)]


def _recorder(records: Path) -> Any:
    """A callback that saves this rank's first step to ``records/rank<r>.pt``."""
    import lightning as L

    from medssl.systems import as_batch

    class Record(L.Callback):
        def __init__(self) -> None:
            self.record: dict[str, Any] = {}

        def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step != 0:
                return
            system, data = pl_module.system, as_batch(batch)
            named = [(n, p) for n, p in system.named_parameters() if p.requires_grad]
            generators = _generators(system)
            states = [g.get_state() for g in generators]
            state = {k: v.detach().clone() for k, v in system.state_dict().items()}
            views: list[torch.Tensor] = []
            make_views = getattr(system, "make_views", None)
            if make_views is not None:  # a pretraining method: keep the views it draws
                system.make_views = lambda *a: views.extend(make_views(*a)) or tuple(views)
            # this rank's own gradient, from the draws the real step then makes again (autograd.grad: no DDP hook)
            with torch.random.fork_rng():
                torch_rng = torch.get_rng_state()
                loss = system(data, 0)["loss"]
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            if make_views is not None:
                del system.make_views
            for g, state in zip(generators, states, strict=True):
                g.set_state(state)
            group = trainer.optimizers[0].param_groups[0]
            self.record = {
                "names": [n for n, _ in named],
                "image": data["image"].clone(),
                "torch_rng": torch_rng,
                "views": [v.detach().clone() for v in views],
                "state": state,
                "generators": states,
                "local": {n: None if g is None else g.clone() for (n, _), g in zip(named, grads, strict=True)},
                "before": {n: p.detach().clone() for n, p in named},
                "adamw": {k: group[k] for k in ("lr", "betas", "eps", "weight_decay")},
            }

        def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
            if trainer.global_step == 0:
                named = pl_module.system.named_parameters()
                self.record["reduced"] = {n: p.grad.clone() for n, p in named if p.grad is not None}

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
            if trainer.global_step == 1:
                named = pl_module.system.named_parameters()
                self.record["after"] = {n: p.detach().clone() for n, p in named if p.requires_grad}
                torch.save(self.record, records / f"rank{trainer.global_rank}.pt")

    return Record()


def _worker(kind: str, data: str, out: str, records: str) -> None:
    """Both ranks run this (Lightning re-launches the script for rank 1): a 2-step run on 2 CPU processes."""
    from medssl import api
    from medssl.engine.resume import ResumableTraining

    torch.set_num_threads(1)
    fit = ResumableTraining.fit

    def fit_recording(self: ResumableTraining, trainer: Any, module: Any, **kw: Any) -> None:
        trainer.callbacks.append(_recorder(Path(records)))
        fit(self, trainer, module, **kw)

    ResumableTraining.fit = fit_recording  # type: ignore[method-assign]
    # float32: the gradients are compared to 1e-7 (fine-tuning's default "auto" is bf16 autocast on an AMX CPU)
    common: dict[str, Any] = {
        "max_steps": 2, "accelerator": "cpu", "devices": 2, "quiet": True, "overwrite": True, "precision": "32-true",
    }  # fmt: skip
    if kind == "pretrain":
        api.pretrain(data, out, method="byol", **TINY, **common)
    else:
        api.finetune(data, out, **TINY, val_interval=2, max_val_cases=2, overlay_cases=0, **common)


if __name__ == "__main__":
    _worker(*sys.argv[1:5])
