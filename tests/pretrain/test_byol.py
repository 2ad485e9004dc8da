"""BYOL: momentum schedule, EMA update and the frozen target."""

from __future__ import annotations

import pytest
import torch

from medssl.pretrain.byol import BYOL, cosine_momentum, update_momentum
from medssl.pretrain.losses import byol_loss
from tests.pretrain.conftest import SMALL, images


def test_cosine_momentum_endpoints() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(250, 100) == pytest.approx(1.0)
    assert cosine_momentum(0, 10, base=0.9, final=0.99) == pytest.approx(0.9)
    values = [cosine_momentum(k, 20) for k in range(21)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="max_steps"):
        cosine_momentum(0, 0)


def test_target_starts_as_a_frozen_copy() -> None:
    method = BYOL(2, 1, SMALL)
    online, target = method.encoder.state_dict(), method.target_encoder.state_dict()
    assert all(torch.equal(online[k], target[k]) for k in online)
    assert not any(p.requires_grad for p in method.target_encoder.parameters())
    assert not any(p.requires_grad for p in method.target_projector.parameters())
    assert method.target_encoder is not method.encoder


def test_after_step_is_one_ema_update() -> None:
    method = BYOL(2, 1, SMALL)
    with torch.no_grad():  # make online and target differ, as after some optimiser steps
        for p in (*method.encoder.parameters(), *method.projector.parameters()):
            p.add_(torch.randn_like(p))
    online = [p.detach().clone() for p in (*method.encoder.parameters(), *method.projector.parameters())]
    target = [p.clone() for p in (*method.target_encoder.parameters(), *method.target_projector.parameters())]
    method.after_step(30, 100)
    m = cosine_momentum(30, 100)
    assert method.momentum == m and 0.996 < m < 1
    updated = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    for new, t, o in zip(updated, target, online, strict=True):
        torch.testing.assert_close(new, m * t + (1 - m) * o)
    # The online network is untouched.
    for p, o in zip((*method.encoder.parameters(), *method.projector.parameters()), online, strict=True):
        assert torch.equal(p, o)


def test_update_momentum_copies_buffers() -> None:
    online, target = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    assert online.running_mean is not None and target.running_mean is not None
    online.running_mean.fill_(2.0)
    update_momentum(online, target, 0.5)
    assert torch.equal(target.running_mean, online.running_mean)


def test_loss_is_symmetrised() -> None:
    x = images(2)
    view_b = x.flip(-1)
    method = BYOL(2, 1, SMALL, views=lambda batch, g: (batch, view_b))
    loss = method.losses(x)["loss"]

    def online(v: torch.Tensor) -> torch.Tensor:
        return method.predictor(method.projector.forward_map(method.encoder(v)[-1]))

    def target(v: torch.Tensor) -> torch.Tensor:
        return method.target_projector.forward_map(method.target_encoder(v)[-1])

    expected = (byol_loss(online(x), target(view_b)) + byol_loss(online(view_b), target(x))) / 2
    torch.testing.assert_close(loss, expected)


def test_rejects_bad_momentum() -> None:
    with pytest.raises(ValueError, match="momentum"):
        BYOL(2, 1, SMALL, momentum=0.999, final_momentum=0.99)
