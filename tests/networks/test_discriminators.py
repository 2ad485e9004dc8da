"""Discriminators of adversarial segmentation (issue 17): shapes in 2D and 3D, Luc et al.'s input variants by value,
SegAN's critic features (input included) and its multi-scale L1 over every layer."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import MedsslError
from medssl.networks.discriminators import (
    FCDiscriminator,
    LucDiscriminator,
    SegANCritic,
    class_maps,
    luc_input,
    multiscale_l1,
    product_input,
    scaled_truth,
    target_maps,
)

WIDTHS = (4, 8)


@pytest.mark.parametrize("dims", [2, 3])
def test_shapes(dims: int) -> None:
    maps = torch.rand(2, 3, *[8] * dims)
    assert LucDiscriminator(dims, 3, WIDTHS)(maps).shape == (2,)
    assert FCDiscriminator(dims, 3, WIDTHS)(maps).shape == (2, 1, *[8] * dims)
    features = SegANCritic(dims, 3, WIDTHS)(maps)
    assert len(features) == len(WIDTHS) + 1 and features[0] is maps  # the input itself, then every layer
    assert [f.shape[1] for f in features] == [3, *WIDTHS]


def test_product_input_is_every_image_channel_times_every_class_map() -> None:
    image = torch.tensor([[[[2.0]], [[3.0]]]])  # (1, C=2, 1, 1)
    maps = torch.tensor([[[[0.5]], [[0.25]], [[0.25]]]])  # (1, K=3, 1, 1)
    got = product_input(image, maps).flatten().tolist()
    assert got == [1.0, 0.5, 0.5, 1.5, 0.75, 0.75]  # channel c * K + k = image[c] * maps[k]
    assert torch.equal(luc_input("product", image, maps), product_input(image, maps))
    assert luc_input("basic", image, maps) is maps and luc_input("scaling", image, maps) is maps
    with pytest.raises(MedsslError, match="unknown Luc input"):
        luc_input("concat", image, maps)


def _pixels(*columns: list[float]) -> torch.Tensor:
    """Class maps ``(1, K, 1, P)``: one column per pixel."""
    return torch.tensor(columns).T.reshape(1, len(columns[0]), 1, len(columns))


def test_scaling_puts_tau_on_the_true_class_and_follows_the_prediction_elsewhere() -> None:
    # pixel 1: true class 1 predicted 0.3 < tau; pixel 2: true class 0 predicted 0.95 >= tau
    probs = _pixels([0.5, 0.3, 0.2], [0.95, 0.03, 0.02])
    truth = target_maps(torch.tensor([[[[1, 0]]]]), 3, multilabel=False)
    got = scaled_truth(probs, truth, 0.9, multilabel=False)
    want = _pixels([0.5 * 0.1 / 0.7, 0.9, 0.2 * 0.1 / 0.7], [0.95, 0.03, 0.02])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got.sum(1), torch.ones(1, 1, 2))  # still a distribution
    # overlapping structures: each a (present, absent) pair
    probs = torch.tensor([0.3, 0.95, 0.3, 0.02]).view(1, 4, 1, 1)
    truth = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 4, 1, 1)
    got = scaled_truth(probs, truth, 0.9, multilabel=True).flatten()
    torch.testing.assert_close(got, torch.tensor([0.9, 0.95, 0.1, 0.02]))


def test_class_and_target_maps() -> None:
    logits = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(class_maps(logits, multilabel=False).sum(1), torch.ones(2, 4, 4))
    torch.testing.assert_close(class_maps(logits, multilabel=True), torch.sigmoid(logits))
    target = torch.randint(0, 3, (2, 1, 4, 4))
    maps = target_maps(target, 3, multilabel=False)
    assert maps.shape == (2, 3, 4, 4) and torch.equal(maps.argmax(1), target[:, 0])


def test_multiscale_l1_is_the_mean_over_every_layer_concatenated() -> None:
    a = [torch.zeros(2, 1, 4, 4), torch.zeros(2, 2, 2, 2), torch.zeros(2, 4, 1, 1)]
    b = [torch.ones(2, 1, 4, 4), torch.zeros(2, 2, 2, 2), torch.full((2, 4, 1, 1), 3.0)]
    # 16 values differ by 1, 8 by 0, 4 by 3 per image: (16 + 12) / 28
    assert multiscale_l1(a, b).item() == pytest.approx(28 / 28)
    b[0] = torch.zeros(2, 1, 4, 4)
    assert multiscale_l1(a, b).item() == pytest.approx(12 / 28)  # the last layer alone would give 3
    with pytest.raises(ValueError):
        multiscale_l1(a, b[:2])


@pytest.mark.parametrize("dims", [2, 3])
def test_critic_loss_sees_differences_at_every_scale(dims: int) -> None:
    torch.manual_seed(0)
    critic = SegANCritic(dims, 2, WIDTHS)
    x, y = torch.rand(2, 2, *[8] * dims), torch.rand(2, 2, *[8] * dims)
    fx, fy = critic(x), critic(y)
    want = torch.cat([(p - q).abs().flatten(1) for p, q in zip(fx, fy, strict=True)], 1).mean()
    torch.testing.assert_close(multiscale_l1(fx, fy), want)
