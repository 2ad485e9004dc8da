"""medssl encoder -> nnU-Net v2 ``-pretrained_weights``: keys and shapes equal PlainConvUNet's (names built here from
the published layout of dynamic-network-architectures 0.4.4, independently of the export code), tensors land in the
right key, mismatches are refused. With ``dynamic_network_architectures`` and ``nnunetv2`` importable, the file is
also loaded into a real PlainConvUNet by nnU-Net's own ``load_pretrained_weights``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from medssl.errors import MedsslError
from medssl.export.nnunet import export_nnunet_weights, medssl_pretrain_options
from medssl.networks.encoders import UNetEncoder
from medssl.networks.weights import save_encoder


def _plans(d: int, feats: list[int], tf: list[int] | None = None) -> dict[str, Any]:
    n = len(feats)
    kwargs = {
        "n_stages": n, "features_per_stage": feats, "conv_op": f"torch.nn.modules.conv.Conv{d}d",
        "kernel_sizes": [[3] * d] * n, "strides": [[1] * d] + [[2] * d] * (n - 1), "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{d}d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }  # fmt: skip
    arch = {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": kwargs, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}  # fmt: skip
    config = {"patch_size": [32, 16, 8][:d], "spacing": [1.0, 2.0, 3.0][:d], "architecture": arch}
    return {
        "transpose_forward": tf or [0, 1, 2],
        "foreground_intensity_properties_per_channel": {"0": {}},
        "configurations": {"cfg": config, "child": {"inherits_from": "cfg", "batch_size": 4}},
    }


def _expected(d: int, feats: list[int]) -> dict[str, tuple[int, ...]]:
    """PlainConvUNet's state-dict keys and shapes without seg_layers, written out from the published layout."""
    k, out = (3,) * d, {}

    def unit(prefix: str, cin: int, cout: int) -> None:
        for name in ("conv", "all_modules.0"):
            out[f"{prefix}{name}.weight"], out[f"{prefix}{name}.bias"] = (cout, cin, *k), (cout,)
        for name in ("norm", "all_modules.1"):
            out[f"{prefix}{name}.weight"] = out[f"{prefix}{name}.bias"] = (cout,)

    for root in ("encoder.", "decoder.encoder."):
        cin = 1
        for s, f in enumerate(feats):
            unit(f"{root}stages.{s}.0.convs.0.", cin, f)
            unit(f"{root}stages.{s}.0.convs.1.", f, f)
            cin = f
    for i in range(len(feats) - 1):
        below, skip = feats[-(i + 1)], feats[-(i + 2)]
        out[f"decoder.transpconvs.{i}.weight"], out[f"decoder.transpconvs.{i}.bias"] = (below, skip, *(2,) * d), (skip,)
        unit(f"decoder.stages.{i}.convs.0.", 2 * skip, skip)
        unit(f"decoder.stages.{i}.convs.1.", skip, skip)
    return out


def _encoder(tmp_path: Path, d: int, feats: list[int]) -> tuple[UNetEncoder, Path]:
    torch.manual_seed(0)
    enc = UNetEncoder(d, 1, feats)
    for p in enc.parameters():
        if p.ndim == 1:
            torch.nn.init.normal_(p)
    return enc, save_encoder(enc, tmp_path / "run" / "encoder.pt")


@pytest.mark.parametrize("d", [2, 3])
def test_keys_shapes_and_values_land_where_nnunet_expects_them(tmp_path: Path, d: int) -> None:
    feats = [4, 8, 16]
    enc, _ = _encoder(tmp_path, d, feats)
    out = export_nnunet_weights(tmp_path / "run", _plans(d, feats), "child", tmp_path / "w.pth")
    weights = torch.load(out, weights_only=True)["network_weights"]
    flip = (0, 1, 4, 3, 2) if d == 3 else (0, 1, 2, 3)  # volumes: nnU-Net's readers reverse the index order
    assert {key: tuple(v.shape) for key, v in weights.items()} == _expected(d, feats)
    for s in range(len(feats)):
        for u in range(2):
            ours, theirs = enc.stages[s][u], f"encoder.stages.{s}.0.convs.{u}."
            for name in ("conv", "all_modules.0"):
                torch.testing.assert_close(weights[f"{theirs}{name}.weight"], ours.conv.weight.detach().permute(flip))
                assert not weights[f"{theirs}{name}.bias"].any()  # exact before an instance norm
            torch.testing.assert_close(weights[f"{theirs}norm.weight"], ours.norm.weight.detach())
            torch.testing.assert_close(weights[f"decoder.{theirs}all_modules.1.bias"], ours.norm.bias.detach())


def test_kernels_follow_transpose_forward(tmp_path: Path) -> None:
    """nnU-Net axis j is medssl axis 2 - transpose_forward[j]: (0, 2, 1) here (its readers reverse the file's index
    order)."""
    enc, path = _encoder(tmp_path, 3, [4, 8])
    weights = torch.load(export_nnunet_weights(path, _plans(3, [4, 8], [2, 0, 1]), "cfg", tmp_path / "w.pth"))
    got = weights["network_weights"]["encoder.stages.1.0.convs.0.conv.weight"]
    torch.testing.assert_close(got, enc.stages[1][0].conv.weight.detach().permute(0, 1, 2, 4, 3))
    options = medssl_pretrain_options(_plans(3, [4, 8], [2, 0, 1]), "cfg")
    assert options == {"channels": [4, 8], "patch_size": [32, 8, 16], "target_spacing": [1.0, 3.0, 2.0]}


def test_mismatches_are_refused_in_one_line(tmp_path: Path) -> None:
    _, path = _encoder(tmp_path, 3, [4, 8, 16])
    with pytest.raises(MedsslError, match=r"--set channels=\[4,8,32\]") as info:
        export_nnunet_weights(path, _plans(3, [4, 8, 32]), "cfg", tmp_path / "w.pth")
    assert "\n" not in str(info.value)
    aniso = _plans(3, [4, 8, 16])
    aniso["configurations"]["cfg"]["architecture"]["arch_kwargs"]["kernel_sizes"][0] = [1, 3, 3]
    aniso["configurations"]["cfg"]["architecture"]["arch_kwargs"]["strides"][1] = [1, 2, 2]
    with pytest.raises(MedsslError, match="kernel_sizes .*strides"):
        export_nnunet_weights(path, aniso, "cfg", tmp_path / "w.pth")
    relu = copy.deepcopy(_plans(3, [4, 8, 16]))
    relu["configurations"]["cfg"]["architecture"]["network_class_name"] = "x.ResidualEncoderUNet"
    with pytest.raises(MedsslError, match="only PlainConvUNet"):
        medssl_pretrain_options(relu, "cfg")
    with pytest.raises(MedsslError, match="2D encoder"):
        export_nnunet_weights(_encoder(tmp_path, 2, [4, 8, 16])[1], _plans(3, [4, 8, 16]), "cfg", tmp_path / "w.pth")


def test_a_real_plain_conv_unet_loads_it_with_nnunets_own_loader(tmp_path: Path) -> None:
    """Runs only where nnU-Net's packages import (not in medssl's environment: install them to run it)."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    loader = pytest.importorskip("nnunetv2.run.load_pretrained_weights")
    enc, path = _encoder(tmp_path, 3, [4, 8, 16])
    out = export_nnunet_weights(path, _plans(3, [4, 8, 16], [2, 0, 1]), "cfg", tmp_path / "w.pth")
    net = unet.PlainConvUNet(
        1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 2, 2, 2, True, torch.nn.InstanceNorm3d,
        {"eps": 1e-5, "affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
    )  # fmt: skip
    loader.load_pretrained_weights(net, str(out))
    x = torch.randn(2, 1, 8, 12, 16)
    perm = (0, 1, 2, 4, 3)  # nnU-Net axes (i, k, j): (k, j, i) reordered by transpose_forward [2, 0, 1]
    with torch.no_grad():
        for ours, theirs in zip(enc.eval()(x), net.eval().encoder(x.permute(*perm)), strict=True):
            torch.testing.assert_close(ours.permute(*perm), theirs, atol=1e-4, rtol=1e-4)


def _cli(*args: object) -> Any:
    from typer.testing import CliRunner

    from medssl.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def _refused(result: Any, words: str) -> bool:
    """A user mistake: one MedsslError (the CLI's main prints it in one line), naming ``words``."""
    return isinstance(result.exception, MedsslError) and words in str(result.exception)


def test_cli_export_format_nnunet_writes_the_file_nnunet_loads(tmp_path: Path) -> None:
    import json

    _, path = _encoder(tmp_path, 3, [4, 8, 16])
    (tmp_path / "plans.json").write_text(json.dumps(_plans(3, [4, 8, 16])))
    args = ["export", path.parent, "--format", "nnunet", "--plans", tmp_path / "plans.json", "--out"]
    result = _cli(*args, tmp_path / "w.pth", "--configuration", "child")  # the run folder; an inherited config
    assert result.exit_code == 0, result.output
    assert "-pretrained_weights" in result.output
    weights = torch.load(tmp_path / "w.pth", weights_only=True)["network_weights"]
    assert {k: tuple(v.shape) for k, v in weights.items()} == _expected(3, [4, 8, 16])
    again = _cli(*args, tmp_path / "w.pth", "--configuration", "child")
    assert _refused(again, "--overwrite")
    with pytest.raises(MedsslError, match="--overwrite"):  # the API refuses too, not only the CLI
        export_nnunet_weights(path, tmp_path / "plans.json", "child", tmp_path / "w.pth")
    assert export_nnunet_weights(path, tmp_path / "plans.json", "child", tmp_path / "w.pth", overwrite=True).is_file()
    no_plans = _cli("export", path, "--format", "nnunet", "--out", tmp_path / "x.pth", "--configuration", "cfg")
    assert _refused(no_plans, "--plans")
    onnx_with_plans = _cli("export", path.parent, "--out", tmp_path / "m.onnx", "--plans", tmp_path / "plans.json")
    assert _refused(onnx_with_plans, "--format nnunet")
    wrong = _cli(*args, tmp_path / "y.pth", "--configuration", "3d_lowres")
    assert _refused(wrong, "no configuration '3d_lowres'")
    assert not (tmp_path / "x.pth").exists() and not (tmp_path / "y.pth").exists()
