"""Configuration values and Trainer options are refused with one line naming the key, before anything is written.

Each case here was a traceback: ``max_steps: five`` and ``lr: -1`` in a YAML config, ``--accelerator gpu`` on a
machine without one, ``--accelerator tpu``.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn

from medssl import api
from medssl.cli import main
from medssl.config import FinetuneConfig, LabelEfficiencyConfig, PretrainConfig, resolve
from medssl.engine import trainer_setup
from medssl.engine.trainer_setup import (
    ACCELERATORS,
    PRECISIONS,
    check_trainer_options,
    make_trainer,
    quiet_lightning,
    resolve_precision,
)
from medssl.errors import MedsslError
from medssl.labelfree.config import resolve_method_config

HAS_GPU = torch.cuda.is_available()
HAS_XLA = importlib.util.find_spec("torch_xla") is not None


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------- config values


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("max_steps: five", ["max_steps must be an integer, not 'five'"]),
        ("lr: -1", ["lr must be greater than 0, not -1"]),
        ("weight_decay: -0.1", ["weight_decay must be at least 0"]),
        ("val_interval: 0", ["val_interval must be at least 1, not 0"]),
        ("batch_size: 2.5", ["batch_size must be an integer or null, not 2.5"]),
        ("patch_size: [64, 0]", ["every value of patch_size must be at least 1"]),
        ("patch_size: 64", ["patch_size must be a list of integers or null, not 64"]),
        ("foreground_fraction: 1.5", ["foreground_fraction must be in [0, 1], not 1.5"]),
        ("sw_overlap: 1", ["sw_overlap must be in [0, 1), not 1"]),
        ("flip_axes: [0, 3]", ["every value of flip_axes must be in [0, 2]"]),
        ("lr: fast", ["lr must be a number, not 'fast'"]),
        ("lr: true", ["lr must be a number, not True"]),
        ("max_minutes: 0", ["max_minutes must be greater than 0"]),
        ("lr: .nan", ["lr must be greater than 0, not nan"]),
        ("scale_range: [1.2, 0.8]", ["scale_range must be two numbers, low first"]),
        ("test_fraction: 0.6\nval_fraction: 0.4", ["test_fraction (0.6) + val_fraction (0.4) must be below 1"]),
    ],
)
def test_finetune_config_values(tmp_path: Path, text: str, words: list[str]) -> None:
    path = _yaml(tmp_path, text)
    with pytest.raises(MedsslError) as info:
        resolve(FinetuneConfig, path)
    message = str(info.value)
    assert "\n" not in message
    for w in words:
        assert w in message
    if "\n" not in text:  # a single key from the file: the file is named
        assert str(path) in message


def test_good_values_are_typed(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string: it is the number a user meant; ints are fine for floats."""
    cfg = resolve(FinetuneConfig, _yaml(tmp_path, "lr: 1e-3\nrotate_degrees: 10\nmax_minutes: null\n"))
    assert cfg.lr == 0.001 and isinstance(cfg.rotate_degrees, float) and cfg.max_minutes is None
    assert resolve(FinetuneConfig, None, patch_size=(32, 32)).patch_size == [32, 32]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"max_steps": 0}, "max_steps must be at least 1, not 0"),
        ({"lr": -1.0}, "lr must be greater than 0"),
        ({"warmup_steps": -5}, "warmup_steps must be at least 0"),
        ({"log_interval": 0}, "log_interval must be at least 1"),
        ({"method_options": [1, 2]}, "method_options must be a mapping"),
    ],
)
def test_pretrain_config_values(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(MedsslError, match=words.replace("(", r"\(")):
        resolve(PretrainConfig, None, **overrides)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("seeds: three", "seeds must be an integer, not 'three'"),
        ("fractions: [0, 0.5]", "every value of fractions must be in (0, 1]"),
        ("finetune_steps: 0", "finetune_steps must be at least 1"),
        ("finetune: {lr: -1}", "finetune.lr must be greater than 0"),
        ("pretrain: {warmup_steps: ten}", "pretrain.warmup_steps must be an integer"),
        ("finetune: {learning_rate: 0.1}", "unknown option(s) finetune.learning_rate"),
        ("pretrain: 5", "pretrain must be a mapping"),
    ],
)
def test_experiment_config_values(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(MedsslError) as info:
        resolve(LabelEfficiencyConfig, _yaml(tmp_path, text))
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("method", "text", "words"),
    [
        ("kmeans", "clusters: two", "clusters must be an integer or one of 'auto', not 'two'"),
        ("s3", "lr: -0.1", "lr must be greater than 0, not -0.1"),
        ("s3", "momentum: 1.5", "momentum must be in [0, 1), not 1.5"),
        ("s3", "stride: 3", "stride must be 1, 2 or 4, not 3"),
        ("s3", "weight_affine: -1", "weight_affine must not be negative"),
        ("kmeans", "restarts: 0", "restarts must be at least 1, not 0"),
        ("kmeans", "smooth_sigma: -1", "smooth_sigma must not be negative"),
        ("s3", "field_of_view: maybe", "field_of_view must be true or false"),
    ],
)
def test_label_free_config_values(tmp_path: Path, method: str, text: str, words: str) -> None:
    with pytest.raises(MedsslError) as info:
        resolve_method_config(method, _yaml(tmp_path, text))
    assert words in str(info.value)


# ------------------------------------------------------------------------------------------------ trainer options


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_gpu_without_a_gpu() -> None:
    with pytest.raises(MedsslError, match=r"^no GPU on this machine \(--accelerator gpu\); use --accelerator cpu"):
        check_trainer_options("gpu")


@pytest.mark.skipif(HAS_XLA, reason="torch_xla is installed")
def test_tpu_without_torch_xla() -> None:
    with pytest.raises(MedsslError, match=r"no TPU support \(torch_xla\) on this machine"):
        check_trainer_options("tpu")


def test_unknown_accelerator_lists_the_known_ones() -> None:
    with pytest.raises(MedsslError) as info:
        check_trainer_options("npu")
    assert "'npu'" in str(info.value) and ", ".join(ACCELERATORS) in str(info.value)


def test_bad_precision_lists_the_valid_ones() -> None:
    with pytest.raises(MedsslError) as info:
        check_trainer_options("cpu", precision="fp16")
    assert "'fp16'" in str(info.value) and all(p in str(info.value) for p in PRECISIONS)


@pytest.mark.parametrize(
    ("native", "precision", "warned"),
    [(False, "bf16-mixed", True), (True, "bf16-mixed", False), (None, "bf16-mixed", False), (False, "32-true", False)],
)
def test_bf16_on_a_cpu_without_bf16_instructions_warns(
    monkeypatch: pytest.MonkeyPatch, native: bool | None, precision: str, warned: bool
) -> None:
    monkeypatch.setattr(trainer_setup, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_trainer_options("cpu", precision=precision)
    said = [str(w.message) for w in caught if "bf16 instructions" in str(w.message)]
    assert bool(said) == warned, said
    assert not said or "use 32-true" in said[0]


@pytest.mark.parametrize(("native", "resolved"), [(True, "bf16-mixed"), (False, "32-true"), (None, "32-true")])
def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_instructions(
    monkeypatch: pytest.MonkeyPatch, native: bool | None, resolved: str
) -> None:
    monkeypatch.setattr(trainer_setup, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == resolved
    if not HAS_GPU:  # "auto" is the CPU here
        assert resolve_precision("auto") == resolved
    for given in ("32-true", "bf16-mixed", "16-mixed"):
        assert resolve_precision(given, "cpu") == given
    check_trainer_options("cpu", precision="auto")  # accepted, checked as what it resolves to


def test_cpu_bf16_detection_reads_the_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    real_path = trainer_setup.Path
    monkeypatch.setattr(trainer_setup, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert trainer_setup.cpu_has_native_bf16() is True
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert trainer_setup.cpu_has_native_bf16() is False
    cpuinfo.unlink()
    assert trainer_setup.cpu_has_native_bf16() is None


@pytest.mark.parametrize("devices", [0, -3, "two", "1.5", True])
def test_bad_devices(devices: Any) -> None:
    with pytest.raises(MedsslError, match="--devices"):
        check_trainer_options("cpu", devices=devices)


@pytest.mark.skipif(HAS_GPU, reason="GPU ids are valid on this machine")
def test_gpu_ids_need_a_gpu() -> None:
    with pytest.raises(MedsslError, match="--devices 0,1"):
        check_trainer_options("cpu", devices="0,1")


@pytest.mark.parametrize("options", [{}, {"devices": 2}, {"devices": "auto"}, {"precision": "bf16-mixed"}])
def test_good_options_pass(options: dict[str, Any]) -> None:
    check_trainer_options("cpu", **options)
    check_trainer_options("auto", **options)


def test_num_nodes() -> None:
    with pytest.raises(MedsslError, match="--num-nodes must be at least 1"):
        check_trainer_options("cpu", num_nodes=0)


def test_lightning_misconfiguration_becomes_a_medssl_error() -> None:
    """Lightning raises ``MisconfigurationException``, which is neither ValueError, RuntimeError nor TypeError."""
    with pytest.raises(MedsslError, match="cannot set up training"):
        make_trainer(accelerator="cpu", devices=0, logger=False)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda data, out: api.finetune(data, out, accelerator="tpu"), "TPU"),
        (lambda data, out: api.finetune(data, out, devices="two"), "--devices"),
        (lambda data, out: api.finetune(data, out, precision="half"), "unknown precision 'half'"),
        (lambda data, out: api.pretrain(data, out, method="simclr", precision="half"), "unknown precision"),
        (lambda data, out: api.label_efficiency(data, out, precision="half"), "unknown precision"),
        (lambda data, out: api.label_efficiency(data, out, accelerator="npu"), "unknown accelerator"),
    ],
)
def test_api_refuses_before_writing(tmp_path: Path, paired_2d: Path, call: Any, words: str) -> None:
    if words == "TPU" and HAS_XLA:
        pytest.skip("torch_xla is installed")
    out = tmp_path / "run"
    with pytest.raises(MedsslError, match=words):
        call(paired_2d, out)
    assert not out.exists()


# ------------------------------------------------------------------------------------------- one line, no traceback


@pytest.mark.parametrize(
    ("args", "config", "words"),
    [
        (["--accelerator", "gpu"], None, "no GPU on this machine"),
        (["--accelerator", "tpu"], None, "TPU"),
        ([], "max_steps: five\n", "max_steps must be an integer, not 'five'"),
        ([], "lr: -1\n", "lr must be greater than 0, not -1"),
    ],
)
def test_the_reported_tracebacks_are_one_line(
    tmp_path: Path,
    paired_2d: Path,
    args: list[str],
    config: str | None,
    words: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the command's entry point (as ``medssl`` runs it, in this process to save the start-up)."""
    if (words == "TPU" and HAS_XLA) or (words.startswith("no GPU") and HAS_GPU):
        pytest.skip("the accelerator exists here")
    out = tmp_path / "run"
    cmd = ["finetune", "--data", str(paired_2d), "--out", str(out), *args]
    if config is not None:
        cmd += ["--config", str(_yaml(tmp_path, config))]
    monkeypatch.setattr(sys, "argv", ["medssl", *cmd])
    with pytest.raises(SystemExit) as info:
        main()
    stderr = capsys.readouterr().err
    assert info.value.code == 2, stderr
    assert "Traceback" not in stderr
    assert words in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- quieting


def test_quiet_lightning_drops_chatter_and_keeps_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_lightning():
            rank_zero_info("GPU available: False, used: False")
            rank_zero_info("Time limit reached. Elapsed time is 0:01:00. Signaling Trainer to stop.")
            rank_zero_info("distributed_backend=gloo\nAll distributed processes registered. Starting with 2 processes")
            rank_zero_warn("a real problem")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        rank_zero_info("after: shown again")
    assert "GPU available" not in caplog.text
    assert "Time limit reached" in caplog.text and "after: shown again" in caplog.text and "2 processes" in caplog.text
    assert [str(w.message) for w in caught] == ["a real problem"]
