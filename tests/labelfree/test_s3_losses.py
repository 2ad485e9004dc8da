from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medssl.labelfree.s3_losses import (
    affine_consistency_loss,
    boundary_loss,
    random_affine,
    self_training_loss,
    spatial_consistency_loss,
    transform_pair,
)

QUARTER_TURN = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])


def test_a_known_rotation_moves_image_labels_and_valid_mask_alike() -> None:
    image = torch.randn(1, 2, 6, 6)
    labels = torch.randint(0, 4, (1, 6, 6))
    valid = torch.rand(1, 6, 6) > 0.3
    moved_image, moved_labels, moved_valid = transform_pair(image, labels, valid, QUARTER_TURN)
    assert torch.allclose(moved_image, torch.rot90(image, 1, (2, 3)), atol=1e-5)
    assert torch.equal(moved_labels, torch.rot90(labels, 1, (1, 2)))
    assert torch.equal(moved_valid, torch.rot90(valid, 1, (1, 2)))


def test_pixels_brought_in_from_outside_are_not_valid() -> None:
    shift = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # reads half an image to the right
    _, _, valid = transform_pair(
        torch.zeros(1, 1, 4, 8), torch.zeros(1, 4, 8, dtype=torch.long), torch.ones(1, 4, 8, dtype=torch.bool), shift
    )
    assert valid[..., :4].all() and not valid[..., 4:].any()


def test_random_affine_ranges() -> None:
    identity = random_affine(3, max_degrees=0, scale_range=(1, 1), max_translation=0)
    assert torch.allclose(identity, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    g = torch.Generator().manual_seed(0)
    theta = random_affine(200, max_degrees=30, scale_range=(0.8, 1.25), max_translation=0.1, generator=g)
    linear = theta[:, :, :2]
    scale = 1 / torch.linalg.det(linear).sqrt()  # the matrix maps output to input coordinates
    angle = torch.atan2(linear[:, 1, 0], linear[:, 0, 0]).abs()
    assert scale.min() >= 0.8 - 1e-5 and scale.max() <= 1.25 + 1e-5
    assert angle.max() <= math.radians(30) + 1e-5 and angle.max() > math.radians(20)
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-6


def test_self_training_is_cross_entropy_with_the_own_argmax_over_valid_pixels() -> None:
    response = torch.randn(1, 3, 4, 5)
    valid = torch.zeros(1, 4, 5, dtype=torch.bool)
    valid[:, :2] = True
    expected = F.cross_entropy(response, response.argmax(1), reduction="none")[valid].mean()
    assert torch.allclose(self_training_loss(response, valid), expected)
    target = torch.zeros(1, 4, 5, dtype=torch.long)
    expected_target = F.cross_entropy(response, target, reduction="none")[valid].mean()
    assert torch.allclose(self_training_loss(response, valid, target), expected_target)


def test_affine_consistency_vanishes_into_self_training_for_an_equivariant_predictor() -> None:
    # A pixel-wise predictor commutes with any warp, so the transformed prediction's labels equal the
    # prediction on the transformed image: the consistency loss is that prediction's self-training loss.
    predictor = torch.nn.Conv2d(2, 3, 1)
    image = torch.randn(1, 2, 8, 8)
    valid = torch.ones(1, 8, 8, dtype=torch.bool)
    labels = predictor(image).argmax(1)
    moved_image, moved_labels, moved_valid = transform_pair(image, labels, valid, QUARTER_TURN)
    response = predictor(moved_image)
    assert torch.allclose(
        affine_consistency_loss(response, moved_labels, moved_valid), self_training_loss(response, moved_valid)
    )


def test_spatial_consistency_hand_computed_and_differentiable() -> None:
    # Two columns of a 2x2 image: the image has an edge between the columns in one test and none in the other.
    probabilities = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]], requires_grad=True)
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    flat = torch.zeros(1, 1, 2, 2)
    # Flat image: all weights 1 (sigma clamps to a tiny value but every difference is 0). Right pairs differ
    # by 2 (L1 over the two channels), down pairs by 0, the diagonal pair by 2: (2 + 0 + 2) / 3.
    loss = spatial_consistency_loss(probabilities, flat, valid)
    assert loss.item() == pytest.approx(4 / 3)
    loss.backward()
    assert probabilities.grad is not None and probabilities.grad.abs().sum() > 0
    # An image edge between the columns makes the prediction's change there cheap.
    edge = torch.tensor([[[[0.0, 10.0], [0.0, 10.0]]]])
    assert spatial_consistency_loss(probabilities.detach(), edge, valid) < loss.item() / 2


def test_spatial_consistency_is_zero_for_a_constant_prediction() -> None:
    probabilities = torch.full((1, 2, 5, 5), 0.5)
    assert spatial_consistency_loss(probabilities, torch.randn(1, 3, 5, 5), torch.ones(1, 5, 5, dtype=torch.bool)) == 0


def test_boundary_loss_zero_when_constant_and_positive_at_an_edge() -> None:
    valid = torch.ones(1, 16, 16, dtype=torch.bool)
    assert boundary_loss(torch.full((1, 2, 16, 16), 0.5), valid, factor=4) == 0
    step = torch.zeros(1, 2, 16, 16)
    step[:, 0, :, :7] = 1.0
    step[:, 1, :, 7:] = 1.0
    step.requires_grad_(True)
    loss = boundary_loss(step, valid, factor=4)
    assert loss > 0
    loss.backward()
    assert step.grad is not None and step.grad.abs().sum() > 0
