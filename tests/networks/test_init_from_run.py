"""``finetune --init RUN/checkpoints/last.ckpt`` with a real pretraining run: the checkpoint holds the method's
whole state (online encoder, heads, momentum copies) as the engine writes it; ``load_encoder`` takes the online
encoder from it, the very weights of ``RUN/encoder.pt``, and never the momentum copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medssl import api
from medssl.errors import MedsslError
from medssl.networks import UNetEncoder, load_encoder
from medssl.networks.weights import load_checkpoint_file
from medssl.pretrain import names
from tests.conftest import TINY

CHANNELS = (4, 8)
# lr 0.05: the online encoder moves far from the momentum copy in two steps (momentum 0.5), so loading the wrong
# one cannot pass for the right one
PRETRAIN: dict[str, Any] = {"max_steps": 2, "batch_size": 2, "channels": list(CHANNELS), "lr": 0.05}
PRETRAIN |= {"quiet": True, "accelerator": "cpu"}
METHOD_OPTIONS: dict[str, dict[str, Any]] = {"byol": {"momentum": 0.5, "hidden_dim": 16}, "pgl": {"momentum": 0.5}}


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def byol_run(unlabelled: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pretrain") / "byol"
    api.pretrain(unlabelled, run, method="byol", **PRETRAIN, **METHOD_OPTIONS["byol"])
    return run


def _weights(path: Path, channels: tuple[int, ...] = CHANNELS) -> dict[str, torch.Tensor]:
    encoder = UNetEncoder(2, 1, channels)
    load_encoder(encoder, path)
    return encoder.state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.mark.parametrize("method", names())
def test_each_methods_checkpoint_loads_the_encoder_it_exports(
    method: str, unlabelled: Path, tmp_path: Path, byol_run: Path
) -> None:
    run = byol_run if method == "byol" else tmp_path / method
    if method != "byol":
        api.pretrain(unlabelled, run, method=method, **PRETRAIN, **METHOD_OPTIONS.get(method, {}))
    _assert_same(_weights(run / "checkpoints" / "last.ckpt"), _weights(run / "encoder.pt"))


def test_the_momentum_copy_is_not_what_is_loaded(byol_run: Path) -> None:
    """The checkpoint as the engine writes it holds two encoders of one shape; the loaded one is the online one."""
    state = load_checkpoint_file(byol_run / "checkpoints" / "last.ckpt")["state_dict"]
    online = _weights(byol_run / "encoder.pt")
    copies = {k.split("target_encoder.", 1)[1]: v for k, v in state.items() if ".target_encoder." in f".{k}"}
    assert copies.keys() == online.keys(), "the pretraining checkpoint no longer holds BYOL's momentum encoder"
    assert max((copies[k] - online[k]).abs().max().item() for k in online) > 1e-2
    _assert_same(_weights(byol_run / "checkpoints" / "last.ckpt"), online)


def test_finetune_init_from_a_pretraining_checkpoint_starts_from_its_encoder(
    byol_run: Path, paired_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = byol_run / "checkpoints" / "last.ckpt"
    run = tmp_path / "ft"
    # lr 1e-12: the one step leaves the weights as --init set them (to far below the tolerance)
    api.finetune(paired_2d, run, init=ckpt, max_steps=1, quiet=True, accelerator="cpu", **{**TINY, "lr": 1e-12})
    assert f"loaded {len(_weights(ckpt))} encoder tensors from {ckpt}" in " ".join(capsys.readouterr().err.split())
    state = load_checkpoint_file(run / "checkpoints" / "last.ckpt")["state_dict"]
    started = {k.removeprefix("model.encoder."): v for k, v in state.items() if k.startswith("model.encoder.")}
    _assert_same(started, _weights(byol_run / "encoder.pt"), atol=1e-6)


def test_a_pretraining_checkpoint_of_other_widths_is_refused(byol_run: Path, paired_2d: Path, tmp_path: Path) -> None:
    ckpt = byol_run / "checkpoints" / "last.ckpt"
    with pytest.raises(MedsslError, match="another shape") as exc:
        load_encoder(UNetEncoder(2, 1, (8, 16)), ckpt)
    assert str(ckpt) in str(exc.value)
    with pytest.raises(MedsslError, match="another shape"):
        api.finetune(paired_2d, tmp_path / "ft", init=ckpt, max_steps=1, quiet=True, **{**TINY, "channels": [8, 16]})
