"""Encoder weight files: round trips, checkpoints, and every refusal names the file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from medssl.errors import MedsslError
from medssl.networks import UNetEncoder, build_unet, load_checkpoint_file, load_encoder, save_encoder

SMALL = (4, 8, 16)


class _Custom:
    """A class that weights-only loading refuses to unpickle."""

    def __init__(self) -> None:
        self.payload = 1


def _enc(dims: int = 2, channels: tuple[int, ...] = SMALL, in_channels: int = 1) -> UNetEncoder:
    return UNetEncoder(dims, in_channels, channels, norm="batch")  # batch norm: buffers are counted too


def _assert_equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_round_trip(tmp_path: Path, dims: int) -> None:
    src, dst = _enc(dims), _enc(dims)
    path = save_encoder(src, tmp_path / "sub" / "enc.pt", extra={"method": "simclr", "epochs": 3, "tags": ["a"]})
    assert path.is_file() and not path.with_suffix(".pt.tmp").exists()
    assert load_encoder(dst, path) == len(src.state_dict())
    _assert_equal_weights(src, dst)
    raw = load_checkpoint_file(path)
    assert raw["format"] == "medssl-encoder" and raw["version"] == 1 and raw["encoder"] == "UNetEncoder"
    assert raw["spatial_dims"] == dims and raw["in_channels"] == 1 and raw["channels"] == list(SMALL)
    assert raw["extra"] == {"method": "simclr", "epochs": 3, "tags": ["a"]}


def test_save_refuses_unpicklable_extra(tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match="extra"):
        save_encoder(_enc(), tmp_path / "enc.pt", extra={"obj": _Custom()})
    assert not list(tmp_path.iterdir())


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "enc.pt"
    save_encoder(_enc(), path)
    second = _enc()
    save_encoder(second, path)
    dst = _enc()
    load_encoder(dst, path)
    _assert_equal_weights(second, dst)
    assert [p.name for p in tmp_path.iterdir()] == ["enc.pt"]


def test_load_from_lightning_checkpoint(tmp_path: Path) -> None:
    model = build_unet(2, 1, 2, channels=SMALL)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict": sd, "hyper_parameters": {"lr": 0.01}}, path)
    dst = UNetEncoder(2, 1, SMALL)
    assert load_encoder(dst, path) == len(dst.state_dict())
    _assert_equal_weights(model.encoder, dst)


@pytest.mark.parametrize("prefix", ["", "encoder.", "module."])
def test_load_plain_state_dicts(tmp_path: Path, prefix: str) -> None:
    src = _enc()
    path = tmp_path / "plain.pt"
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
    dst = _enc()
    assert load_encoder(dst, path) == len(src.state_dict())
    _assert_equal_weights(src, dst)


def test_load_whole_unet_state_dict(tmp_path: Path) -> None:
    model = build_unet(3, 1, 2, channels=SMALL)
    path = tmp_path / "unet.pt"
    torch.save(model.state_dict(), path)  # decoder/head tensors are allowed next to "encoder.*"
    dst = UNetEncoder(3, 1, SMALL)
    load_encoder(dst, path)
    _assert_equal_weights(model.encoder, dst)


def _refusal(encoder: torch.nn.Module, path: Path, match: str) -> str:
    with pytest.raises(MedsslError, match=match) as info:
        load_encoder(encoder, path)
    assert path.name in str(info.value)
    return str(info.value)


def test_refuses_shape_mismatch(tmp_path: Path) -> None:
    path = save_encoder(_enc(channels=(4, 8, 32)), tmp_path / "wide.pt")
    msg = _refusal(_enc(), path, "another shape")
    assert "stages.2" in msg


def test_refuses_other_dims_or_channels(tmp_path: Path) -> None:
    _refusal(_enc(dims=2), save_encoder(_enc(dims=3), tmp_path / "enc3d.pt"), "spatial_dims=3")
    _refusal(_enc(), save_encoder(_enc(in_channels=2), tmp_path / "enc2ch.pt"), "in_channels=2")


def test_refuses_another_architecture(tmp_path: Path) -> None:
    from medssl.networks.resnet import ResNetEncoder

    resnet = ResNetEncoder(2, 1, depths=(1, 1), widths=(4, 8), block="basic", output_stride=8)
    msg = _refusal(_enc(), save_encoder(resnet, tmp_path / "resnet.pt"), "holds a ResNetEncoder")
    assert "UNetEncoder" in msg


def test_refuses_missing_tensors(tmp_path: Path) -> None:
    path = save_encoder(_enc(channels=(4, 8)), tmp_path / "shallow.pt")
    msg = _refusal(_enc(), path, "lacks")
    assert "stages.2" in msg


def test_refuses_extra_encoder_tensors(tmp_path: Path) -> None:
    path = save_encoder(_enc(channels=(4, 8, 16, 16)), tmp_path / "deep.pt")
    msg = _refusal(_enc(), path, "the model lacks")
    assert "stages.3" in msg


def test_refuses_extra_tensors_under_encoder_prefix(tmp_path: Path) -> None:
    sd = {f"model.encoder.{k}": v for k, v in _enc(channels=(4, 8, 16, 16)).state_dict().items()}
    path = tmp_path / "deep.ckpt"
    torch.save({"state_dict": sd}, path)
    _refusal(_enc(), path, "the model lacks")


def test_refuses_no_matching_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"backbone.layer1.weight": torch.zeros(3)}, path)
    _refusal(_enc(), path, "no tensor")


def test_refuses_dict_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3}, path)
    _refusal(_enc(), path, "no state dict")


def test_refuses_missing_file(tmp_path: Path) -> None:
    _refusal(_enc(), tmp_path / "nope.pt", "not found")


def test_refuses_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n")
    _refusal(_enc(), path, "not a torch checkpoint")


@pytest.mark.parametrize("cut", ["truncate", "garbage", "empty"])
def test_refuses_corrupt_bytes(tmp_path: Path, cut: str) -> None:
    good = save_encoder(_enc(), tmp_path / "good.pt").read_bytes()
    path = tmp_path / f"{cut}.pt"
    data = {"truncate": good[: len(good) // 2], "garbage": bytes(range(256)) * 8, "empty": b""}[cut]
    path.write_bytes(data)
    _refusal(_enc(), path, "cannot read")


def test_refuses_zip_that_is_not_torch(tmp_path: Path) -> None:
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    _refusal(_enc(), path, "cannot read")


def test_refuses_pickled_custom_object(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _enc().state_dict(), "obj": _Custom()}, path)
    msg = _refusal(_enc(), path, "pickled code or custom objects")
    assert "_Custom" in msg


def test_refuses_plain_pickle(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    _refusal(_enc(), path, "cannot read|pickled code")


def test_refuses_non_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    _refusal(_enc(), path, "expected a dict")


def test_refuses_newer_format_version(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({"format": "medssl-encoder", "version": 99, "state_dict": _enc().state_dict()}, path)
    _refusal(_enc(), path, "version 99")


def test_load_checkpoint_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_text("{}")
    with pytest.raises(MedsslError, match=r"x\.ckpt"):
        load_checkpoint_file(path)


def test_no_match_hints_at_other_prefixes(tmp_path: Path) -> None:
    sd = _enc().state_dict()
    path = tmp_path / "dino.ckpt"
    torch.save({"state_dict": {**{f"student.net.{k}": v for k, v in sd.items()}}}, path)
    _refusal(_enc(), path, "under 'student.net.'")
