"""``medssl pretrain``: every registered method trains on an unlabelled folder, and its encoder fine-tunes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medssl import api
from medssl.errors import MedsslError
from medssl.networks import UNetEncoder, load_encoder
from medssl.pretrain import names
from tests.conftest import TINY

FAST = {"max_steps": 2, "batch_size": 2, "channels": [4, 8], "quiet": True, "accelerator": "cpu"}


@pytest.fixture
def unlabelled_2d(tmp_path: Path) -> Path:
    """Six 32 x 32 greyscale PNGs, no labels."""
    root = tmp_path / "unlabelled"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        img = np.clip(80 + 40 * rng.standard_normal((32, 32)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
    return root


def _losses(run: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    with (run / "logs" / "metrics.csv").open() as fh:
        for row in csv.DictReader(fh):
            for k, v in row.items():
                if k.startswith("train_") and v:
                    out.setdefault(k, []).append(float(v))
    return out


@pytest.mark.parametrize("method", names())
def test_each_method_writes_a_run_folder_and_encoder(method: str, unlabelled_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / f"pre-{method}"
    result = api.pretrain(unlabelled_2d, run, method=method, **FAST)  # type: ignore[arg-type]
    assert result.global_step == 2
    for name in ("plan.json", "config.yaml", "checkpoints/last.ckpt", "encoder.pt", "training_curves.png"):
        assert (run / name).is_file(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == method and cfg["channels"] == [4, 8] and cfg["batch_size"] == 2
    losses = _losses(run)
    assert losses["train_loss"] and all(math.isfinite(v) for vs in losses.values() for v in vs)
    assert load_encoder(UNetEncoder(2, 1, (4, 8)), run / "encoder.pt") > 0


def test_encoder_initialises_finetuning(unlabelled_2d: Path, paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "pre"
    api.pretrain(unlabelled_2d, run, method="simclr", **FAST)  # type: ignore[arg-type]
    ft = api.finetune(paired_2d, tmp_path / "ft", init=run / "encoder.pt", max_steps=2, quiet=True, seed=0, **TINY)
    assert ft.best_checkpoint is not None and ft.best_checkpoint.is_file()


def test_3d_smoke_and_resume(msd_3d: Path, tmp_path: Path) -> None:
    run = tmp_path / "pre3d"
    opts = {**FAST, "patch_size": [16, 16, 16]}
    api.pretrain(msd_3d, run, method=names()[0], dims=3, **opts)  # type: ignore[arg-type]
    assert load_encoder(UNetEncoder(3, 1, (4, 8)), run / "encoder.pt") > 0
    opts["max_steps"] = 3
    again = api.pretrain(msd_3d, run, method=names()[0], dims=3, resume=True, **opts)  # type: ignore[arg-type]
    assert again.global_step == 3


def test_unknown_method_lists_the_known_ones(unlabelled_2d: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match=names()[0]):
        api.pretrain(unlabelled_2d, tmp_path / "x", method="nope", **FAST)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()
    with pytest.raises(MedsslError, match="known methods"):
        api.pretrain(unlabelled_2d, tmp_path / "y", **FAST)  # type: ignore[arg-type]
