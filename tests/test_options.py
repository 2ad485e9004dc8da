"""Options declared once (``medssl.systems.options``): a system's constructor parameters are its options in the
YAML config, the api and ``--set KEY=VALUE``, checked before any data is read.

Before: a misspelt ``temperatur=0.2`` reached the method's constructor after the data was read and failed as
"cannot build pretraining method"; options were threaded by hand through cli -> api -> engine.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from typer.testing import CliRunner

from medssl import api, registry
from medssl.cli import app
from medssl.cli.common import merge_sets, parse_sets
from medssl.config import FinetuneConfig, PretrainConfig
from medssl.errors import MedsslError
from medssl.pretrain import SimCLR
from medssl.pretrain import registry as pretrain_registry
from medssl.systems.options import REQUIRED, check_system_options, config_fields, system_options

ENV = {"COLUMNS": "400", "NO_COLOR": "1"}


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register test systems without leaking them into other tests."""
    for kind in registry.kinds():
        registry.names(kind)
    objects = {kind: dict(entries) for kind, entries in registry._OBJECTS.items()}
    monkeypatch.setattr(registry, "_OBJECTS", objects)
    monkeypatch.setattr(pretrain_registry, "_METHODS", objects["pretraining"])
    yield


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``run_pretrain`` and ``run_finetune`` replaced by recorders: what the api would start, without data."""
    seen: dict[str, Any] = {}
    result = SimpleNamespace(run_dir="RUN", files={}, global_step=0, final_loss=0.0, test_summary={})

    def pretrain(data: Any, out: Any, cfg: PretrainConfig, **kwargs: Any) -> SimpleNamespace:
        seen["pretrain"] = {**flat_config(cfg), **kwargs}
        return result

    def finetune(data: Any, out: Any, cfg: FinetuneConfig, **kwargs: Any) -> SimpleNamespace:
        seen["finetune"] = cfg
        return result

    monkeypatch.setattr(api, "run_pretrain", pretrain)
    monkeypatch.setattr(api, "run_finetune", finetune)
    return seen


def flat_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The config's fields and its method's options in one dict (what the api passes to ``run_pretrain``)."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "method_options"}
    return {**fields, **cfg.method_options}


class Sharpened(SimCLR):
    """SimCLR with one option more: the edit that adds an option, and the only one.

    Args:
        sharpness: a made-up option.
        mode: another, of a fixed set of words.
        window: a fixed-length tuple.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        channels: list[int] | None = None,
        *,
        sharpness: float = 1.0,
        mode: Literal["soft", "hard"] = "soft",
        window: tuple[int, int] = (3, 3),
        **kwargs: Any,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, **kwargs)
        self.sharpness, self.mode, self.window = sharpness, mode, window


class Painter:
    """A segmentation system whose ``for_run`` declares its options (the constructor's are not options).

    Args:
        brush: brush width.
    """

    def __init__(self, network: Any, plan: Any, *, hidden: int = 3) -> None:
        pass

    @classmethod
    def for_run(
        cls, plan: Any, cfg: FinetuneConfig, *, seed: int = 0, brush: int = 2, palette: str | None = None
    ) -> Painter:
        return cls(None, plan)


def _register_test_systems() -> None:
    registry.register_object("pretraining", "sharpened", Sharpened)
    registry.register_object("segmentation", "painter", Painter)


# ------------------------------------------------------------------------------------------ reading the declaration


def test_a_methods_options_are_its_constructors_keyword_parameters_with_their_docs() -> None:
    options = system_options("pretraining", "simclr")
    assert list(options) == ["temperature", "hidden_dim", "projection_dim"]  # no spatial_dims/encoder/views
    assert options["temperature"].annotation is float and options["temperature"].default == 0.1
    assert options["temperature"].doc == "NT-Xent temperature."
    pgl = system_options("pretraining", "pgl")
    assert pgl["preset"].default == "small" and "PGL_PRESETS" in pgl["preset"].doc
    assert pgl["sampling_ratio"].annotation == int | None
    assert "four gain nothing more" in pgl["sampling_ratio"].doc  # continuation lines joined
    assert pgl["momentum"].doc == pgl["final_momentum"].doc != ""  # "momentum, final_momentum: ..." documents both


@pytest.mark.usefixtures("scratch")
def test_for_run_declares_a_segmentation_systems_options_and_base_docs_are_inherited() -> None:
    _register_test_systems()
    painter = system_options("segmentation", "painter")
    assert list(painter) == ["brush", "palette"]  # plan, cfg, seed: supplied by the engine; not the constructor's
    assert painter["brush"].doc == "brush width." and painter["palette"].default is None
    sharpened = system_options("pretraining", "sharpened")
    assert list(sharpened) == ["sharpness", "mode", "window"]  # **kwargs left out
    assert system_options("segmentation", "supervised") == {}  # its settings are FinetuneConfig fields


def test_config_fields_are_the_options_of_a_label_free_method() -> None:
    from medssl.labelfree.config import S3Config

    fields = config_fields(S3Config)
    assert fields["lr"].default == 0.05 and fields["lr"].annotation is float and fields["lr"].doc.startswith("SGD")
    assert fields["clusters"].doc.startswith("number of clusters")  # documented in the base class
    assert all(option.default is not REQUIRED for option in fields.values())


# ---------------------------------------------------------------------------------------------------- checking


def test_an_unknown_option_is_named_with_the_known_ones() -> None:
    with pytest.raises(MedsslError) as info:
        check_system_options("pretraining", "simclr", {"temperatur": 0.2}, " (in run.yaml)", also=["lr"])
    message = str(info.value)
    assert message.startswith("unknown option(s) temperatur of pretraining method 'simclr' (in run.yaml)")
    assert "temperature, hidden_dim, projection_dim" in message and "lr" in message and "\n" not in message


@pytest.mark.usefixtures("scratch")
def test_values_are_checked_against_the_declared_type() -> None:
    _register_test_systems()
    check = check_system_options
    assert check("pretraining", "simclr", {"temperature": "2e-1", "hidden_dim": 8}) == {
        "temperature": 0.2,  # YAML 1.1 reads 2e-1 as text
        "hidden_dim": 8,
    }
    assert check("pretraining", "sharpened", {"window": (5, 5), "mode": "hard"}) == {"window": [5, 5], "mode": "hard"}
    for values, words in [
        ({"temperature": "hot"}, "option temperature of pretraining method 'simclr' must be a number, not 'hot'"),
        ({"hidden_dim": 2.5}, "option hidden_dim of pretraining method 'simclr' must be an integer, not 2.5"),
        ({"hidden_dim": True}, "must be an integer, not True"),
    ]:
        with pytest.raises(MedsslError, match=re.escape(words)):
            check("pretraining", "simclr", values)
    with pytest.raises(MedsslError, match="must be a list of 2 integers, not \\[5\\]"):
        check("pretraining", "sharpened", {"window": [5]})
    with pytest.raises(MedsslError, match="must be one of 'soft', 'hard', not 'medium'"):
        check("pretraining", "sharpened", {"mode": "medium"})
    with pytest.raises(MedsslError, match="must be a string or null"):
        check("segmentation", "painter", {"palette": 3})


def test_an_unknown_system_is_the_registrys_error() -> None:
    with pytest.raises(MedsslError, match="unknown segmentation system 'nope'; known segmentation systems: "):
        check_system_options("segmentation", "nope", {})


# ------------------------------------------------------------------------------------------------- through the api


def test_a_misspelt_method_option_fails_before_any_data_is_read(tmp_path: Path, calls: dict[str, Any]) -> None:
    missing = tmp_path / "no-data-here"  # reading it would fail with another message
    with pytest.raises(MedsslError, match=r"unknown option\(s\) temperatur of pretraining method 'simclr'; its"):
        api.pretrain(missing, tmp_path / "run", method="simclr", temperatur=0.2)
    config = tmp_path / "run.yaml"
    config.write_text("method: simclr\nmethod_options: {temperatur: 0.2}\n")
    with pytest.raises(MedsslError, match=re.escape(f"temperatur of pretraining method 'simclr' (in {config})")):
        api.pretrain(missing, tmp_path / "run", config=config)
    config.write_text("method: simclr\nmethod_options: {temperature: warm}\n")
    with pytest.raises(MedsslError, match="option temperature of pretraining method 'simclr' must be a number"):
        api.pretrain(missing, tmp_path / "run", config=config)
    assert not calls and not (tmp_path / "run").exists()


def test_a_misspelt_pgl_preset_fails_before_any_data_is_read(tmp_path: Path, calls: dict[str, Any]) -> None:
    with pytest.raises(MedsslError, match="option preset of pretraining method 'pgl' must be one of 'small', 'paper'"):
        api.pretrain(tmp_path / "no-data-here", tmp_path / "run", method="pgl", preset="papr")
    assert not calls and not (tmp_path / "run").exists()


def test_api_pretrain_sorts_keywords_into_config_fields_and_method_options(
    tmp_path: Path, calls: dict[str, Any]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("method: byol\nlr: 0.01\nmethod_options: {momentum: 0.99, hidden_dim: 64}\n")
    api.pretrain(tmp_path / "data", tmp_path / "run", config=config, weight_decay=0.5, hidden_dim=32, max_steps=7)
    got = calls["pretrain"]
    assert got["method"] == "byol" and got["lr"] == 0.01 and got["weight_decay"] == 0.5 and got["max_steps"] == 7
    assert got["momentum"] == 0.99 and got["hidden_dim"] == 32  # the argument wins over the file
    assert "method_options" not in got


@pytest.mark.usefixtures("scratch")
def test_a_new_constructor_parameter_is_an_option_everywhere_with_no_other_edit(
    tmp_path: Path, calls: dict[str, Any]
) -> None:
    _register_test_systems()
    api.pretrain(tmp_path / "data", tmp_path / "a", method="sharpened", sharpness=2.5)
    assert calls["pretrain"]["sharpness"] == 2.5
    config = tmp_path / "run.yaml"
    config.write_text("method: sharpened\nmethod_options: {sharpness: 3, window: [1, 2]}\n")
    api.pretrain(tmp_path / "data", tmp_path / "b", config=config)
    assert calls["pretrain"]["sharpness"] == 3.0 and calls["pretrain"]["window"] == [1, 2]
    args = ["pretrain", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "c"), "--method", "sharpened"]
    result = CliRunner().invoke(app, [*args, "--set", "sharpness=4", "--set", "mode=hard"], env=ENV)
    assert result.exit_code == 0, result.output
    assert calls["pretrain"]["sharpness"] == 4.0 and calls["pretrain"]["mode"] == "hard"
    api.finetune(tmp_path / "data", tmp_path / "d", system="painter", brush=5)
    cfg = calls["finetune"]
    assert cfg.system == "painter" and cfg.system_options == {"brush": 5}


def test_finetune_checks_its_system_and_the_systems_options(tmp_path: Path, calls: dict[str, Any]) -> None:
    known = "adversarial, dodnet, masked-sigmoid, mrnet, multihead, rater-mean, separate, supervised"
    with pytest.raises(MedsslError, match=f"unknown segmentation system 'nope'; known segmentation systems: {known}"):
        api.finetune(tmp_path / "data", tmp_path / "run", system="nope")
    with pytest.raises(MedsslError, match=r"unknown option\(s\) brush of segmentation system 'supervised'"):
        api.finetune(tmp_path / "data", tmp_path / "run", brush=3)
    config = tmp_path / "run.yaml"
    config.write_text("system_options: {sw_overlap: 0.5}\n")  # a FinetuneConfig field, not the system's
    with pytest.raises(MedsslError, match=re.escape(f"sw_overlap of segmentation system 'supervised' (in {config})")):
        api.finetune(tmp_path / "data", tmp_path / "run", config=config)
    assert not calls
    api.finetune(tmp_path / "data", tmp_path / "run", sw_overlap=0.5, lr="3e-4")
    assert calls["finetune"].sw_overlap == 0.5 and calls["finetune"].lr == 3e-4
    assert calls["finetune"].system == "supervised" and calls["finetune"].system_options == {}


def test_label_efficiency_checks_each_methods_options_before_any_data_is_read(tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("methods: [random, simclr]\nmethod_options: {simclr: {temperatur: 0.2}}\n")
    with pytest.raises(MedsslError, match=re.escape(f"temperatur of pretraining method 'simclr' (in {config})")):
        api.label_efficiency(tmp_path / "no-data-here", tmp_path / "exp", config=config)
    config.write_text("methods: [random]\nfinetune: {system_options: {brush: 2}}\n")
    with pytest.raises(MedsslError, match="brush of segmentation system 'supervised'"):
        api.label_efficiency(tmp_path / "no-data-here", tmp_path / "exp", config=config)


# ------------------------------------------------------------------------------------------------------- --set


def test_set_values_are_read_as_yaml() -> None:
    assert parse_sets(["lr=3e-4", "flip_axes=[0,1]", "max_minutes=null", "quiet=true", "name=a b"]) == {
        "lr": "3e-4",  # YAML 1.1 text; the config check takes it as the number
        "flip_axes": [0, 1],
        "max_minutes": None,
        "quiet": True,
        "name": "a b",
    }
    for bad, words in [("lr", "KEY=VALUE"), ("=3", "KEY=VALUE"), ("x=[1,", "not a YAML value")]:
        with pytest.raises(MedsslError, match=re.escape(words)):
            parse_sets([bad])
    with pytest.raises(MedsslError, match="--set lr is given twice"):
        parse_sets(["lr=1", "lr=2"])


def test_set_may_not_override_a_flag_that_was_given() -> None:
    assert merge_sets({"max_steps": None, "seed": 0}, {"max_steps": 5, "lr": 1}) == {"max_steps": 5, "seed": 0, "lr": 1}
    with pytest.raises(MedsslError, match="--set seed: the command has its own option for seed"):
        merge_sets({"seed": 0}, {"seed": 3})


def test_finetune_set_reaches_the_config_with_its_types(tmp_path: Path, calls: dict[str, Any]) -> None:
    args = ["finetune", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--max-steps", "9"]
    sets = ["--set", "lr=3e-4", "--set", "flip_axes=[0,1]", "--set", "scale_range=[0.9, 1.1]"]
    result = CliRunner().invoke(app, [*args, *sets], env=ENV)
    assert result.exit_code == 0, result.output
    cfg = calls["finetune"]
    assert cfg.lr == 3e-4 and cfg.flip_axes == [0, 1] and cfg.scale_range == [0.9, 1.1] and cfg.max_steps == 9
    result = CliRunner().invoke(app, [*args, "--set", "lr=3e-4", "--set", "learning_rate=1"], env=ENV)
    assert isinstance(result.exception, MedsslError)
    message = str(result.exception)
    assert "learning_rate of segmentation system 'supervised'" in message and "flip_axes" in message  # known keys
    result = CliRunner().invoke(app, [*args, "--set", "max_steps=3"], env=ENV)
    assert isinstance(result.exception, MedsslError) and "own option for max_steps" in str(result.exception)


def test_pretrain_set_reaches_config_fields_and_method_options(tmp_path: Path, calls: dict[str, Any]) -> None:
    args = ["pretrain", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--method", "simclr"]
    result = CliRunner().invoke(app, [*args, "--set", "temperature=0.5", "--set", "warmup_steps=3"], env=ENV)
    assert result.exit_code == 0, result.output
    assert calls["pretrain"]["temperature"] == 0.5 and calls["pretrain"]["warmup_steps"] == 3
    result = CliRunner().invoke(app, [*args, "--set", "temperatur=0.5"], env=ENV)
    assert isinstance(result.exception, MedsslError)
    assert "temperatur of pretraining method 'simclr'" in str(result.exception)


# --------------------------------------------------------------------------------------------------- medssl list


def test_list_options_shows_each_option_with_its_default_and_doc() -> None:
    result = CliRunner().invoke(app, ["list", "pretraining", "--options"], env=ENV)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "temperature: float = 0.1  NT-Xent temperature." in lines
    assert "sampling_ratio: int | None = 2  RoIAlign points per bin and axis" in "\n".join(lines)
    plain = CliRunner().invoke(app, ["list", "pretraining"], env=ENV).output
    assert "temperature" not in plain
    segmentation = CliRunner().invoke(app, ["list", "segmentation", "--options"], env=ENV).output
    assert "(no options of its own)" in segmentation
