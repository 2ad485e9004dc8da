"""Output folders: ``--overwrite`` replaces only what medssl created for the same command (its marker), never an
input, the working directory or a folder above it; ``--resume`` needs a run of the same kind; ``evaluate --out``
keeps existing files; a command that fails before its first checkpoint leaves no folder that blocks the rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medssl import api
from medssl.engine import run as run_engine
from medssl.engine.run_folder import MARKER, prepare_output_dir, read_marker, removed_on_failure
from medssl.errors import MedsslError
from tests.conftest import TINY
from tests.test_cli import assert_clean_error, medssl


def _write_paired(root: Path) -> Path:
    """Ten 32 x 32 PNG pairs: a bright disc (mask 255) on a dark noisy background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for i in range(10):
        mask = (yy - 16 - i % 3) ** 2 + (xx - 15) ** 2 <= 49
        img = np.clip(60 + 120 * mask + rng.normal(0, 15, mask.shape), 0, 255).astype(np.uint8)
        for sub, arr in (("images", img), ("masks", mask.astype(np.uint8) * 255)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"case{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def _trained_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trained")
    data = _write_paired(root / "data")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    api.finetune(data, root / "run", max_steps=2, quiet=True, **TINY)
    torch.set_num_threads(before)
    return data, root / "run"


@pytest.fixture
def trained(_trained_once: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """``(data, run)``: a paired dataset and a 2-step fine-tuning run on it, copied for each test (a test that
    fails may have deleted them)."""
    data, run = (Path(shutil.copytree(p, tmp_path / p.name)) for p in _trained_once)
    return data, run


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- data loss: --out pointing at an input ---------------------------------------------------------------------


def test_predict_out_equal_to_the_model_folder_keeps_the_model(trained: tuple[Path, Path]) -> None:
    """Issue 14: `predict --model RUN --out RUN --overwrite` deleted the checkpoints and printed "wrote 3 files"."""
    data, run = trained
    before = _files(run)
    with pytest.raises(MedsslError, match="is the input"):
        api.predict(run, data / "images", run, overwrite=True, quiet=True)
    assert _files(run) == before


def test_predict_out_inside_the_model_folder_is_refused(trained: tuple[Path, Path]) -> None:
    data, run = trained
    with pytest.raises(MedsslError, match="lies inside the input"):
        api.predict(run, data / "images", run / "predictions", overwrite=True, quiet=True)


@pytest.mark.parametrize("where", ["images", "data"])
def test_predict_out_equal_to_or_containing_the_input_keeps_the_images(trained: tuple[Path, Path], where: str) -> None:
    data, run = trained
    before = _files(data)
    out = data / "images" if where == "images" else data
    with pytest.raises(MedsslError, match="is the input|contains the input"):
        api.predict(run, data / "images", out, overwrite=True, quiet=True)
    assert _files(data) == before


@pytest.mark.parametrize("command", ["finetune", "pretrain", "experiment"])
@pytest.mark.parametrize("where", ["same", "inside"])
def test_training_out_equal_to_or_inside_the_data_keeps_the_data(paired_2d: Path, command: str, where: str) -> None:
    """Issue 14: `finetune --data D --out D --overwrite` deleted the dataset (pretrain even trained into it)."""
    before = _files(paired_2d)
    out = paired_2d if where == "same" else paired_2d / "run"
    with pytest.raises(MedsslError, match="the input"):
        if command == "finetune":
            api.finetune(paired_2d, out, max_steps=1, overwrite=True, quiet=True, **TINY)
        elif command == "pretrain":
            api.pretrain(paired_2d, out, method="autoencoder", max_steps=1, overwrite=True, quiet=True)
        else:
            api.label_efficiency(
                paired_2d, out, methods=["random"], fractions=[1.0], seeds=1, finetune_steps=1, overwrite=True
            )
    assert _files(paired_2d) == before


def test_finetune_out_holding_the_init_file_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """--overwrite would delete the --init checkpoint before it is read."""
    data, run = trained
    with pytest.raises(MedsslError, match="contains the input"):
        api.finetune(data, run, max_steps=1, init=run / "checkpoints" / "last.ckpt", overwrite=True, **TINY)
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_segment_out_equal_to_the_input_keeps_the_images(paired_2d: Path) -> None:
    before = _files(paired_2d)
    with pytest.raises(MedsslError, match="is the input"):
        api.segment(paired_2d / "images", paired_2d / "images", method="kmeans", overwrite=True, quiet=True)
    assert _files(paired_2d) == before


# --- data loss: the working directory, folders above it, the home folder ------------------------------------------


@pytest.mark.parametrize("out", ["..", "."])
def test_out_dot_dot_from_a_sub_folder_is_refused(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    """Issue 14: `--out ..` from a sub-folder emptied the parent folder, then a traceback."""
    data, run = trained
    (tmp_path / "project" / "sub").mkdir(parents=True)
    (tmp_path / "project" / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path / "project" / "sub")
    with pytest.raises(MedsslError, match="working directory"):
        api.predict(run, data / "images", out, overwrite=True, quiet=True)
    assert (tmp_path / "project" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "project" / "sub").is_dir()


def test_cli_out_dot_dot_is_one_clean_error(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    proc = medssl(
        "predict", "--model", run, "--input", data / "images", "--out", "..", "--overwrite", cwd=tmp_path / "sub"
    )
    assert_clean_error(proc, "working directory")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_home_folder_is_refused(trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, run = trained
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("keep me")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(MedsslError, match="home folder"):
        api.predict(run, data / "images", home, overwrite=True, quiet=True)
    assert (home / ".bashrc").read_text() == "keep me"


# --- --overwrite replaces only medssl's own output of the same kind ----------------------------------------------


def test_overwrite_refuses_a_folder_medssl_did_not_create(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("keep me")
    with pytest.raises(MedsslError, match="not created by `medssl predict`"):
        api.predict(run, data / "images", out, overwrite=True, quiet=True)
    assert (out / "chapter1.tex").read_text() == "keep me"


def test_overwrite_refuses_the_output_of_another_command(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    preds = tmp_path / "preds"
    api.predict(run, data / "images", preds, quiet=True)
    assert read_marker(preds) is not None and read_marker(preds)["kind"] == "predict"  # type: ignore[index]
    before = _files(preds)
    with pytest.raises(MedsslError, match="output of `medssl predict`"):
        api.segment(data / "images", preds, method="kmeans", overwrite=True, quiet=True)
    assert _files(preds) == before


def test_overwrite_replaces_an_output_of_the_same_kind(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    preds = tmp_path / "preds"
    api.predict(run, data / "images", preds, quiet=True)
    first = read_marker(preds)
    (preds / "stale.png").write_bytes(b"old")
    with pytest.raises(MedsslError, match="--overwrite"):
        api.predict(run, data / "images", preds, quiet=True)
    api.predict(run, data / "images", preds, overwrite=True, quiet=True)
    assert not (preds / "stale.png").exists()
    marker = read_marker(preds)
    assert marker is not None and marker != first and marker["kind"] == "predict"
    assert set(marker) == {"kind", "created", "medssl_version"}


def test_an_empty_existing_folder_is_used(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    (tmp_path / "empty").mkdir()
    assert len(api.predict(run, data / "images", tmp_path / "empty", quiet=True)) == 10


# --- --resume -----------------------------------------------------------------------------------------------------


def test_resume_on_a_folder_without_a_run_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Issue 14: --resume on a predictions folder wrote a run into it."""
    data, run = trained
    preds = tmp_path / "preds"
    api.predict(run, data / "images", preds, quiet=True)
    before = _files(preds)
    with pytest.raises(MedsslError, match="holds no medssl finetune run"):
        api.finetune(data, preds, max_steps=2, resume=True, quiet=True, **TINY)
    with pytest.raises(MedsslError, match="holds no medssl pretrain run"):
        api.pretrain(data, preds, method="autoencoder", max_steps=1, resume=True, quiet=True)
    assert _files(preds) == before


def test_resume_accepts_a_run_written_before_markers(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = trained
    run = tmp_path / "legacy"
    api.finetune(data, run, max_steps=2, quiet=True, **TINY)
    (run / MARKER).unlink()  # a run folder of an earlier medssl
    api.finetune(data, run, max_steps=3, resume=True, quiet=True, **TINY)
    marker = read_marker(run)
    assert marker is not None and marker["kind"] == "finetune"
    assert json.loads((run / "result.json").read_text())["global_step"] == 3


# --- evaluate --out -----------------------------------------------------------------------------------------------


@pytest.fixture
def masks(tmp_path: Path) -> tuple[Path, Path]:
    for sub, shift in (("pred", 1), ("truth", 0)):
        (tmp_path / sub).mkdir()
        m = np.zeros((16, 16), np.uint8)
        m[4 + shift : 10 + shift, 4:10] = 255
        Image.fromarray(m).save(tmp_path / sub / "x.png")
    return tmp_path / "pred", tmp_path / "truth"


@pytest.mark.parametrize("existing", ["e.json", "e.csv"])
def test_evaluate_keeps_an_existing_file_without_overwrite(
    masks: tuple[Path, Path], tmp_path: Path, existing: str
) -> None:
    pred, truth = masks
    (tmp_path / existing).write_text("my notes")
    with pytest.raises(MedsslError, match="--overwrite"):
        api.evaluate(pred, truth, out=tmp_path / "e.json")
    assert (tmp_path / existing).read_text() == "my notes"
    api.evaluate(pred, truth, out=tmp_path / "e.json", overwrite=True)
    assert json.loads((tmp_path / "e.json").read_text())["cases"][0]["case"] == "x"


def test_evaluate_cli_overwrite_flag(masks: tuple[Path, Path], tmp_path: Path) -> None:
    pred, truth = masks
    (tmp_path / "e.json").write_text("my notes")
    assert_clean_error(
        medssl("evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / "e.json"), "--overwrite"
    )
    assert (tmp_path / "e.json").read_text() == "my notes"
    proc = medssl("evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / "e.json", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "e.csv").is_file()


def test_evaluate_never_writes_into_an_input_folder(masks: tuple[Path, Path]) -> None:
    pred, truth = masks
    with pytest.raises(MedsslError, match="lies inside the input"):
        api.evaluate(pred, truth, out=truth / "scores.json", overwrite=True)
    assert sorted(p.name for p in truth.iterdir()) == ["x.png"]


# --- no debris: a failed run leaves nothing that blocks the corrected rerun --------------------------------------


def test_bad_init_file_leaves_no_run_folder(paired_2d: Path, tmp_path: Path) -> None:
    """Issue 14: a bad --init left command.json, config.yaml, plan and split, and the corrected rerun was refused."""
    bad = tmp_path / "encoder.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MedsslError, match="encoder.pt"):
        api.finetune(paired_2d, tmp_path / "run", max_steps=1, init=bad, quiet=True, **TINY)
    assert not (tmp_path / "run").exists()


def test_failure_before_the_first_checkpoint_removes_the_new_folder(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error after the folder is written (here: the trainer set-up) removes it; the corrected rerun runs."""

    def broken(*args: object, **kwargs: object) -> None:
        raise MedsslError("cannot set up training: bad devices")

    out = tmp_path / "new" / "run"
    with monkeypatch.context() as m:
        m.setattr(run_engine, "_trainer", broken)
        with pytest.raises(MedsslError, match="bad devices"):
            api.finetune(paired_2d, out, max_steps=1, quiet=True, **TINY)
    assert not (tmp_path / "new").exists(), "the folders the failed run created are gone"
    api.finetune(paired_2d, out, max_steps=1, quiet=True, **TINY)
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("before", ["empty folder", "old run"])
def test_failure_in_an_existing_folder_leaves_it_empty(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise MedsslError("cannot set up training")

    out = tmp_path / "run"
    out.mkdir()
    if before == "old run":
        prepare_output_dir(out, kind="finetune")
        (out / "result.json").write_text("{}")
    with monkeypatch.context() as m:
        m.setattr(run_engine, "_trainer", broken)
        with pytest.raises(MedsslError):
            api.finetune(paired_2d, out, max_steps=1, overwrite=True, quiet=True, **TINY)
    assert out.is_dir() and not any(out.iterdir()), "the folder is kept, emptied: the rerun needs no --overwrite"


def test_interrupt_after_a_checkpoint_keeps_the_run(
    paired_2d: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(run_engine, "plot_training_curves", interrupted)  # after checkpoints/last.ckpt
    with pytest.raises(KeyboardInterrupt):
        api.finetune(paired_2d, out, max_steps=2, quiet=True, **TINY)
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "plan.json").is_file()


# --- the guard itself ---------------------------------------------------------------------------------------------


def test_removed_on_failure_touches_only_the_folder_the_block_marked(tmp_path: Path) -> None:
    old = tmp_path / "old"
    prepare_output_dir(old, kind="predict")
    (old / "a.png").write_bytes(b"x")
    with pytest.raises(RuntimeError), removed_on_failure(old):
        raise RuntimeError("fails before touching the folder")
    assert (old / "a.png").is_file()
    with pytest.raises(KeyboardInterrupt), removed_on_failure(old, resume=True):
        raise KeyboardInterrupt
    assert (old / "a.png").is_file()
    unmarked = tmp_path / "mine" / "deep"
    with pytest.raises(RuntimeError), removed_on_failure(unmarked):
        unmarked.mkdir(parents=True)  # not through prepare_output_dir: no marker, not medssl's to remove
        raise RuntimeError
    assert unmarked.is_dir()
    new = tmp_path / "a" / "b" / "c"
    with pytest.raises(RuntimeError), removed_on_failure(new):
        prepare_output_dir(new, kind="predict")
        (new / "half.png").write_bytes(b"x")
        raise RuntimeError
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError), removed_on_failure(new):
        prepare_output_dir(new, kind="finetune")
        (new / "checkpoints").mkdir()
        (new / "checkpoints" / "last.ckpt").write_bytes(b"x")
        raise RuntimeError
    assert (new / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("var", ["RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"])
def test_only_rank_zero_owns_the_run_folder_whichever_launcher_set_the_rank(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    from medssl.engine.run_folder import is_main_process

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_main_process()
    monkeypatch.setenv(var, "0")
    assert is_main_process()
    monkeypatch.setenv(var, "1")  # srun sets only SLURM_PROCID before Lightning reads it
    assert not is_main_process()


def test_only_rank_zero_prints_results_under_ddp() -> None:
    """Every DDP process runs the CLI command to its end: the other ranks' consoles are quiet."""
    import os
    import subprocess
    import sys

    code = "from medssl.cli.common import out_console; out_console.print('result line')"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")}
    for rank, expected in (("0", "result line\n"), ("1", "")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, "LOCAL_RANK": rank}, capture_output=True)
        assert out.stdout.decode() == expected
