"""Layered run configuration: dataclass defaults < YAML file < command-line overrides.

Components never receive a config object: the API unpacks the resolved fields into keyword arguments. The
resolved configuration is written into every run folder as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medssl.errors import MedsslError

T = TypeVar("T")


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning settings; ``None`` means "take it from the dataset plan".

    Attributes:
        max_steps: optimiser steps in total.
        val_interval: steps between validations (and checkpoint decisions).
        batch_size: patches per step.
        patch_size: training patch (and sliding-window) size per spatial axis.
        channels: U-Net widths per scale.
        lr: AdamW learning rate (decayed polynomially to zero over ``max_steps``).
        weight_decay: AdamW weight decay.
        foreground_fraction: share of patches centred on a foreground voxel (nnU-Net samples 1/3).
        flip_axes: spatial axes to mirror at random (empty by default: left/right labels would swap).
        rotate_degrees: maximum in-plane rotation of the random affine augmentation.
        scale_range: random zoom range of the affine augmentation.
        affine_probability: probability that a sample gets the random affine.
        intensity_probability: probability of random brightness/contrast/noise per sample.
        split_seed: seed of the train/validation/test split (kept apart from --seed so that every seed and
            label fraction is scored on the same test cases).
        test_fraction: share of labelled cases held out for testing (fixed by the seed).
        val_fraction: share of labelled cases used for validation.
        sw_overlap: overlap of sliding-window tiles at validation and prediction.
        max_val_cases: validation cases evaluated at each validation (the first ones of the split).
        overlay_cases: test cases drawn in the overlay figure.
        max_minutes: stop training after this wall-clock time (None: only ``max_steps``).
    """

    max_steps: int = 2000
    val_interval: int = 200
    batch_size: int | None = None
    patch_size: list[int] | None = None
    channels: list[int] | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    foreground_fraction: float = 0.33
    flip_axes: list[int] = field(default_factory=list)
    rotate_degrees: float = 15.0
    scale_range: list[float] = field(default_factory=lambda: [0.85, 1.2])
    affine_probability: float = 0.3
    intensity_probability: float = 0.3
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    sw_overlap: float = 0.25
    max_val_cases: int = 20
    overlay_cases: int = 6
    max_minutes: float | None = None


@dataclass
class PretrainConfig:
    """Settings of a ``medssl pretrain`` run (written resolved into the run folder as ``config.yaml``).

    Attributes:
        method: registered pretraining method (``medssl.pretrain.names()``).
        max_steps: optimiser steps in total.
        batch_size: patches per step (default: the plan's).
        patch_size: training patch per spatial axis (default: the plan's).
        channels: encoder widths per scale (default: the plan's). ``medssl finetune --init`` needs the same
            widths, so pass the same ``channels`` to both commands.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        schedule: ``cosine`` or ``poly`` decay of the learning rate to zero over ``max_steps``.
        warmup_steps: linear warm-up steps before the decay.
        log_interval: steps between logged losses.
        checkpoint_interval: steps between ``checkpoints/last.ckpt`` updates.
        max_minutes: stop training after this wall-clock time (None: only ``max_steps``).
        method_options: keyword arguments of the method (e.g. ``temperature``, ``momentum``).
    """

    method: str = ""
    max_steps: int = 1000
    batch_size: int | None = None
    patch_size: list[int] | None = None
    channels: list[int] | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "cosine"
    warmup_steps: int = 0
    log_interval: int = 10
    checkpoint_interval: int = 250
    max_minutes: float | None = None
    method_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelEfficiencyConfig:
    """Settings of ``medssl experiment label-efficiency`` (written resolved into the experiment folder).

    Attributes:
        methods: ``random`` (no pretraining) and/or registered pretraining methods.
        fractions: shares of the training labels to fine-tune with, each in (0, 1].
        seeds: fine-tuning seeds per method and fraction (0, 1, ...); a seed fixes the labelled subset and the
            decoder initialisation, so the runs of different methods with one seed are paired.
        pretrain_steps: optimiser steps of each pretraining run.
        finetune_steps: optimiser steps of each fine-tuning run.
        batch_size, patch_size, channels: shared by pretraining and fine-tuning so that encoders transfer
            (default: the plan of the training images); ``batch_size`` may also be set per stage.
        precision: Lightning precision of every run (``bf16-mixed`` is faster on CPUs with bf16 support).
        pretrain: ``PretrainConfig`` options for every pretraining run (``lr``, ``schedule``, ``batch_size``).
        method_options: per method, its keyword arguments (``{"simclr": {"temperature": 0.2}}``).
        finetune: ``FinetuneConfig`` options for every fine-tuning run (``lr``, ``val_interval``, ...).
    """

    methods: list[str] = field(default_factory=lambda: ["random", "simclr", "byol", "vae", "autoencoder"])
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 1.0])
    seeds: int = 3
    pretrain_steps: int = 1000
    finetune_steps: int = 1000
    batch_size: int | None = None
    patch_size: list[int] | None = None
    channels: list[int] | None = None
    precision: str = "32-true"
    pretrain: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, bad YAML or a non-mapping raise ``MedsslError``."""
    p = Path(path)
    if not p.is_file():
        raise MedsslError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise MedsslError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MedsslError(f"config file {p} must hold a mapping of option: value, not {type(data).__name__}")
    return data


def resolve(cls: type[T], yaml_path: str | Path | None = None, **overrides: Any) -> T:
    """Build ``cls`` from its defaults, then the YAML file, then the non-``None`` ``overrides``.

    Raises:
        MedsslError: for an option the dataclass does not have (naming it and the known ones).
    """
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - names)
    if unknown:
        raise MedsslError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise MedsslError(f"bad configuration: {exc}") from None


def save_config(config: Any, path: str | Path) -> None:
    """Write a dataclass as YAML."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
