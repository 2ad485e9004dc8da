"""PCRL: transform indicator and gate, transformed targets, FIFO queue, momentum encoder, mixup, losses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from medssl import api
from medssl.data.views import ViewRecord
from medssl.networks import UNetEncoder, load_encoder, save_encoder
from medssl.pretrain import PCRL, registry
from medssl.pretrain.pcrl import PCRLViews, transform_indicator
from medssl.pretrain.pcrl_losses import info_nce_loss, nce_loss
from tests.pretrain.conftest import SIZE, SMALL, images


def _record(dims: int, flips: tuple[bool, ...], k: int) -> ViewRecord:
    full = tuple([float(SIZE)] * dims)
    shape = tuple([SIZE] * dims)
    return ViewRecord((0.0,) * dims, full, shape, shape, flips, rot90_k=k)


def _known_pairs(dims: int) -> tuple[list[ViewRecord], list[ViewRecord]]:
    """Whole-image views with known flips and turns, sample by sample."""
    if dims == 2:
        return [_record(2, (True, False), 1), _record(2, (False, False), 0)], [
            _record(2, (False, True), 2),
            _record(2, (True, True), 3),
        ]
    return [_record(3, (True, False, True), 3), _record(3, (False, False, False), 0)], [
        _record(3, (False, True, False), 1),
        _record(3, (True, True, True), 2),
    ]


def _other(t: Tensor) -> Tensor:
    """What the second view shows (unlike the first, so that the two branches see different inputs)."""
    return t.flip(-1).square()


def _views(dims: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """The known views of ``x``: the first image as transformed by ``rec1``, ``_other`` of it by ``rec2``."""
    rec1, rec2 = _known_pairs(dims)
    v1 = torch.stack([r.from_crop_frame(t) for r, t in zip(rec1, x, strict=True)])
    v2 = torch.stack([r.from_crop_frame(_other(t)) for r, t in zip(rec2, x, strict=True)])
    return v1, v2


def _method(dims: int, **kwargs: object) -> PCRL:
    """A PCRL whose views are ``_views``, with no corruption, alpha 0.7, and a momentum encoder unlike the online
    one (so that mixing the wrong maps shows)."""
    rec1, rec2 = _known_pairs(dims)

    def pairs(
        x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list[ViewRecord], list[ViewRecord]]:
        return *_views(dims, x), rec1, rec2

    torch.manual_seed(0)
    method = PCRL(dims, 1, SMALL, views=pairs, **kwargs)  # type: ignore[arg-type]
    method.corrupt = lambda x, generator=None: x  # type: ignore[method-assign]
    method.mix_coefficient = lambda generator=None: 0.7  # type: ignore[method-assign]
    with torch.no_grad():
        for p in method.momentum_encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return method


def test_indicator_is_flips_then_one_hot_turns() -> None:
    got = transform_indicator([_record(2, (True, False), 1), _record(3, (False, True, True), 3)][:1])
    assert got.tolist() == [[1, 0, 0, 1, 0, 0]]
    got3 = transform_indicator([_record(3, (False, True, True), 3), _record(3, (True, False, False), 0)])
    assert got3.tolist() == [[0, 1, 1, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0]]


@pytest.mark.parametrize("dims", [2, 3])
def test_gate_gets_each_views_indicator_and_the_mixup_features_use_the_same_alpha(dims: int) -> None:
    method = _method(dims)
    seen: list[tuple[Tensor, Tensor]] = []
    gate_forward = method.gate.forward

    def spy(features: Tensor, indicator: Tensor) -> Tensor:
        seen.append((features.detach(), indicator.detach()))
        return gate_forward(features, indicator)

    method.gate.forward = spy  # type: ignore[method-assign]
    x = images(dims, batch=2)
    method.losses(x)
    (maps, indicators), (rec1, rec2) = seen[0], _known_pairs(dims)
    ind1, ind2 = transform_indicator(rec1), transform_indicator(rec2)
    assert torch.equal(indicators, torch.cat((ind1, ind2, 0.7 * ind1 + 0.3 * ind2)))
    x1, x2 = x, torch.stack([_other(t) for t in x])  # the views in their crop frame
    with torch.no_grad():
        o1 = method.encoder(torch.cat((x1, x2)))[-1][:2]
        m2 = method.momentum_encoder(torch.cat((x1, x2)))[-1][2:]
    torch.testing.assert_close(maps[4:], 0.7 * o1 + 0.3 * m2)


@pytest.mark.parametrize("dims", [2, 3])
def test_targets_are_transformed_like_the_crop_the_encoder_sees(dims: int) -> None:
    torch.manual_seed(0)
    method = PCRL(dims, 1, SMALL, views=PCRLViews(flip_prob=0.5, rot90_prob=1.0))
    method.corrupt = lambda x, generator=None: x  # type: ignore[method-assign]
    x1, x2, t1, t2, ind1, ind2 = method.inputs_and_targets(images(dims, batch=4), torch.Generator().manual_seed(3))
    assert (ind1[:, dims:].argmax(1) > 0).all()  # every view turned
    for xs, ts, inds in ((x1, t1, ind1), (x2, t2, ind2)):
        for x, t, ind in zip(xs, ts, inds, strict=True):
            flips = [1 + a for a in range(dims) if ind[a]]
            k = int(ind[dims:].argmax())
            want = torch.rot90(x.flip(flips) if flips else x, k, dims=(1, 2))
            torch.testing.assert_close(t, want)


@pytest.mark.parametrize("dims", [2, 3])
def test_reconstruction_targets_and_the_mixup_target_use_the_same_alpha(dims: int) -> None:
    method = _method(dims)

    out = torch.rand(6, 1, *[SIZE] * dims, generator=torch.Generator().manual_seed(1))

    class Fixed(torch.nn.Module):  # the decoder's output, known: what is left to check is the targets
        def forward(self, z: Tensor) -> Tensor:
            return out

    method.decoder = Fixed()  # type: ignore[assignment]
    x = images(dims, batch=2)
    t1, t2 = _views(dims, x)
    mse = [F.mse_loss(o, t) for o, t in zip(out.chunk(3), (t1, t2, 0.7 * t1 + 0.3 * t2), strict=True)]
    want = sum(mse) / 3
    torch.testing.assert_close(method.losses(x)["reconstruction"], want)


def test_queue_is_first_in_first_out() -> None:
    method = PCRL(2, 1, SMALL, queue_size=5, projection_dim=2)
    keys = torch.arange(14.0).view(7, 2)
    method.enqueue(keys[:3])
    method.enqueue(keys[3:7])  # wraps: 3, 4 at the end, 5, 6 over the oldest (0, 1)
    assert method.queue.tolist() == [keys[5].tolist(), keys[6].tolist(), *keys[2:5].tolist()]
    assert int(method.queue_ptr) == 2


@pytest.mark.parametrize("dims", [2, 3])
def test_a_batch_is_never_its_own_negative_and_enters_the_queue_after(dims: int) -> None:
    method = _method(dims, queue_size=4)
    negatives: list[Tensor] = []
    positives: list[Tensor] = []
    contrast = method.contrast

    def spy(query: Tensor, key: Tensor, negative: Tensor) -> Tensor:
        negatives.append(negative.clone())
        positives.append(key)
        return contrast(query, key, negative)

    method.contrast = spy  # type: ignore[method-assign,assignment]
    x = images(dims, batch=2)
    before = method.queue.clone()
    method.losses(x)
    assert all(torch.equal(n, before) for n in negatives)
    with torch.no_grad():
        x12 = torch.cat((x, torch.stack([_other(t) for t in x])))
        keys = F.normalize(method.momentum_projector.forward_map(method.momentum_encoder(x12)[-1]), dim=1)
    torch.testing.assert_close(method.queue, keys)  # k1 then k2, the 4 oldest replaced
    k1, k2 = keys.chunk(2)  # the positives: k2 for q1, k1 for q2, the same mixture of keys as of maps for q_mix
    torch.testing.assert_close(torch.cat(positives), torch.cat((k2, k1, F.normalize(0.7 * k1 + 0.3 * k2, dim=1))))
    negatives.clear()
    method.losses(images(dims, batch=2) + 1)
    assert negatives and all(torch.equal(n, keys) for n in negatives)


def test_momentum_encoder_gets_no_gradient_and_follows_the_ema_in_after_step() -> None:
    method = _method(2)
    method.losses(images(2))["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in method.momentum_encoder.parameters())
    assert all(p.grad is not None for p in method.encoder.parameters())
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    old = [p.clone() for p in method.momentum_encoder.parameters()]
    method.after_step(0, 10)
    for o, p, new in zip(old, method.encoder.parameters(), method.momentum_encoder.parameters(), strict=True):
        torch.testing.assert_close(new, 0.999 * o + 0.001 * p)


def _naive_info_nce(q: Tensor, k: Tensor, neg: Tensor, t: float) -> Tensor:
    total = 0.0
    for i in range(len(q)):
        pos = math.exp(float(q[i] @ k[i]) / t)
        total -= math.log(pos / (pos + sum(math.exp(float(q[i] @ n) / t) for n in neg)))
    return torch.tensor(total / len(q))


def _naive_nce(q: Tensor, k: Tensor, neg: Tensor, t: float, n_data: int, z: float) -> Tensor:
    m, pn, total = len(neg), 1 / n_data, 0.0
    for i in range(len(q)):
        s = math.exp(float(q[i] @ k[i]) / t) / z
        total += math.log(s / (s + m * pn + 1e-7))
        for n in neg:
            s = math.exp(float(q[i] @ n) / t) / z
            total += math.log(m * pn / (s + m * pn + 1e-7))
    return torch.tensor(-total / len(q))


def test_losses_match_naive_references() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, neg = (F.normalize(torch.randn(n, 8, generator=g, dtype=torch.float64), dim=1) for n in (3, 3, 5))
    torch.testing.assert_close(info_nce_loss(q, k, neg, 0.2), _naive_info_nce(q, k, neg, 0.2).double())
    torch.testing.assert_close(nce_loss(q, k, neg, 0.2, 100, 7.5), _naive_nce(q, k, neg, 0.2, 100, 7.5).double())


@pytest.mark.parametrize("loss", ["infonce", "nce"])
@pytest.mark.parametrize("dims", [2, 3])
def test_steps_on_one_batch_lower_the_loss(dims: int, loss: str) -> None:
    method = _method(dims, loss=loss, queue_size=64)
    # One batch over and over fills the queue with its own earlier keys, which rightly raises the contrastive
    # term; a fixed queue of random keys leaves the optimisation alone to judge.
    method.enqueue = lambda keys: None  # type: ignore[method-assign]
    x = images(dims, batch=2)
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    values = []
    for step in range(12):
        value = method.losses(x)["loss"]
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        method.after_step(step, 12)
        values.append(float(value))
    assert all(math.isfinite(v) for v in values) and values[-1] < values[0]


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_exported_encoder_loads_into_the_unet(preset: str, tmp_path: Path) -> None:
    method = registry.create("pcrl", spatial_dims=2, in_channels=1, preset=preset)
    assert isinstance(method, PCRL)
    assert method.queue.shape[0] == {"small": 1024, "paper": 16384}[preset]
    path = save_encoder(method.export_encoder(), tmp_path / "pcrl.pt")
    encoder = method.export_encoder()
    assert isinstance(encoder, UNetEncoder)
    fresh = UNetEncoder(2, 1, encoder.channels)
    assert load_encoder(fresh, path) == len(encoder.state_dict())


def test_bad_view_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="rot90_p"):
        PCRLViews(rot90_prob=1.5)


def test_the_pretrain_command_trains_pcrl_and_calls_after_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "unlabelled"
    data.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(data / f"img{i}.png")
    calls: list[tuple[int, int]] = []
    real_after_step = PCRL.after_step

    def spy(self: PCRL, step: int, max_steps: int) -> None:
        calls.append((step, max_steps))
        real_after_step(self, step, max_steps)

    monkeypatch.setattr(PCRL, "after_step", spy)
    opts: dict[str, Any] = {"batch_size": 2, "channels": [4, 8], "quiet": True, "accelerator": "cpu"}
    api.pretrain(data, tmp_path / "run", method="pcrl", max_steps=3, queue_size=8, loss="nce", **opts)
    assert calls == [(0, 3), (1, 3), (2, 3)]
    assert load_encoder(UNetEncoder(2, 1, (4, 8)), tmp_path / "run" / "encoder.pt") > 0
