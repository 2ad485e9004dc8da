"""What the ``medssl`` command shows: help texts that match the code, ``--version``, and runs without Lightning's
chatter."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medssl.cli import app
from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig
from medssl.errors import MedsslError
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    ["finetune"],
    ["pretrain"],
    ["predict"],
    ["evaluate"],
    ["segment"],
    ["demo"],
    ["data", "check"],
    ["data", "merge"],
    ["experiment", "label-efficiency"],
]


def help_text(*command: str) -> str:
    """The help of ``command`` as one line: box characters dropped and whitespace collapsed, so that wrapped help
    cells read on."""
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def test_version_is_the_installed_one() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"medssl {importlib.metadata.version('medssl')}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_flags_are_shown_without_a_value(command: list[str]) -> None:
    text = help_text(*command)
    assert "<bool>" not in text
    assert "--help Show this message" in text


def test_pretrain_method_is_required_and_lists_every_method() -> None:
    """``--method`` or the ``--config``'s ``method`` (a preset names its method)."""
    from medssl.pretrain import names

    text = help_text("pretrain")
    row = re.search(r" --method <str> Pretraining method: (.*?) \(or the --config's\)\.", text)
    assert row is not None, text
    assert row.group(1).split(", ") == sorted(names())
    result = CliRunner().invoke(app, ["pretrain", "--data", "x", "--out", "y"])
    assert isinstance(result.exception, MedsslError)
    assert str(result.exception) == f"choose a pretraining method (--method); known methods: {', '.join(names())}"


def test_defaults_that_come_from_the_config_are_shown() -> None:
    assert f"Optimiser steps (default: {FinetuneConfig().max_steps}," in help_text("finetune")
    assert f"Optimiser steps (default: {PretrainConfig().max_steps}," in help_text("pretrain")
    text = help_text("experiment", "label-efficiency")
    cfg = LabelEfficiencyConfig()
    for shown in (
        ",".join(cfg.methods),
        ",".join(map(str, cfg.fractions)),
        f"(default: {cfg.seeds},",
        f"(default: {cfg.pretrain_steps},",
        f"(default: {cfg.finetune_steps},",
        f"(default: {cfg.precision},",
    ):
        assert shown in text


def test_overlap_help_agrees_with_the_check() -> None:
    assert "in [0, 1)" in help_text("predict")
    assert "0-0.9" not in help_text("predict")


def test_accelerator_help_lists_every_accepted_value() -> None:
    from medssl.engine.trainer_setup import ACCELERATORS

    text = help_text("finetune")
    row = re.search(r"--accelerator <str> (.*?) \[default: auto\]", text)
    assert row is not None
    assert all(re.search(rf"\b{name}\b", row.group(1)) for name in ACCELERATORS)


def test_usage_synopsis_lists_every_pretraining_method() -> None:
    from medssl.pretrain import names

    usage = (ROOT / "docs" / "usage.md").read_text()
    synopsis = re.search(r"medssl pretrain --method (\S+)", usage)
    assert synopsis is not None
    assert sorted(synopsis.group(1).split("|")) == sorted(names())


NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",
    "is deprecated",
    "`Trainer.fit` stopped",
)


def test_a_run_prints_no_lightning_chatter(tmp_path: Path, paired_2d: Path) -> None:
    """A tiny fine-tuning run through the real command: our output only, none of Lightning's notices."""
    config = tmp_path / "tiny.yaml"
    config.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    args = ["finetune", "--data", paired_2d, "--out", tmp_path / "run", "--config", config, "--max-steps", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "medssl", *map(str, args), "--quiet"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "run folder:" in proc.stdout
    for noise in NOISE:
        assert noise not in output, output
