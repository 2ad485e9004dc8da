"""SimCLR: the loss is NT-Xent of the projected pooled features of the two views."""

from __future__ import annotations

import torch

from medssl.pretrain.simclr import SimCLR
from tests.pretrain.conftest import SMALL, images


def test_loss_is_ntxent_of_the_two_views() -> None:
    x = images(2, batch=3)
    view_b = x.flip(-2)
    method = SimCLR(2, 1, SMALL, temperature=0.2, projection_dim=16, views=lambda batch, g: (batch, view_b))
    loss = method.losses(x)["loss"]
    z_a, z_b = method.embed(x), method.embed(view_b)
    assert z_a.shape == (3, 16)
    torch.testing.assert_close(loss, method.criterion(z_a, z_b))
