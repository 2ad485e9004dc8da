"""Fine-tuning on partially labelled data (``annotations.json``): which structures each case annotates travels with
its patches and validation cases, only fully annotated cases are held out, and only a system that reads it trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from medssl import api
from medssl.engine.finetune import FinetuneRecipe
from medssl.errors import MedsslError
from medssl.segment.dodnet import DoDNetSegmentation
from medssl.segment.supervised import SupervisedSegmentation
from tests.conftest import TINY

# c00-c05 annotate one structure each (the other's mask file is absent); c06-c11 annotate both
DECLARED = {f"c{k:02d}": ["outer" if k % 2 == 0 else "inner"] for k in range(6)}


def _dataset(root: Path, declaration: dict[str, list[str]] | None = None) -> Path:
    """``images/`` + ``masks/{inner,outer}/`` PNGs: two discs, ``inner`` inside ``outer``, and ``declaration``."""
    rng = np.random.default_rng(0)
    grid = np.mgrid[:32, :32]
    for k in range(12):
        case = f"c{k:02d}"
        cy, cx = rng.uniform(12, 20, size=2)
        r2 = (grid[0] - cy) ** 2 + (grid[1] - cx) ** 2
        outer, inner = r2 <= 100, r2 <= 25
        img = np.clip(50 + 80 * outer + 80 * inner + rng.normal(0, 10, (32, 32)), 0, 255)
        files = {"images": img, "masks/outer": outer * 255, "masks/inner": inner * 255}
        for sub, arr in files.items():
            if sub.startswith("masks/") and declaration and sub[6:] not in declaration.get(case, [sub[6:]]):
                continue
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(root / sub / f"{case}.png")
    if declaration is not None:
        (root / "annotations.json").write_text(json.dumps(declaration))
    return root


def _record(monkeypatch: pytest.MonkeyPatch, system: type[SupervisedSegmentation]) -> dict[str, list[Any]]:
    """Record the training and validation batches ``system`` gets and the datasets fine-tuning builds."""
    seen: dict[str, list[Any]] = {"train": [], "val": [], "datasets": []}
    train, val, datasets = system.training_step, system.validation_step, FinetuneRecipe.datasets

    def training_step(self: Any, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        seen["train"].append({k: v.detach().clone() for k, v in batch.items()})
        return train(self, batch, step)

    def validation_step(self: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        seen["val"].append({k: v.detach().clone() for k, v in batch.items()})
        return val(self, batch)

    def record_datasets(self: FinetuneRecipe, plan: Any) -> Any:
        out = datasets(self, plan)
        seen["datasets"].append((self.split, out))
        return out

    monkeypatch.setattr(system, "training_step", training_step)
    monkeypatch.setattr(system, "validation_step", validation_step)
    monkeypatch.setattr(FinetuneRecipe, "datasets", record_datasets)
    return seen


def test_dodnet_trains_on_partial_labels_and_predicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(tmp_path / "data", DECLARED)
    seen = _record(monkeypatch, DoDNetSegmentation)
    run = tmp_path / "run"
    result = api.finetune(data, run, max_steps=4, quiet=True, system="dodnet", head_channels=4, **TINY)
    assert result.best_checkpoint is not None and result.test_summary
    split = json.loads((run / "split.json").read_text())
    assert split["val"] and split["test"] and not set(DECLARED) & {*split["val"], *split["test"]}
    # the patch dataset's rows are those of its training cases, in order (inner, outer: the plan's order)
    [(recorded_split, (patches, validation))] = seen["datasets"]
    rows = patches.case_fields["annotated"]
    assert len(rows) == len(recorded_split["train_labelled"])
    for case, row in zip(recorded_split["train_labelled"], rows, strict=True):
        assert row.tolist() == [s in DECLARED.get(case, ["inner", "outer"]) for s in ("inner", "outer")]
    assert all(row.all() for row in validation.case_fields["annotated"])
    # every training batch carries (B, K) bool rows, each a declared pattern
    assert len(seen["train"]) == 4
    for batch in seen["train"]:
        assert batch["annotated"].shape == (2, 2) and batch["annotated"].dtype == torch.bool
        assert {tuple(r) for r in batch["annotated"].tolist()} <= {(False, True), (True, False), (True, True)}
    assert all(b["annotated"].shape == (1, 2) and b["annotated"].all() for b in seen["val"])
    written = api.predict(run, data / "images", tmp_path / "pred", quiet=True)
    assert written and {p.parent.name for p in written} == {"inner", "outer"}


def test_a_system_that_ignores_annotations_is_refused(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", DECLARED)
    with pytest.raises(MedsslError, match=r"6 case\(s\) .* annotate only some structures.*--set system=dodnet") as e:
        api.finetune(data, tmp_path / "run", max_steps=2, quiet=True, **TINY)
    assert "\n" not in str(e.value) and not (tmp_path / "run").exists()


def test_too_few_fully_annotated_cases_are_refused(tmp_path: Path) -> None:
    declared = {f"c{k:02d}": ["outer"] for k in range(10)}
    data = _dataset(tmp_path / "data", declared)
    with pytest.raises(MedsslError, match=r"only 2 of 12 case\(s\) annotate every structure.*needs 3") as e:
        api.finetune(data, tmp_path / "run", max_steps=2, quiet=True, system="dodnet", **TINY)
    assert "\n" not in str(e.value)


def test_a_split_file_holding_out_a_partial_case_is_refused(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", DECLARED)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train_labelled": ["c00", "c01", "c06"], "val": ["c02"], "test": ["c07"]}))
    with pytest.raises(MedsslError, match="validation and test cases must annotate every structure.*: c02$"):
        api.finetune(data, tmp_path / "run", max_steps=2, quiet=True, system="dodnet", split_file=split, **TINY)


def test_without_partial_cases_batches_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No declaration (or one that every case annotates everything): no ``annotated`` field, and the same
    batches, as before partially labelled data existed."""
    seen = _record(monkeypatch, SupervisedSegmentation)
    plain = _dataset(tmp_path / "plain")
    api.finetune(plain, tmp_path / "run1", max_steps=2, quiet=True, **TINY)
    full = _dataset(tmp_path / "full", {f"c{k:02d}": ["inner", "outer"] for k in range(12)})
    api.finetune(full, tmp_path / "run2", max_steps=2, quiet=True, **TINY)
    n = len(seen["train"]) // 2
    assert n == 2 and all(set(b) == {"image", "target"} for b in seen["train"] + seen["val"])
    for a, b in zip(seen["train"][:n], seen["train"][n:], strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    for _, (patches, validation) in seen["datasets"]:
        assert patches.case_fields == {} and validation.case_fields == {}


def test_the_experiment_split_holds_out_only_fully_annotated_cases(tmp_path: Path) -> None:
    from medssl.config import FinetuneConfig
    from medssl.engine.experiment import _checked_split

    data = _dataset(tmp_path / "data", DECLARED)
    split = _checked_split(data, FinetuneConfig(test_fraction=0.3, val_fraction=0.2), quiet=True, skip_bad_cases=False)
    held_out = {*split["val"], *split["test"]}
    assert len(held_out) == 6 and held_out <= {f"c{k:02d}" for k in range(6, 12)}
