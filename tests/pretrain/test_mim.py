"""Masked image modelling: block masks, no leak of masked input through the encoder, masked-only loss."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks import UNet, UNetEncoder, load_encoder, save_encoder
from medssl.networks.layers import ConvNormAct
from medssl.pretrain import registry
from medssl.pretrain.mim import MIM, block_normalize, downsample_visible, masked_mse, sample_block_mask
from tests.pretrain.conftest import SIZE, SMALL, identity_views, images

DIMS = [2, 3]


def _method(dims: int, **kwargs: object) -> MIM:
    return MIM(dims, 1, SMALL, views=identity_views, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("ratio", [0.25, 0.6, 0.75])
def test_mask_masks_the_ratio_of_whole_blocks(dims: int, ratio: float) -> None:
    visible = sample_block_mask((3, 2, *[8] * dims), 2, ratio, torch.Generator().manual_seed(1))
    assert visible.shape == (3, 1, *[8] * dims) and visible.dtype == torch.bool
    blocks = visible.view(3, *[v for _ in range(dims) for v in (4, 2)])  # (B, g, 2, g, 2, ...)
    inside = tuple(range(2, 2 + 2 * dims, 2))
    assert torch.equal(blocks.amin(inside), blocks.amax(inside))  # each block all seen or all masked
    n = 4**dims
    for image in visible:  # exactly round(ratio * n) blocks per image, not a Bernoulli draw
        assert (~image).sum().item() == round(ratio * n) * 2**dims
    assert not torch.equal(visible[0], visible[1])  # each image its own mask


def test_mask_keeps_a_block_of_each_kind_and_rejects_indivisible_sizes() -> None:
    visible = sample_block_mask((1, 1, 4, 4), 2, 0.01)
    assert (~visible).sum() == 4 and visible.sum() == 12
    assert sample_block_mask((1, 1, 4, 4), 2, 0.99).sum() == 4
    with pytest.raises(MedsslError, match="not divisible by the MIM block_size 3"):
        sample_block_mask((1, 1, 8, 8), 3, 0.5)
    with pytest.raises(MedsslError, match="block_size"):
        _method(2, block_size=3).losses(images(2))


def test_loss_counts_only_masked_voxels() -> None:
    target = torch.randn(2, 3, 8, 8)
    prediction = torch.randn(2, 3, 8, 8)
    visible = sample_block_mask(target.shape, 2, 0.5, torch.Generator().manual_seed(0))
    loss = masked_mse(prediction, target, visible)
    elsewhere = torch.where(visible, prediction + 10 * torch.randn_like(prediction), prediction)
    torch.testing.assert_close(masked_mse(elsewhere, target, visible), loss)
    inside = torch.where(visible, prediction, prediction + 1)
    assert not torch.allclose(masked_mse(inside, target, visible), loss)
    hidden = (~visible).expand_as(target)
    torch.testing.assert_close(loss, F.mse_loss(prediction[hidden], target[hidden]))


def _naive_block_normalize(x: Tensor, block: int) -> Tensor:
    out = torch.empty_like(x)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for corner in itertools.product(*(range(0, s, block) for s in x.shape[2:])):
            where = (b, c, *(slice(i, i + block) for i in corner))
            values = x[where]
            out[where] = (values - values.mean()) / (values.var(correction=0) + 1e-6).sqrt()
    return out


def _naive_masked_mse(prediction: Tensor, target: Tensor, visible: Tensor) -> Tensor:
    total, count = torch.zeros(()), 0
    for index in itertools.product(*(range(s) for s in prediction.shape)):
        if not visible[(index[0], 0, *index[2:])]:
            total = total + (prediction[index] - target[index]) ** 2
            count += 1
    return total / count


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("normalize", [False, True])
def test_loss_equals_a_naive_reference(dims: int, normalize: bool) -> None:
    method = _method(dims, normalize_target=normalize)
    x = images(dims) if dims == 2 else images(dims)[..., :8, :8, :8]
    loss = method.losses(x, torch.Generator().manual_seed(3))["loss"]
    generator = torch.Generator().manual_seed(3)
    view, _ = method.make_views(x, generator)
    visible = method.sample_mask(view, generator)
    with torch.no_grad():
        prediction = method.reconstruct(view, visible)
    target = _naive_block_normalize(x, method.block_size) if normalize else x
    if normalize:
        torch.testing.assert_close(block_normalize(x, method.block_size), target)
    torch.testing.assert_close(loss, _naive_masked_mse(prediction, target, visible))


def _unit_outputs(method: MIM, x: Tensor, visible: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The encoder's maps and the output of every ConvNormAct unit, seen from outside the method."""
    seen: list[Tensor] = []

    def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen.append(output)

    units = [m for m in method.encoder.modules() if isinstance(m, ConvNormAct)]
    handles = [unit.register_forward_hook(record) for unit in units]
    try:
        features = method.encode(x, visible)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) == len(units) == 2 * len(SMALL)
    return features, seen


def _masked_cells(visible: Tensor, spatial: torch.Size) -> Tensor:
    """Cells at a coarser size that hold only masked voxels."""
    factor = visible.shape[-1] // spatial[-1]
    pool = F.max_pool2d if visible.ndim == 4 else F.max_pool3d
    return pool(visible.float(), factor) == 0


@pytest.mark.parametrize("dims", DIMS)
def test_masked_positions_stay_masked_and_do_not_leak(dims: int) -> None:
    method = _method(dims)
    x = images(dims)
    visible = method.sample_mask(x, torch.Generator().manual_seed(0))
    changed = torch.where(visible, x, x + 5 * torch.randn_like(x))
    features, units = _unit_outputs(method, x, visible)
    features_changed, _ = _unit_outputs(method, changed, visible)
    for output in units:  # every unit's output is zero where its cell is entirely masked
        hidden = _masked_cells(visible, output.shape[2:])
        assert hidden.any() and torch.all(output * hidden == 0)
    deepest_hidden = _masked_cells(visible, features[-1].shape[2:])
    assert deepest_hidden.any() and not deepest_hidden.all()
    for a, b in zip(features, features_changed, strict=True):  # masked content reaches no position
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(method.reconstruct(x, visible), method.reconstruct(changed, visible), rtol=0, atol=0)
    assert not any(unit._forward_hooks for unit in method.units)  # the masking hooks are gone afterwards
    plain = method.encoder(x)[-1]
    assert not torch.all(plain * deepest_hidden == 0)  # and the plain encoder is unmasked again


def test_a_coarse_cell_is_masked_only_when_all_its_voxels_are() -> None:
    visible = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    visible[..., :2, :] = False  # top half masked
    visible[..., 2, 0] = False  # one more voxel of the bottom-left cell
    assert downsample_visible(visible, (2, 2)).tolist() == [[[[False, False], [True, True]]]]
    assert downsample_visible(visible, (4, 4)) is visible


def test_blocks_smaller_than_the_deepest_cell_do_not_leak() -> None:
    method = _method(2, block_size=2)  # the deepest cells (4 px) are partly seen
    x = images(2)
    visible = method.sample_mask(x, torch.Generator().manual_seed(0))
    changed = torch.where(visible, x, x - 3 * torch.rand_like(x))
    for a, b in zip(method.encode(x, visible), method.encode(changed, visible), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dims", DIMS)
def test_tokens_get_gradients(dims: int) -> None:
    method = _method(dims)
    method.losses(images(dims), torch.Generator().manual_seed(0))["loss"].backward()
    for token in (method.mask_token, method.feature_token):
        assert token.grad is not None and token.grad.abs().sum() > 0


def test_a_few_steps_on_one_batch_lower_the_loss() -> None:
    torch.manual_seed(0)
    method = _method(2)
    x = images(2, batch=4)
    optimiser = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = method.losses(x, torch.Generator().manual_seed(7))["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("dims", DIMS)
def test_exported_encoder_loads_into_the_finetuning_unet(dims: int, tmp_path: Path) -> None:
    method = registry.create("mim", spatial_dims=dims, in_channels=1, channels=SMALL)
    method.losses(images(dims), torch.Generator().manual_seed(0))["loss"].backward()
    with torch.no_grad():
        for param in method.parameters():
            param.add_(0.1)
    encoder = method.export_encoder()
    assert encoder is method.encoder and isinstance(encoder, UNetEncoder)
    path = save_encoder(encoder, tmp_path / "encoder.pt", extra={"method": "mim"})
    unet = UNet(UNetEncoder(dims, 1, SMALL), 3)
    assert load_encoder(unet.encoder, path) == len(encoder.state_dict())
    for key, value in encoder.state_dict().items():
        assert torch.equal(unet.encoder.state_dict()[key], value)
    assert unet(images(dims)).shape == (2, 3, *[SIZE] * dims)
    assert not any(k.startswith(("decoder", "mask_token", "feature_token")) for k in encoder.state_dict())


def test_presets() -> None:
    small = MIM(3, 1)
    assert (small.mask_ratio, small.block_size, small.normalize_target) == (0.6, small.encoder.required_divisor, False)
    nnssl = MIM(3, 1, preset="nnssl")
    assert (nnssl.mask_ratio, nnssl.block_size) == (0.75, 16) and nnssl.encoder.channels == (32, 64, 128, 256, 320)
    assert nnssl.encoder.required_divisor == 16  # one deepest-map cell per block, as in SparK
    custom = MIM(2, 1, SMALL, preset="nnssl", mask_ratio=0.5, block_size=8)
    assert (custom.mask_ratio, custom.block_size, custom.encoder.channels) == (0.5, 8, SMALL)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"mask_ratio": 0.0}, "mask_ratio"), ({"mask_ratio": 1.0}, "mask_ratio"), ({"block_size": 0}, "block_size")],
)
def test_rejects_bad_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MIM(2, 1, SMALL, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="preset"):
        MIM(2, 1, SMALL, preset="paper")  # type: ignore[arg-type]
