"""End-to-end fine-tuning on tiny synthetic data: outputs, learning, resume, --init, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medssl import api
from medssl.data.io import read_label
from medssl.data.plan import Plan
from medssl.engine import trainer_setup
from medssl.errors import MedsslError
from medssl.networks.weights import load_checkpoint_file, save_encoder
from medssl.segment.predict import build_network
from tests.conftest import TINY


def test_2d_run_folder_holds_everything_and_learns(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = api.finetune(paired_2d, run, max_steps=80, quiet=True, **{**TINY, "val_interval": 40, "channels": [8, 16]})
    for name in (
        "plan.json",
        "split.json",
        "config.yaml",
        "fingerprint.json",
        "training_curves.png",
        "overlays.png",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "evaluation/test.json",
        "evaluation/test.csv",
    ):
        assert (run / name).is_file(), name
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == 2 and not set(split["test"]) & set(split["train"])
    preds = sorted(p.name for p in (run / "predictions" / "test").iterdir())
    assert preds == sorted(f"{c}.png" for c in split["test"])
    # the disc is trivially separable: a working training loop must find it
    assert result.test_summary["foreground"]["dice"] > 0.8
    assert set(np.unique(read_label(run / "predictions" / "test" / preds[0])[0])) <= {0, 255}


@pytest.mark.parametrize(("native", "used"), [(True, "bf16-mixed"), (False, "32-true")])
def test_default_precision_follows_the_cpu(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, native: bool, used: str
) -> None:
    """The default ``precision="auto"``: bf16 autocast only on a CPU with bf16 instructions; ``result.json`` records
    the precision the Trainer ran with."""
    monkeypatch.setattr(trainer_setup, "cpu_has_native_bf16", lambda: native)
    api.finetune(paired_2d, tmp_path / "run", max_steps=2, accelerator="cpu", quiet=True, **TINY)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["precision"] == used


def test_label_fraction_uses_a_subset_of_training_cases(paired_2d: Path, tmp_path: Path) -> None:
    api.finetune(paired_2d, tmp_path / "run", max_steps=2, label_fraction=0.3, quiet=True, **TINY)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train_labelled"]) == 3 and set(split["train_labelled"]) < set(split["train"])


def test_refuses_existing_folder_and_resumes(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(paired_2d, run, max_steps=4, quiet=True, **TINY)
    first = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 4
    with pytest.raises(MedsslError, match="--overwrite"):
        api.finetune(paired_2d, run, max_steps=4, quiet=True, **TINY)
    api.finetune(paired_2d, run, max_steps=8, resume=True, quiet=True, **TINY)
    resumed = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 8
    # the first run's curves are kept beside the resumed run's
    assert "val_dice" in (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert (run / "logs" / "resume-1" / "metrics.csv").is_file()
    assert not list(run.rglob("*.tmp")), "atomic saves leave no temporary files"


def test_resume_without_run_is_refused(paired_2d: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match="no earlier run"):
        api.finetune(paired_2d, tmp_path / "none", max_steps=2, resume=True, quiet=True, **TINY)


def test_init_loads_encoder_and_refuses_mismatch(
    paired_2d: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.finetune(paired_2d, tmp_path / "a", max_steps=2, quiet=True, **TINY)
    plan = Plan.load(tmp_path / "a" / "plan.json")
    net = build_network(plan)
    save_encoder(net.encoder, tmp_path / "enc.pt")  # type: ignore[arg-type]
    api.finetune(paired_2d, tmp_path / "b", max_steps=2, init=tmp_path / "enc.pt", quiet=True, **TINY)
    assert "loaded" in capsys.readouterr().err
    wide = build_network(Plan(**{**plan.__dict__, "channels": [6, 12]}))
    save_encoder(wide.encoder, tmp_path / "wide.pt")  # type: ignore[arg-type]
    with pytest.raises(MedsslError, match="wide.pt"):
        api.finetune(paired_2d, tmp_path / "c", max_steps=2, init=tmp_path / "wide.pt", quiet=True, **TINY)


def test_3d_predict_keeps_geometry_and_names(msd_3d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(msd_3d, run, max_steps=4, quiet=True, test_fraction=0.2, **TINY)
    written = api.predict(run, msd_3d / "imagesTr", tmp_path / "pred", quiet=True)
    assert len(written) == 6
    import nibabel as nib

    src = nib.load(msd_3d / "imagesTr" / "vol_000.nii.gz")
    out = nib.load(tmp_path / "pred" / "vol_000.nii.gz")
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    assert out.shape == src.shape
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}
    with pytest.raises(MedsslError, match="--overwrite"):
        api.predict(run, msd_3d / "imagesTr", tmp_path / "pred", quiet=True)


def test_2d_network_on_volumes(msd_3d: Path, tmp_path: Path) -> None:
    api.finetune(msd_3d, tmp_path / "run", dims=2, max_steps=2, quiet=True, **TINY)
    plan = Plan.load(tmp_path / "run" / "plan.json")
    assert plan.spatial_dims == 2 and plan.data_dims == 3 and plan.slice_axis == 2  # the 2 mm axis
    assert (tmp_path / "run" / "evaluation" / "test.json").is_file()


def test_bf16_mixed_precision_on_cpu(paired_2d: Path, tmp_path: Path) -> None:
    result = api.finetune(
        paired_2d, tmp_path / "run", max_steps=2, precision="bf16-mixed", accelerator="cpu", quiet=True, **TINY
    )
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()


def test_corrupt_checkpoint_is_a_clear_error(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    api.finetune(paired_2d, run, max_steps=2, quiet=True, **TINY)
    for name in ("best.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"not a checkpoint")
    with pytest.raises(MedsslError, match="best.ckpt"):
        api.predict(run, paired_2d / "images", tmp_path / "pred", quiet=True)


def test_bad_options(paired_2d: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match="unknown option"):
        api.finetune(paired_2d, tmp_path / "r", max_steps=2, quiet=True, learning_rate=1.0)
    with pytest.raises(MedsslError, match="--dims"):
        api.finetune(paired_2d, tmp_path / "r", dims=4, quiet=True)
    with pytest.raises(MedsslError, match="3D network needs 3D"):
        api.finetune(paired_2d, tmp_path / "r2", dims=3, max_steps=2, quiet=True, **TINY)
    with pytest.raises(MedsslError, match="--init file not found"):
        api.finetune(paired_2d, tmp_path / "r3", init=tmp_path / "none.pt", quiet=True)
