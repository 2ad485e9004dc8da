"""The ``medssl`` command as a user runs it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import TINY


def medssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    cmd = [sys.executable, "-m", "medssl", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=cwd, env=env, timeout=600)


def assert_clean_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def test_missing_dataset_is_one_clear_error(tmp_path: Path) -> None:
    assert_clean_error(medssl("finetune", "--data", tmp_path / "nope", "--out", tmp_path / "run"), "nope")


def test_text_file_named_nifti_is_refused_with_its_name(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for name in ("a", "b", "c", "d"):
            (root / sub / f"{name}.nii.gz").write_text("this is not an image")
    proc = medssl("finetune", "--data", root, "--out", tmp_path / "run")
    assert_clean_error(proc, ".nii.gz")
    assert any(f"{name}.nii.gz" in proc.stderr for name in "abcd")


def test_predict_with_a_folder_that_is_not_a_run(tmp_path: Path, paired_2d: Path) -> None:
    assert_clean_error(
        medssl("predict", "--model", tmp_path, "--input", paired_2d, "--out", tmp_path / "p"), "plan.json"
    )


def test_data_check_lists_problems_and_exits_1(tmp_path: Path, paired_2d: Path) -> None:
    clean = medssl("data", "check", paired_2d)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(paired_2d / "masks" / "case03.png")  # wrong size
    (paired_2d / "images" / "case07.png").unlink()  # mask without image
    proc = medssl("data", "check", paired_2d)
    assert proc.returncode == 1
    assert "case03" in proc.stdout and "case07" in proc.stdout


def test_evaluate_writes_json_and_csv(tmp_path: Path) -> None:
    for sub, shift in (("pred", 1), ("truth", 0)):
        (tmp_path / sub).mkdir()
        m = np.zeros((16, 16), np.uint8)
        m[4 + shift : 10 + shift, 4:10] = 255
        Image.fromarray(m).save(tmp_path / sub / "x.png")
    proc = medssl("evaluate", "--pred", tmp_path / "pred", "--truth", tmp_path / "truth", "--out", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["cases"][0]["dice"] == pytest.approx(2 * 30 / 72)
    assert (tmp_path / "e.csv").read_text().startswith("case,label,dice")


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(tmp_path: Path, paired_2d: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    proc = medssl(
        "finetune",
        "--data",
        paired_2d,
        "--out",
        tmp_path / "run",
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--max-steps",
        "4",
        "--config",
        cfg,
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr and "2 processes" in proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "evaluation" / "test.json").is_file()
