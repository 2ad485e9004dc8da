"""The validation Dice (``val_dice``, which picks ``best.ckpt``): per class ``2|P & G| / (|P| + |G|)`` over the
image's voxels, NaN where prediction and truth are both empty, averaged over classes and then over cases.

Every expected value here is counted by hand or with numpy, not with ``foreground_dice``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from medssl import api
from medssl.data.layouts import discover
from medssl.data.loading import load_checked_case
from medssl.data.plan import Plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.engine.module import SystemModule
from medssl.segment.inference import predict_logits
from medssl.segment.predict import load_trained_model
from medssl.segment.supervised import SupervisedSegmentation, foreground_dice
from tests.conftest import TINY

# Predicted (P) and true (G) label maps; K = 3 classes.
P = [[0, 1, 1, 2], [0, 1, 1, 2], [0, 0, 2, 2]]
G = [[0, 1, 1, 1], [0, 0, 1, 2], [0, 0, 0, 2]]
# class 1: |P| = 4, |G| = 4, |P & G| = 3 -> 6 / 8; class 2: |P| = 4, |G| = 2, |P & G| = 2 -> 4 / 6
DICE_PG = [0.75, 4 / 6]


def _logits(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Logits ``(k, *spatial)`` whose argmax is ``labels``."""
    return 5.0 * nn.functional.one_hot(labels.long(), k).movedim(-1, 0).float()


def _plan(task: str = "labelmap", k: int = 3, dims: int = 2) -> Plan:
    return Plan(
        spatial_dims=dims,
        data_dims=dims,
        in_channels=1,
        task=task,
        class_values=list(range(k)) if task == "labelmap" else [],
        class_names=[f"c{i}" for i in range(k)],
        target_spacing=None,
        normalization="zscore",
        intensity=[],
        patch_size=[8] * dims,
        channels=[4],
        batch_size=1,
    )


def test_labelmap_dice_per_foreground_class() -> None:
    pred, truth = torch.tensor(P), torch.tensor(G)
    got = foreground_dice(_logits(pred, 3), truth[None].float(), multilabel=False)
    torch.testing.assert_close(got, torch.tensor(DICE_PG))


def test_labelmap_dice_sums_over_every_spatial_axis_in_3d() -> None:
    # the 2D maps as slice 0 of a 3D volume, and a slice 1 where class 1 is predicted on 2 voxels and true on 6
    pred = torch.stack([torch.tensor(P), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])])
    truth = torch.stack([torch.tensor(G), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]])])
    got = foreground_dice(_logits(pred, 3), truth[None].float(), multilabel=False)
    # class 1: |P| = 4 + 2, |G| = 4 + 6, |P & G| = 3 + 2 -> 10 / 16; class 2 as in 2D
    torch.testing.assert_close(got, torch.tensor([10 / 16, 4 / 6]))


def test_labelmap_class_empty_in_both_is_nan_and_one_sided_is_zero() -> None:
    pred = torch.tensor([[0, 1, 1], [0, 0, 0]])
    truth = torch.tensor([[0, 0, 0], [3, 3, 0]])
    got = foreground_dice(_logits(pred, 4), truth[None].float(), multilabel=False)
    # class 1 only predicted, class 2 nowhere, class 3 only true
    assert got[0] == 0 and math.isnan(got[1]) and got[2] == 0


def test_multilabel_dice_per_structure() -> None:
    # structure 0: the maps' class 1; structure 1: P's class 2 against an empty truth; structure 2: empty in both
    pred, truth = torch.tensor(P), torch.tensor(G)
    pred_masks = torch.stack([pred == 1, pred == 2, torch.zeros_like(pred, dtype=torch.bool)])
    true_masks = torch.stack([truth == 1, torch.zeros_like(truth, dtype=torch.bool), torch.zeros_like(truth).bool()])
    logits = torch.where(pred_masks, 3.0, -3.0)
    got = foreground_dice(logits, true_masks.to(torch.uint8), multilabel=True)
    assert got.shape == (3,)
    torch.testing.assert_close(got[:2], torch.tensor([0.75, 0.0]))
    assert math.isnan(got[2])


class Decode(nn.Module):
    """A 'network' whose input holds the label map to predict: labelmap logits peak at class round(x); multilabel
    logits are positive where x > 0.5."""

    def __init__(self, k: int, multilabel: bool) -> None:
        super().__init__()
        self.k, self.multilabel = k, multilabel
        self.unused = nn.Parameter(torch.zeros(()))  # Lightning wants a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multilabel:
            return 10 * (x - 0.5)
        classes = torch.arange(self.k, dtype=x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
        return -((x - classes) ** 2)


def _val_dice_logged(module: SystemModule, cases: list[tuple[torch.Tensor, torch.Tensor]], log: Path) -> float:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(log, name="logs", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(module, DataLoader(cases, batch_size=1))
    rows = list(csv.DictReader((log / "logs" / "version_0" / "metrics.csv").open()))
    values = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    assert len(values) == 1
    return values[0]


def _numpy_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 2 * int((pred & truth).sum()) / total if total else math.nan


def _mean_over_cases(per_case: list[list[float]]) -> float:
    """Mean over classes of each case, then over cases, leaving out NaN (empty in both) at each level."""
    means = [float(np.nanmean(d)) for d in per_case if not all(math.isnan(v) for v in d)]
    return float(np.mean(means))


def test_logged_val_dice_is_the_mean_over_cases_of_the_mean_over_classes(tmp_path: Path) -> None:
    pred, truth = torch.tensor(P), torch.tensor(G)
    background = torch.zeros_like(pred)
    only_one = torch.where(pred == 2, 0, pred)  # class 2 absent from prediction and truth: NaN, left out
    cases = [
        (pred, truth),  # (0.75 + 0.667) / 2
        (only_one, torch.where(truth == 2, 0, truth)),  # class 1: 0.75 only
        (torch.where(pred == 1, 2, pred), truth),  # class 1 never predicted: 0; class 2: |P| 8, |G| 2, 2 -> 0.4
        (background, background),  # nothing anywhere: NaN, the case is left out
    ]
    per_case = [[_numpy_dice((p == c).numpy(), (t == c).numpy()) for c in (1, 2)] for p, t in cases]
    assert math.isnan(per_case[1][1]) and per_case[2] == [0.0, 0.4]
    want = _mean_over_cases(per_case)
    batches = [(p[None].float(), t[None].float()) for p, t in cases]  # the engine's (image, target) pairs
    module = SystemModule(SupervisedSegmentation(Decode(3, multilabel=False), _plan()))
    assert _val_dice_logged(module, batches, tmp_path) == pytest.approx(want, abs=1e-6)


def test_logged_val_dice_multilabel(tmp_path: Path) -> None:
    pred, truth = torch.tensor(P), torch.tensor(G)
    cases = [
        (torch.stack([pred == 1, pred == 2]), torch.stack([truth == 1, truth == 2])),
        (torch.stack([pred == 2, pred > 5]), torch.stack([truth >= 1, truth > 5])),  # structure 2 empty in both
    ]
    per_case = [[_numpy_dice(p[s].numpy(), t[s].numpy()) for s in range(2)] for p, t in cases]
    want = _mean_over_cases(per_case)
    batches = [(p.float(), t.to(torch.uint8)) for p, t in cases]
    module = SystemModule(SupervisedSegmentation(Decode(2, multilabel=True), _plan("multilabel", k=2)))
    assert _val_dice_logged(module, batches, tmp_path) == pytest.approx(want, abs=1e-6)


def test_val_dice_of_a_training_run_is_that_of_its_validation_predictions(msd_3d: Path, tmp_path: Path) -> None:
    """A tiny 3D run (3 classes) validates once, at its last step; predicting its validation cases again with the
    saved weights and counting Dice with numpy gives the logged value."""
    run = tmp_path / "run"
    steps = 6
    opts = {**TINY, "val_interval": steps, "patch_size": [16, 16, 16], "lr": 0.02}
    # float32 like the prediction below (``auto`` would validate under bf16 autocast on a CPU with AMX)
    api.finetune(msd_3d, run, dims=3, max_steps=steps, quiet=True, accelerator="cpu", precision="32-true", **opts)  # type: ignore[arg-type]
    rows = list(csv.DictReader((run / "logs" / "metrics.csv").open()))
    logged = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    assert len(logged) == 1
    model = load_trained_model(run)  # the weights of the last step, where the validation ran
    plan = model.plan
    index = discover(msd_3d)
    by_id = {c.case_id: c for c in index.cases}
    val_ids = json.loads((run / "split.json").read_text())["val"][: TINY["max_val_cases"]]
    per_case = []
    for case_id in val_ids:
        case = load_checked_case(by_id[case_id], index)
        image = torch.from_numpy(preprocess_image(case.image, case.meta, plan))
        truth = encode_target(case, plan)[0]
        pred = predict_logits(model.network, image, plan).argmax(0).numpy()
        per_case.append([_numpy_dice(pred == c, truth == c) for c in range(1, plan.out_channels)])
    assert any(0 < v < 1 for d in per_case for v in d), per_case  # not a degenerate all-or-nothing prediction
    assert logged[0] == pytest.approx(_mean_over_cases(per_case), abs=1e-5)
