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
from medssl import registry as kinds
from medssl.cli import app
from medssl.cli.superres import with_config
from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve
from medssl.configs import find_config, preset_command, preset_path, presets
from medssl.data.plan import Plan
from medssl.engine.experiment import check_experiment_config
from medssl.engine.module import SCHEDULES
from medssl.errors import MedsslError
from medssl.labelfree.config import S3Config, resolve_method_config
from medssl.pretrain import create
from medssl.superres.system import build
from medssl.superres.workflow import config_from
from medssl.systems.options import check_system_options
from tests.test_options import flat_config

ROOT = Path(__file__).resolve().parents[1]
CLASSES: dict[str, type[Any]] = {
    "finetune": FinetuneConfig,
    "pretrain": PretrainConfig,
    "experiment label-efficiency": LabelEfficiencyConfig,
}
SHIPPED = sorted(presets())
#: The last word of a GPU-size preset's name: ``paper`` (the paper's or its public code's sizes), ``gpu`` (no paper
#: sizes exist: nnU-Net's), ``nnssl`` (the MIM study's recipe, pretrain-mim-nnssl).
GPU_WORDS = ("paper", "gpu", "nnssl")
#: The registry kinds a preset can train, and the first word of its name.
PRESET_KINDS = {
    "pretraining": "pretrain",
    "segmentation": "finetune",
    "label-free": "segment",
    "super-resolution": "superres",
}
#: Registered methods and systems without a GPU-size preset, and why (remove an entry when its preset arrives).
NO_GPU_PRESET = {
    ("label-free", "kmeans"): "no network and nothing to size: Lloyd iterations on pixel features, CPU-fast",
}


def test_the_presets_the_issue_asks_for_are_shipped_and_described() -> None:
    shipped = presets()
    for name in ("finetune", "pretrain-simclr", "pretrain-byol", "pretrain-pgl-paper", "label-efficiency"):
        assert shipped.get(name), f"{name}: missing, or without a first comment line"
    folder = resources.files("medssl.configs")
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml")) == sorted(f"{n}.yaml" for n in SHIPPED)


def _gpu_presets() -> dict[tuple[str, str], list[str]]:
    """(kind, method or system) -> its GPU-size presets, from the preset names and their ``method``/``system`` key."""
    covered: dict[tuple[str, str], list[str]] = {}
    for name in SHIPPED:
        first, last = name.split("-")[0], name.split("-")[-1]
        kind = next((k for k, word in PRESET_KINDS.items() if word == first), None)
        if kind is None or last not in GPU_WORDS:
            continue
        values = yaml.safe_load(preset_path(name).read_text())
        trained = values.get("method") or values.get("system", "supervised")  # a finetune preset's default system
        covered.setdefault((kind, trained), []).append(name)
    return covered


def test_every_method_and_system_has_a_gpu_size_preset() -> None:
    """Every registered pretraining method, fine-tuning system, label-free and super-resolution system has a preset
    at its paper's (or nnU-Net's) sizes, named ``<command>-<name>[-...]-{paper,gpu,nnssl}``, or a reason in
    ``NO_GPU_PRESET``: a method registered later without either fails here."""
    covered = _gpu_presets()
    registered = {(kind, name) for kind in PRESET_KINDS for name in kinds.names(kind)}
    missing = sorted(registered - set(covered) - set(NO_GPU_PRESET))
    assert not missing, f"no GPU-size preset (<command>-<name>-paper.yaml or -gpu.yaml) nor a reason: {missing}"
    assert set(NO_GPU_PRESET) <= registered, "an exception for a method that is no longer registered"
    assert not set(NO_GPU_PRESET) & set(covered), "an exception for a method that now has a preset: remove it"
    for kind, trained in covered:
        assert (kind, trained) in registered, f"{covered[kind, trained]}: {trained} is not a registered {kind} name"
    for names in covered.values():
        for name in names:  # the first comment line, shown by `medssl list presets`, names the sizes
            assert re.search(r"\d", presets()[name]), f"{name}: its first comment line names no size"


def test_a_segment_preset_holds_the_method_settings_it_says() -> None:
    """``segment-s3-paper`` is ``S3Config.paper()`` exactly, and `medssl segment --config NAME` reads it."""
    assert resolve_method_config("s3", "segment-s3-paper") == S3Config.paper()
    with pytest.raises(MedsslError, match="is for method 's3', not 'kmeans'"):
        resolve_method_config("kmeans", "segment-s3-paper")


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
    misspelt key or a value of the wrong type fails here). The networks are built on the meta device (no memory)
    at the preset's widths, and run there on one input of its patch size: the shapes must work out."""
    command = preset_command(name)
    if command == "segment":  # a label-free method's settings, checked as `medssl segment --config` checks them
        method = yaml.safe_load(preset_path(name).read_text())["method"]
        resolve_method_config(method, name)
        return
    if command == "superres train":  # as `medssl superres train --config NAME` reads it
        _superres_on_meta(name)
        return
    cfg = resolve(CLASSES[command], name)  # a preset whose name says no command is not tested: refuse it
    if isinstance(cfg, PretrainConfig):
        assert cfg.schedule in SCHEDULES  # checked only when training starts
        options = check_system_options("pretraining", cfg.method, cfg.method_options)
        dims = len(cfg.patch_size) if cfg.patch_size else 3 if options.get("preset") == "paper" else 2
        widths = {"channels": tuple(cfg.channels)} if cfg.channels else {}
        with torch.device("meta"):
            encoder = create(cfg.method, spatial_dims=dims, in_channels=1, **widths, **options).encoder
            if cfg.patch_size:
                encoder(torch.empty(1, 1, *cfg.patch_size))
    elif isinstance(cfg, FinetuneConfig):
        options = check_system_options("segmentation", cfg.system, cfg.system_options)
        if cfg.patch_size and cfg.channels:
            _run_on_meta(cfg, options)
    else:
        check_experiment_config(cfg)
        for method, options in cfg.method_options.items():
            check_system_options("pretraining", method, options)
            with torch.device("meta"):
                create(method, spatial_dims=2, in_channels=1, **options)


def _superres_on_meta(name: str) -> None:
    """Resolve super-resolution preset ``name`` as the CLI does, build its system, and super-resolve one batch of
    low-resolution patches (meta device): the output is the preset's high-resolution patch size."""
    cfg = config_from(with_config(Path(name), {}))
    assert cfg.patch_size % cfg.scale == 0, f"{name}: patch_size is no multiple of the scale"
    side = (cfg.patch_size // cfg.scale,) * cfg.dims
    with torch.device("meta"):
        output = build(cfg.system, cfg.scale, cfg.system_options, cfg.dims).network(torch.empty(2, 1, *side))
    assert output.shape == (2, 1, *(cfg.patch_size,) * cfg.dims)


def _run_on_meta(cfg: FinetuneConfig, options: dict[str, Any]) -> None:
    """Build ``cfg``'s system for a 2-class plan of its patch size and widths, and predict one patch (meta device)."""
    assert cfg.patch_size and cfg.channels
    dims = len(cfg.patch_size)
    cls = kinds.get("segmentation", cfg.system)
    plan = Plan(
        spatial_dims=dims,
        data_dims=dims,
        in_channels=1,
        task="labelmap",
        class_values=[0, 1, 2],
        class_names=["background", "a", "b"],
        target_spacing=cfg.target_spacing,
        normalization="zscore",
        intensity=[],
        patch_size=list(cfg.patch_size),
        channels=list(cfg.channels),
        batch_size=cfg.batch_size or 2,
        extra={"raters": ["r1", "r2"]} if cls.uses_raters else {},
    )
    patch: tuple[int, ...] = tuple(cfg.patch_size)
    try:
        with torch.device("meta"):
            logits = cls.for_run(plan, cfg, seed=0, **options).predict(torch.empty(1, 1, *patch))
    except RuntimeError as error:  # a forward that reads values (MRNet checks its expertise vector) cannot run there
        assert "meta tensors" in str(error)
        patch = (2 ** len(cfg.channels),) * dims  # instead: on the CPU, the smallest patch the widths allow
        with torch.no_grad():
            logits = cls.for_run(plan, cfg, seed=0, **options).predict(torch.zeros(1, 1, *patch))
    assert logits.shape == (1, 3, *patch)


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
