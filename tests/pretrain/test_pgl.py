"""PGL: the paper's augmentation, dense heads, presets, the loss, the online-only gradient, EMA and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from medssl.cli import app
from medssl.configs import preset_path
from medssl.data.views import overlap_fraction
from medssl.errors import MedsslError
from medssl.networks import ResNetEncoder, UNetEncoder, load_encoder
from medssl.networks.heads import ConvProjectionHead
from medssl.pretrain import registry
from medssl.pretrain.alignment import align_features, cs_align
from medssl.pretrain.byol import cosine_momentum
from medssl.pretrain.losses import byol_loss
from medssl.pretrain.pgl import PGL, PGLViews, _generator, local_consistency_loss
from tests.pretrain.conftest import SIZE, SMALL, images


def test_views_are_the_papers_augmentation() -> None:
    gen = _generator(PGLViews(), 3, (SIZE,) * 3)
    assert gen.scale == (1.1, 1.4) and gen.min_overlap == 0.1 and gen.rot90_p == 0.0
    assert tuple(gen.flip_p) == (0.5, 0.5, 0.5)
    assert (gen.noise, gen.blur, gen.contrast, gen.gamma) == (
        (0.1, 0.0, 0.1),
        (0.2, 0.5, 1.0),
        (0.5, 0.75, 1.25),
        (0.5, 0.7, 1.5),
    )
    x = images(3, batch=8)
    v1, v2, r1, r2 = PGLViews()(x, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape
    for a, b in zip(r1, r2, strict=True):
        assert overlap_fraction(a, b) >= 0.1 and a.rot90_k == b.rot90_k == 0
        assert all(1.1 * SIZE <= z <= 1.4 * SIZE for z in (*a.crop_size, *b.crop_size))
    assert any(any(r.flips) for r in r1) and any(r.intensity for r in r1 + r2)


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_head_is_dense_with_batch_norm(dims: int) -> None:
    head = ConvProjectionHead(dims, 8, 16, 4)
    assert isinstance(head[1], nn.modules.batchnorm._BatchNorm) and head[0].bias is None
    x = torch.randn(2, 8, *[3] * dims)
    out = head(x)
    assert out.shape == (2, 4, *[3] * dims)  # no global pooling
    # Per position: moving a voxel moves its output (in eval mode, where the norm is a fixed affine map).
    head.eval()
    torch.testing.assert_close(head(x.flip(-1)), head(x).flip(-1))
    head.train()
    head(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with pytest.raises(ValueError, match="hidden_dim"):
        ConvProjectionHead(dims, 8, 0, 4)


def test_presets() -> None:
    small = PGL(3, 1, SMALL)
    assert isinstance(small.encoder, UNetEncoder) and small.encoder.channels == SMALL
    assert (small.projector[0].out_channels, small.projector[3].out_channels) == (1024, 256)
    paper = PGL(3, 1, SMALL, preset="paper")  # the preset's ResNet-50 replaces the U-Net widths
    enc = paper.encoder
    assert isinstance(enc, ResNetEncoder) and enc.depths == (3, 4, 6, 3) and enc.block == "bottleneck"
    assert enc.axis_strides[-1] == (16, 16, 8)  # medssl's (x, y, z): the slice axis, last, strided least
    assert PGL(2, 1, SMALL, preset="paper").encoder.axis_strides[-1] == (16, 16)
    assert isinstance(paper.target_encoder, ResNetEncoder)
    for head in (paper.projector, paper.predictor):
        assert isinstance(head, ConvProjectionHead) and (head.hidden_dim, head.out_dim) == (4096, 256)
    assert PGL(2, 1, SMALL, hidden_dim=64, projection_dim=8).predictor.out_dim == 8
    with pytest.raises(ValueError, match="preset"):
        PGL(2, 1, preset="large")


def test_the_paper_preset_strides_its_patch_to_a_cube() -> None:
    """The preset file's patch and the paper preset's encoder agree: 64 slices on z, strided 8, and 128 on x and
    y, strided 16, give an 8x8x8 deepest map (a patch or stride on the wrong axis gives 4x8x16)."""
    patch = yaml.safe_load(preset_path("pretrain-pgl-paper").read_text())["patch_size"]
    strides = PGL(3, 1, SMALL, preset="paper").encoder.axis_strides[-1]
    assert [size // stride for size, stride in zip(patch, strides, strict=True)] == [8, 8, 8]


def test_paper_preset_trains_in_2d() -> None:
    method = PGL(2, 1, preset="paper")
    assert isinstance(method.encoder, ResNetEncoder) and method.encoder.axis_strides[-1] == (16, 16)
    losses = method.losses(torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0))
    assert torch.isfinite(losses["loss"])


@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_flow_only_through_the_online_path(dims: int) -> None:
    method = PGL(dims, 1, SMALL, global_weight=0.5)
    target = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    for p in target:
        p.requires_grad_(True)  # even then nothing may reach them: the target runs without autograd
    losses = method.losses(images(dims), torch.Generator().manual_seed(1))
    assert set(losses) == {"loss", "local", "global"} and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert all(p.grad is None for p in target)
    for module in (method.encoder, method.projector, method.predictor):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_loss_is_the_symmetrised_local_loss() -> None:
    views = PGLViews(intensity=False)
    method = PGL(2, 1, SMALL, views=views, global_weight=0.25)
    x = images(2)
    losses = method.losses(x, torch.Generator().manual_seed(3))
    v1, v2, r1, r2 = views(x, torch.Generator().manual_seed(3))
    online = method.encoder(torch.cat((v1, v2)))[-1]
    target = method.target_encoder(torch.cat((v1, v2)))[-1]
    regions = cs_align(r1, r2, online.shape[2:])

    def aligned(maps: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            (align_features(maps[:2], r1, *regions.view(0)), align_features(maps[2:], r2, *regions.view(1)))
        )

    p = method.predictor(method.projector(aligned(online)))
    z = method.target_projector(aligned(target))
    local = (byol_loss(p[:2], z[2:]) + byol_loss(p[2:], z[:2])) / 2
    pooled_p = method.predictor(method.projector(online)).mean((2, 3))
    pooled_z = method.target_projector(target).mean((2, 3))
    global_ = (byol_loss(pooled_p[:2], pooled_z[2:]) + byol_loss(pooled_p[2:], pooled_z[:2])) / 2
    torch.testing.assert_close(losses["local"], local.detach())
    torch.testing.assert_close(losses["global"], global_.detach())
    torch.testing.assert_close(losses["loss"], local + 0.25 * global_)


def test_align_is_the_alignment_a_step_runs() -> None:
    """``PGL.align`` (what benchmarks/pgl_cost.py times): CSAlign of the records, then FlipAlign and RoIAlign with the
    method's sampling ratio of each view's half of every map onto the map's size; ``losses`` aligns through it, once,
    the online and the target maps."""
    views = PGLViews(intensity=False)
    method = PGL(2, 1, SMALL, views=views, sampling_ratio=1)
    x = images(2)
    v1, v2, r1, r2 = views(x, torch.Generator().manual_seed(3))
    maps = (torch.randn(4, 3, 5, 6), torch.randn(4, 2, 5, 6))
    aligned, valid = method.align(maps, r1, r2)
    regions = cs_align(r1, r2, (5, 6))
    for got, m in zip(aligned, maps, strict=True):
        first = align_features(m[:2], r1, *regions.view(0), (5, 6), sampling_ratio=1)
        second = align_features(m[2:], r2, *regions.view(1), (5, 6), sampling_ratio=1)
        torch.testing.assert_close(got, torch.cat((first, second)), rtol=0, atol=0)
    assert torch.equal(valid, regions.valid)

    calls: list[tuple[torch.Size, ...]] = []
    real = method.align

    def spy(maps: tuple[torch.Tensor, ...], one: list, two: list) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:  # type: ignore[type-arg]
        calls.append(tuple(m.shape for m in maps))
        return real(maps, one, two)

    method.align = spy  # type: ignore[method-assign]
    method.losses(x, torch.Generator().manual_seed(3))
    deepest = method.encoder(torch.cat((v1, v2)))[-1].shape
    assert calls == [(deepest, deepest)]


def test_local_loss_leaves_out_samples_without_overlap() -> None:
    p, z = torch.randn(3, 4, 2, 2, requires_grad=True), torch.randn(3, 4, 2, 2)
    valid = torch.tensor([True, False, True])
    torch.testing.assert_close(local_consistency_loss(p, z, valid), byol_loss(p[[0, 2]], z[[0, 2]]))
    torch.testing.assert_close(local_consistency_loss(p, z), byol_loss(p, z))
    none = local_consistency_loss(p, z, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_after_step_is_one_ema_update() -> None:
    method = PGL(2, 1, SMALL)
    with torch.no_grad():
        for p in (*method.encoder.parameters(), *method.projector.parameters()):
            p.add_(torch.randn_like(p))
    online = [p.detach().clone() for p in (*method.encoder.parameters(), *method.projector.parameters())]
    target = [p.clone() for p in (*method.target_encoder.parameters(), *method.target_projector.parameters())]
    method.after_step(30, 100)
    m = cosine_momentum(30, 100)
    updated = [*method.target_encoder.parameters(), *method.target_projector.parameters()]
    for new, t, o in zip(updated, target, online, strict=True):
        torch.testing.assert_close(new, m * t + (1 - m) * o)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="global_weight"):
        PGL(2, 1, SMALL, global_weight=-1.0)
    with pytest.raises(ValueError, match="sampling_ratio"):
        PGL(2, 1, SMALL, sampling_ratio=0)
    with pytest.raises(ValueError, match="min_overlap"):
        PGLViews(min_overlap=0.0)


def _pretrain(tmp_path: Path, data: Path, *extra: str) -> tuple[object, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"channels": [4, 8], "batch_size": 2, "checkpoint_interval": 2}))
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--out", str(run), "--method", "pgl", "--max-steps", "2"]
    result = CliRunner().invoke(app, [*args, "--config", str(config), "--quiet", "--accelerator", "cpu", *extra])
    return result, run


@pytest.fixture
def pngs(tmp_path: Path) -> Path:
    """Four unlabelled 32 x 32 greyscale PNGs."""
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(data / f"img{i}.png")
    return data


def test_cli_2d(pngs: Path, tmp_path: Path) -> None:
    result, run = _pretrain(tmp_path, pngs, "--preset", "small")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["method"] == "pgl" and cfg["method_options"] == {"preset": "small"}
    assert load_encoder(UNetEncoder(2, 1, (4, 8)), run / "encoder.pt") > 0


def test_cli_3d(msd_3d: Path, tmp_path: Path) -> None:
    result, run = _pretrain(tmp_path, msd_3d, "--dims", "3")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert load_encoder(UNetEncoder(3, 1, (4, 8)), run / "encoder.pt") > 0


def test_cli_unknown_preset_is_a_clear_error(pngs: Path, tmp_path: Path) -> None:
    result, _ = _pretrain(tmp_path, pngs, "--preset", "huge")
    error = result.exception  # type: ignore[attr-defined]
    assert isinstance(
        error, MedsslError
    ) and "preset of pretraining method 'pgl' must be one of 'small', 'paper', not 'huge'" in str(error)


def test_registered() -> None:
    assert "pgl" in registry.names() and registry.get("pgl") is PGL
