"""``medssl export`` to ONNX and ``predict --backend onnx`` (issue 23): ONNX Runtime's logits equal torch's within
1e-4 at other batch and spatial sizes than the traced one, the CLI writes the same masks with the input's geometry
through either backend, the plan travels in the file, and every user mistake is one ``MedsslError``.

Tiny runs (a 2-scale U-Net, 2 steps) built once per module; the whole file takes well under a minute on one thread.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medssl import api
from medssl.cli import app
from medssl.errors import MedsslError
from medssl.export.onnx import PLAN_KEY, OnnxNetwork, export_onnx, load_onnx_model, network_to_onnx
from medssl.networks.dynamic_head import DoDNet
from medssl.networks.encoders import UNetEncoder
from medssl.networks.mrnet import MRNet
from medssl.networks.unet import UNet
from medssl.segment.predict import load_model, load_trained_model
from tests.conftest import MSD_AFFINE as AFFINE
from tests.conftest import TINY, write_msd_3d

pytest.importorskip("onnx")  # the `onnx` extra (in `dev`); medssl.export.onnx itself imports without it
pytest.importorskip("onnxruntime")


def _cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", "NO_COLOR": "1"})


def _disc(shape: tuple[int, ...], rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    centre = [rng.uniform(s * 0.35, s * 0.65) for s in shape]
    radius = min(shape) * 0.25 * scale
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2  # type: ignore[no-any-return]


def _pictures(root: Path, subs: dict[str, float], n: int = 6) -> Path:
    """``images/`` PNGs of a bright noisy disc, one mask folder per entry of ``subs`` (disc radius scale)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        disc = _disc((32, 32), np.random.default_rng(i))
        img = np.clip(60 + 120 * disc + rng.normal(0, 15, disc.shape), 0, 255).astype(np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / f"case{i:02d}.png")
        for sub, scale in subs.items():
            (root / sub).mkdir(exist_ok=True)
            mask = _disc((32, 32), np.random.default_rng(i), scale).astype(np.uint8) * 255
            Image.fromarray(mask).save(root / sub / f"case{i:02d}.png")
    return root


def _tiny_run(data: Path, run: Path) -> tuple[Path, Path]:
    """A 2-step fine-tuning run on one thread (a module fixture runs before the per-test one-thread fixture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        api.finetune(data, run, max_steps=2, quiet=True, accelerator="cpu", seed=0, **TINY)
    finally:
        torch.set_num_threads(before)
    return data, run


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, fine-tuning run) of 32x32 PNG discs."""
    root = tmp_path_factory.mktemp("onnx2d")
    return _tiny_run(_pictures(root / "data", {"masks": 1.0}), root / "run")


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, fine-tuning run) of 16^3 oblique NIfTI volumes with two labels."""
    root = tmp_path_factory.mktemp("onnx3d")
    return _tiny_run(write_msd_3d(root / "data", 4), root / "run")


@pytest.mark.parametrize(("which", "shape"), [("run_2d", (3, 1, 48, 24)), ("run_3d", (2, 1, 24, 16, 8))])
def test_onnx_runtime_logits_equal_torch_at_other_batch_and_spatial_sizes(
    which: str, shape: tuple[int, ...], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _, run = request.getfixturevalue(which)
    torch_model = load_trained_model(run)
    assert isinstance(torch_model.network, UNet)  # 3x3 convolutions, a pooling and skip connections
    assert list(shape[2:]) != list(torch_model.plan.patch_size)  # not the size traced at export
    result = export_onnx(run, tmp_path / "model.onnx")
    assert result.path.is_file() and result.system == "supervised" and result.max_difference <= 1e-4
    onnx_model = load_onnx_model(result.path)
    x = torch.randn(*shape) * 3
    with torch.no_grad():
        want = torch_model.network(x)
    got = onnx_model.network(x)
    assert got.shape == want.shape == (shape[0], torch_model.plan.out_channels, *shape[2:])
    assert float(want.std()) > 1e-3  # not a constant output that any graph would reproduce
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    # the receptive field reaches beyond one voxel: a change at one voxel moves its neighbours' logits too
    y = x.clone()
    y[(0, 0, *(s // 2 for s in shape[2:]))] += 10
    near = (0, slice(None), *(s // 2 + 1 for s in shape[2:]))
    assert not torch.allclose(onnx_model.network(y)[near], got[near])


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _png_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_cli_predict_onnx_writes_the_same_masks_as_torch(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = run_2d
    model = tmp_path / "model.onnx"
    exported = _cli("export", run, "--out", model)
    assert exported.exit_code == 0, exported.output
    assert "wrote" in exported.output and model.is_file()
    images = data / "images"
    masks = {}
    for name, args in {
        "torch": ("--model", run, "--backend", "torch"),
        "onnx": ("--model", model, "--backend", "onnx"),
        "default": ("--model", model),  # a .onnx file runs with onnx without being told
        "run-in-memory": ("--model", run, "--backend", "onnx"),  # a run folder exported on the fly
    }.items():
        result = _cli("predict", *args, "--input", images, "--out", tmp_path / name, "--probabilities")
        assert result.exit_code == 0, (name, result.output, result.exception)
        masks[name] = _pngs(tmp_path / name)
    assert len(masks["torch"]) == 12  # 6 masks + 6 probability maps
    for name in ("onnx", "default", "run-in-memory"):
        assert masks[name] == masks["torch"], name
    first = np.asarray(Image.open(tmp_path / "onnx" / "case00.png"))
    assert first.shape == (32, 32) and set(np.unique(first)) <= {0, 255}


def test_cli_predict_onnx_3d_keeps_the_nifti_geometry(run_3d: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = run_3d
    model = tmp_path / "model.onnx"
    assert _cli("export", run, "--out", model).exit_code == 0
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(data / "imagesTr" / "vol_000.nii.gz", inputs / "same.nii.gz")
    # another grid: 20 x 14 x 12 voxels of 1 x 1.25 x 1.75 mm, another rotation and origin, resampled to the plan's
    other = np.diag([1.0, 1.25, 1.75, 1.0]) @ np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    other[:3, 3] = [30, -4, 12]
    volume = np.random.default_rng(3).normal(100, 40, (20, 14, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, other), inputs / "other.nii.gz")
    out = {}
    for backend, source in (("torch", run), ("onnx", model)):
        result = _cli(
            "predict", "--model", source, "--backend", backend, "--input", inputs, "--out", tmp_path / backend
        )
        assert result.exit_code == 0, (backend, result.output, result.exception)
        out[backend] = {p.name: nib.load(p) for p in (tmp_path / backend).glob("*.nii.gz")}
    assert sorted(out["onnx"]) == sorted(out["torch"]) == ["other.nii.gz", "same.nii.gz"]
    for name, affine, shape in (("same.nii.gz", AFFINE, (16, 16, 16)), ("other.nii.gz", other, (20, 14, 12))):
        onnx_labels, torch_labels = np.asarray(out["onnx"][name].dataobj), np.asarray(out["torch"][name].dataobj)
        np.testing.assert_array_equal(onnx_labels, torch_labels, err_msg=name)
        np.testing.assert_allclose(out["onnx"][name].affine, affine, atol=1e-5)  # spacing, origin, direction
        assert onnx_labels.shape == shape and set(np.unique(onnx_labels)) <= {0, 1, 2}
    assert len(np.unique(np.asarray(out["onnx"]["same.nii.gz"].dataobj))) > 1  # not an empty prediction
    assert load_onnx_model(model).plan == load_trained_model(run).plan  # target spacing, normalisation, classes


def test_the_plan_travels_in_the_file(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = run_2d
    copy = tmp_path / "run-copy"
    shutil.copytree(run, copy)
    api.predict(copy, data / "images", tmp_path / "torch", quiet=True)
    model = export_onnx(copy, tmp_path / "elsewhere" / "model.onnx").path
    shutil.rmtree(copy)  # the run folder is gone: the .onnx alone predicts
    api.predict(model, data / "images", tmp_path / "onnx", quiet=True)
    assert _pngs(tmp_path / "onnx") == _pngs(tmp_path / "torch")
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta[PLAN_KEY]) == json.loads((run / "plan.json").read_text())
    assert meta["medssl.system"] == "supervised" and meta["medssl.data"] == str(data)
    loaded = load_onnx_model(model)
    assert loaded.plan == load_trained_model(run).plan and loaded.data == str(data)


def test_missing_onnxruntime_is_one_error_naming_the_install(
    run_2d: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run = run_2d
    model = export_onnx(run, tmp_path / "model.onnx").path
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    exported = _cli("export", run, "--out", tmp_path / "again.onnx")
    assert isinstance(exported.exception, MedsslError), exported.output
    assert "pip install onnx onnxruntime" in str(exported.exception)
    assert not (tmp_path / "again.onnx").exists()
    for source in (model, run):
        predicted = _cli("predict", "--model", source, "--backend", "onnx", "--input", data / "images",
                         "--out", tmp_path / "pred")  # fmt: skip
        assert isinstance(predicted.exception, MedsslError) and "onnxruntime" in str(predicted.exception)
        assert not (tmp_path / "pred").exists()


def test_backend_mistakes_are_one_error(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = run_2d
    model = export_onnx(run, tmp_path / "model.onnx").path
    args = ("--input", data / "images", "--out", tmp_path / "pred")
    torch_on_onnx = _cli("predict", "--model", model, "--backend", "torch", *args)
    assert isinstance(torch_on_onnx.exception, MedsslError) and "--backend onnx" in str(torch_on_onnx.exception)
    unknown = _cli("predict", "--model", run, "--backend", "tensorrt", *args)
    assert isinstance(unknown.exception, MedsslError) and "torch or onnx" in str(unknown.exception)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    junk = _cli("predict", "--model", tmp_path / "junk.onnx", *args)
    assert isinstance(junk.exception, MedsslError) and "not a valid ONNX model" in str(junk.exception)
    missing = _cli("predict", "--model", tmp_path / "none.onnx", *args)
    assert isinstance(missing.exception, MedsslError) and "does not exist" in str(missing.exception)
    assert not (tmp_path / "pred").exists()
    with pytest.raises(MedsslError, match="torch or onnx"):
        load_model(run, "tensorrt")


def test_export_destination_mistakes_are_one_error(run_2d: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = run_2d
    model = tmp_path / "model.onnx"
    assert _cli("export", run, "--out", model).exit_code == 0
    first = model.read_bytes()
    cases = {
        "exists; pass --overwrite": ("--out", model),
        "must name a .onnx file": ("--out", tmp_path / "model.pt"),
        "lies inside the input": ("--out", run / "model.onnx"),
        "--format must be one of onnx": ("--out", tmp_path / "m2.onnx", "--format", "tflite"),
    }
    for words, args in cases.items():
        result = _cli("export", run, *args)
        assert isinstance(result.exception, MedsslError) and words in str(result.exception), (words, result.output)
    assert not (run / "model.onnx").exists() and not (tmp_path / "model.pt").exists()
    other = tmp_path / "other.onnx"
    other.write_bytes(b"someone else's file")
    refused = _cli("export", run, "--out", other, "--overwrite")
    assert isinstance(refused.exception, MedsslError) and "not a medssl ONNX export" in str(refused.exception)
    assert other.read_bytes() == b"someone else's file"
    replaced = _cli("export", run, "--out", model, "--overwrite")  # an earlier export is replaced
    assert replaced.exit_code == 0, replaced.output
    assert model.read_bytes() == first and not list(tmp_path.glob(".*partial"))
    not_a_run = _cli("export", tmp_path, "--out", tmp_path.parent / "x.onnx")
    assert isinstance(not_a_run.exception, MedsslError) and "plan.json" in str(not_a_run.exception)
    (tmp_path / "a-file").write_text("")
    unwritable = _cli("export", run, "--out", tmp_path / "a-file" / "model.onnx")
    assert isinstance(unwritable.exception, MedsslError) and "cannot write" in str(unwritable.exception)


def test_an_export_that_does_not_reproduce_torch_writes_nothing(
    run_2d: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, run = run_2d
    forward = OnnxNetwork.forward
    monkeypatch.setattr(OnnxNetwork, "forward", lambda self, x: forward(self, x) + 1e-3)  # a graph 1e-3 off
    with pytest.raises(MedsslError, match="does not reproduce its logits.*nothing written"):
        export_onnx(run, tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())
    with pytest.raises(MedsslError, match="does not reproduce its logits.*--backend torch"):
        load_model(run, "onnx")  # a run folder exported in memory is checked too


def test_a_network_the_exporter_cannot_trace_is_one_error(run_2d: tuple[Path, Path]) -> None:
    plan = load_trained_model(run_2d[1]).plan
    dodnet = DoDNet(UNetEncoder(2, 1, (4, 8)), 2)  # kernels computed from each image: not traceable to ONNX
    with pytest.raises(MedsslError, match="DoDNet network cannot be exported to ONNX.*--backend torch"):
        network_to_onnx(dodnet, plan)


def test_mrnet_exports_with_its_expertise_input(tmp_path: Path) -> None:
    data = _pictures(tmp_path / "raters", {"rater_1": 1.0, "rater_2": 1.3})
    run = tmp_path / "run"
    api.finetune(data, run, max_steps=2, quiet=True, system="mrnet", blur_size=5, width=4, accelerator="cpu", **TINY)
    assert isinstance(load_trained_model(run).network, MRNet)
    model = export_onnx(run, tmp_path / "mrnet.onnx")
    assert model.system == "mrnet" and model.max_difference <= 1e-4
    maps = {}
    for backend, source in (("torch", run), ("onnx", model.path)):
        for who in ("rater_1", "0,1"):
            out = tmp_path / f"{backend}-{who}"
            api.predict(source, data / "images", out, quiet=True, raters=who, probabilities=True, backend=backend)
            maps[backend, who] = _png_arrays(out)
    for who in ("rater_1", "0,1"):
        torch_maps, onnx_maps = maps["torch", who], maps["onnx", who]
        assert onnx_maps.keys() == torch_maps.keys()
        for name, array in onnx_maps.items():  # masks (0/255) equal; 8-bit probabilities within one level
            assert np.abs(array.astype(int) - torch_maps[name]).max() <= 1, name
    assert any(  # the expertise input changes the output
        not np.array_equal(a, maps["onnx", "0,1"][name]) for name, a in maps["onnx", "rater_1"].items()
    )
