"""``medssl superres train --config FILE|PRESET``: SuperResConfig defaults < the YAML < flags and ``--set``; an
unknown key of the YAML is one error naming the file. Training itself is replaced: only the options are looked at.

Before: ``superres train`` had no ``--config``, so no preset could reach SERAN, EDSR or RCAN.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from medssl.cli import app
from medssl.errors import MedsslError
from medssl.superres import workflow
from medssl.superres.workflow import SuperResConfig, config_from


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The ``SuperResConfig`` each ``superres train`` would train with (under ``"cfg"``)."""
    found: dict[str, Any] = {}

    def train(data: Path, out: Path, *, seed: int, **options: Any) -> SimpleNamespace:
        run_only = ("resume", "overwrite", "accelerator", "precision", "quiet", "skip_bad_cases")
        found["cfg"] = config_from({k: v for k, v in options.items() if k not in run_only})
        return SimpleNamespace(best_score=None, run=out, steps=0, files={})

    monkeypatch.setattr(workflow, "train", train)
    return found


def _train(tmp_path: Path, *args: str) -> Any:
    command = ["superres", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *args]
    return CliRunner().invoke(app, command, env={"COLUMNS": "200", "NO_COLOR": "1"})


def test_config_takes_the_files_values_under_the_options(tmp_path: Path, seen: dict[str, Any]) -> None:
    config = tmp_path / "sr.yaml"
    config.write_text(
        "system: rcan\npatch_size: 16\nbatch_size: 3\nlr: 1e-3\nsystem_options:\n  width: 8\n  blocks: 2\n"
    )
    result = _train(tmp_path, "--config", str(config))
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.system, cfg.patch_size, cfg.batch_size, cfg.max_steps) == ("rcan", 16, 3, SuperResConfig.max_steps)
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string: converted
    assert cfg.system_options == {"width": 8, "blocks": 2}
    args = ("--config", str(config), "--set", "batch_size=5", "--set", "width=4", "--max-steps", "7")
    result = _train(tmp_path, *args, "--system", "edsr")
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]  # the options win over the file; a system option goes on top of the file's others
    assert (cfg.system, cfg.patch_size, cfg.batch_size, cfg.max_steps) == ("edsr", 16, 5, 7)
    assert cfg.system_options == {"width": 4, "blocks": 2}


def test_config_takes_a_preset_name(tmp_path: Path, seen: dict[str, Any]) -> None:
    result = _train(tmp_path, "--config", "superres-seran-paper", "--set", "max_steps=10")
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.system, cfg.patch_size, cfg.batch_size, cfg.max_steps) == ("seran", 96, 16, 10)
    assert cfg.system_options == {"width": 64, "groups": 10, "blocks": 20, "descriptors": 32}
    assert _train(tmp_path).exit_code == 0 and seen["cfg"] == SuperResConfig()  # no --config: the defaults


@pytest.mark.parametrize(
    ("text", "key"), [("lr: 0.1\nlearning_rate: 0.1\n", "learning_rate"), ("system_options:\n  widht: 8\n", "widht")]
)
def test_an_unknown_key_of_the_config_is_one_error_naming_the_file(
    tmp_path: Path, seen: dict[str, Any], text: str, key: str
) -> None:
    config = tmp_path / "sr.yaml"
    config.write_text(text)
    result = _train(tmp_path, "--config", str(config))
    assert isinstance(result.exception, MedsslError), result.output
    message = str(result.exception)
    assert key in message and f"(in {config})" in message and "\n" not in message
    assert "cfg" not in seen  # refused before training
