"""The YAML presets shipped in the package (``medssl.configs``): each resolves cleanly, ``--config NAME`` reads one
like a file, and ``medssl list presets`` says what each is for.

Before: ``pyproject.toml`` declared ``configs/*.yaml`` package data that did not exist.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medssl import api
from medssl.cli import app
from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve
from medssl.configs import find_config, preset_command, preset_path, presets
from medssl.engine.experiment import check_experiment_config
from medssl.engine.module import SCHEDULES
from medssl.errors import MedsslError
from medssl.pretrain import create
from medssl.systems.options import check_system_options
from tests.test_options import flat_config

ROOT = Path(__file__).resolve().parents[1]
CLASSES: dict[str, type[Any]] = {
    "finetune": FinetuneConfig,
    "pretrain": PretrainConfig,
    "experiment label-efficiency": LabelEfficiencyConfig,
}
SHIPPED = sorted(presets())


def test_the_presets_the_issue_asks_for_are_shipped_and_described() -> None:
    shipped = presets()
    for name in ("finetune", "pretrain-simclr", "pretrain-byol", "pretrain-pgl-paper", "label-efficiency"):
        assert shipped.get(name), f"{name}: missing, or without a first comment line"
    folder = resources.files("medssl.configs")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == sorted(f"{n}.yaml" for n in SHIPPED)


def test_pyproject_ships_every_preset() -> None:
    """The package data pattern of pyproject.toml covers every preset file (a wheel holds only what it matches)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["medssl"]
    package = ROOT / "src" / "medssl"
    for name in SHIPPED:
        relative = preset_path(name).resolve().relative_to(package.resolve()).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_resolves_cleanly(name: str) -> None:
    """Resolved as the command that reads it would: config fields, and the method's or system's own options (a
    misspelt key or a value of the wrong type fails here); the methods are built (on the meta device: no memory)."""
    cls = CLASSES[preset_command(name)]  # a preset whose name says no command is not tested: refuse it
    cfg = resolve(cls, name)
    if isinstance(cfg, PretrainConfig):
        assert cfg.schedule in SCHEDULES  # checked only when training starts
        options = check_system_options("pretraining", cfg.method, cfg.method_options)
        dims = 3 if options.get("preset") == "paper" else 2
        with torch.device("meta"):
            create(cfg.method, spatial_dims=dims, in_channels=1, **options)
    elif isinstance(cfg, FinetuneConfig):
        check_system_options("segmentation", cfg.system, cfg.system_options)
    else:
        check_experiment_config(cfg)
        for method, options in cfg.method_options.items():
            check_system_options("pretraining", method, options)
            with torch.device("meta"):
                create(method, spatial_dims=2, in_channels=1, **options)


def test_the_finetune_preset_is_the_documented_defaults() -> None:
    """``finetune.yaml`` is FinetuneConfig's defaults with a comment on each: it must not drift from them."""
    assert resolve(FinetuneConfig, "finetune") == FinetuneConfig()
    text = preset_path("finetune").read_text()
    assert set(yaml.safe_load(text)) == set(FinetuneConfig.__dataclass_fields__)


def test_config_takes_a_file_or_a_preset_name(tmp_path: Path) -> None:
    assert find_config("pretrain-byol") == preset_path("pretrain-byol")
    own = tmp_path / "pretrain-byol"  # a file of that name wins over the preset
    own.write_text("method: simclr\n")
    assert find_config(own) == own
    with pytest.raises(MedsslError) as info:
        resolve(PretrainConfig, "pretrain-bylo")
    message = str(info.value)
    assert message.startswith("config file not found: pretrain-bylo (nor a preset shipped with medssl: ")
    assert all(name in message for name in SHIPPED) and "\n" not in message


def test_an_unknown_key_names_the_file_or_preset_it_came_from(tmp_path: Path) -> None:
    words = "method, method_options, schedule, warmup_steps (in pretrain-simclr); known: "
    with pytest.raises(MedsslError, match=re.escape(words)):
        resolve(FinetuneConfig, "pretrain-simclr")  # another command's preset
    config = tmp_path / "run.yaml"
    config.write_text("lr: 0.1\nlearning_rate: 0.1\n")
    with pytest.raises(MedsslError, match=re.escape(f"unknown option(s) learning_rate (in {config}); known: ")):
        resolve(FinetuneConfig, config)
    with pytest.raises(MedsslError, match=re.escape("unknown option(s) learning_rate; known: ")):
        resolve(FinetuneConfig, config, learning_rate=0.2)  # an argument, not the file's


def test_the_cli_and_the_api_read_a_preset_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run_pretrain(data: Any, out: Any, cfg: PretrainConfig, **kwargs: Any) -> SimpleNamespace:
        seen.update(flat_config(cfg))
        return SimpleNamespace(run_dir=out, files={}, global_step=0, final_loss=0.0)

    monkeypatch.setattr(api, "run_pretrain", run_pretrain)
    args = ["pretrain", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--config", "pretrain-byol"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})  # no --method: the preset names it
    assert result.exit_code == 0, result.output
    assert seen["method"] == "byol" and seen["momentum"] == 0.996 and seen["warmup_steps"] == 50
    api.pretrain(tmp_path / "data", tmp_path / "run2", config="pretrain-simclr", temperature=0.3)
    assert seen["method"] == "simclr" and seen["temperature"] == 0.3


def test_list_presets_prints_each_with_its_command_and_first_comment() -> None:
    result = CliRunner().invoke(app, ["list", "presets"], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    for name, about in presets().items():
        assert re.search(
            rf"^  {re.escape(name)} +medssl {preset_command(name)}: {re.escape(about)}$", result.output, re.M
        )
    assert "presets for --config: `medssl list presets`" in CliRunner().invoke(app, ["list"]).output
