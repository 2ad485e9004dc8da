"""Layered run configuration: dataclass defaults < YAML file or shipped preset < command-line overrides.

Components never receive a config object: the API unpacks the resolved fields into keyword arguments. The
resolved configuration is written into every run folder as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from medssl.configs import find_config
from medssl.errors import MedsslError
from medssl.option_types import TypeMismatch, describe_type, typed_value

T = TypeVar("T")


@dataclass
class FinetuneConfig:
    """Supervised fine-tuning settings; ``None`` means "take it from the dataset plan".

    Attributes:
        max_steps: optimiser steps in total.
        val_interval: steps between validations (and checkpoint decisions).
        checkpoint_interval: steps between saves of ``checkpoints/last.ckpt`` between validations (each validation
            saves it too), so that a run killed outright (SIGKILL, a lost node) loses at most this many steps when
            resumed with ``--resume``; each save writes the whole checkpoint (weights and optimiser state).
        batch_size: patches per step.
        patch_size: training patch (and sliding-window) size per spatial axis.
        channels: U-Net widths per scale.
        target_spacing: resample the images to this spacing per axis (default: the plan's; PNG and other images
            without a physical spacing have spacing 1, so ``[2, 2]`` halves their resolution; predictions and test
            scores are on each image's own grid).
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
        patience: stop at a validation plateau: after this many validations in a row without a validation Dice
            above the best so far by more than ``min_delta`` (None: train ``max_steps``; ``max_steps`` stays the
            upper bound). ``result.json`` says why training stopped and holds the validation curve.
        min_delta: the smallest gain in validation Dice that counts as an improvement for ``patience``.
        system: the registered segmentation system to train (``medssl list segmentation``).
        system_options: that system's own options (``medssl list segmentation --options``).
        unlabelled: a folder of images without labels (any layout ``medssl pretrain`` reads) for a system that
            trains on unlabelled images (``System.uses_unlabelled``; other systems ignore it, with a warning). Such
            a system also gets the training cases whose labels the run does not use (``--label-fraction`` below 1).
            An image without a mask inside the labelled dataset stays a data problem (a forgotten mask must not
            silently become an unlabelled image): put unlabelled images in this folder instead. Its images may not
            be the dataset's validation or test images, and need the dataset's channels and dimensionality.
    """

    max_steps: int = 2000
    val_interval: int = 200
    checkpoint_interval: int = 50
    batch_size: int | None = None
    patch_size: list[int] | None = None
    channels: list[int] | None = None
    target_spacing: list[float] | None = None
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
    patience: int | None = None
    min_delta: float = 0.001
    system: str = "supervised"
    system_options: dict[str, Any] = field(default_factory=dict)
    unlabelled: str | None = None


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
        target_spacing: resample the images to this spacing per axis (default: the plan's); ``medssl finetune
            --init`` should use the same, so that the encoder sees the scale it learnt.
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
    target_spacing: list[float] | None = None
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
        fractions: shares of the training labels to fine-tune with, each in (0, 1] (used when ``labelled`` is
            not set).
        labelled: numbers of labelled training cases to fine-tune with, each at least 1, or ``all`` (every
            training case); when set, ``fractions`` is ignored. A number above the training cases of the split is
            refused. The subsets of one seed are nested and every run is scored on the same test cases.
        seeds: fine-tuning seeds per method and amount of labels (0, 1, ...); a seed fixes the labelled subset and
            the decoder initialisation, so the runs of different methods with one seed are paired.
        pretrain_steps: optimiser steps of each pretraining run.
        finetune_steps: the most optimiser steps of a fine-tuning run (it stops earlier at a validation plateau,
            see ``patience``).
        val_interval: steps between validations of every fine-tuning run (``finetune.val_interval``, when given,
            takes its place).
        patience: stop a fine-tuning run after this many validations in a row without a gain in validation Dice
            above ``min_delta`` (None: every run trains ``finetune_steps``). The same schedule for every method,
            so that each is compared at its plateau and not where a fixed budget happens to end.
        min_delta: the smallest gain in validation Dice that counts for ``patience``.
        target_spacing: resample the images to this spacing per axis in pretraining and fine-tuning (default: the
            plan's); e.g. ``[2, 2]`` halves the resolution of PNG images.
        batch_size, patch_size, channels: shared by pretraining and fine-tuning so that encoders transfer
            (default: the plan of the training images); ``batch_size`` may also be set per stage.
        precision: Lightning precision of every run (``bf16-mixed`` is faster on CPUs with bf16 support).
        pretrain: ``PretrainConfig`` options for every pretraining run (``lr``, ``schedule``, ``batch_size``).
        method_options: per method, its keyword arguments (``{"simclr": {"temperature": 0.2}}``).
        finetune: ``FinetuneConfig`` options for every fine-tuning run (``lr``, ``val_interval``, ...).
    """

    methods: list[str] = field(default_factory=lambda: ["random", "simclr", "byol", "vae", "autoencoder"])
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 1.0])
    labelled: list[int | Literal["all"]] | None = None
    seeds: int = 3
    pretrain_steps: int = 1000
    finetune_steps: int = 3000
    val_interval: int = 50
    patience: int | None = 5
    min_delta: float = 0.001
    target_spacing: list[float] | None = None
    batch_size: int | None = None
    patch_size: list[int] | None = None
    channels: list[int] | None = None
    precision: str = "32-true"
    pretrain: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from a file or a preset shipped with medssl (``medssl list presets``); neither, bad YAML
    or a non-mapping raise ``MedsslError``."""
    p = find_config(path)
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

    Every value is checked against its field's type annotation and, where ``BOUNDS`` has one, its range.

    Raises:
        MedsslError: one line naming the option (and the YAML file it came from): an option the dataclass does
            not have (with the known ones), a value of the wrong type, or one out of range.
    """
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    if yaml_path is not None:
        values.update(load_yaml(yaml_path))
        where = {key: f" (in {yaml_path})" for key in values}
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    where = {k: w for k, w in where.items() if k not in given}
    values = check_options(cls, values, where=where)
    try:
        config = cls(**values)
    except TypeError as exc:
        raise MedsslError(f"bad configuration: {exc}") from None
    _check_relations(config, where)
    return config


def default_of(cls: type[Any], name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls`` (for help texts that must not drift)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    raise KeyError(name)


def check_options(
    cls: type[Any], values: dict[str, Any], *, prefix: str = "", where: dict[str, str] | None = None
) -> dict[str, Any]:
    """``values`` with each checked against the field of ``cls`` it sets: known name, annotated type, range.

    Integers are accepted for float fields, and so are strings such as ``1e-3`` (YAML 1.1, which PyYAML
    follows, reads a float without a dot as a string); tuples become lists.

    Args:
        cls: the dataclass the options belong to.
        values: option name -> value.
        prefix: prepended to names in messages (``finetune.`` for the options nested in an experiment).
        where: per option, text appended to its message (the file it came from).

    Raises:
        MedsslError: one line naming the first bad option.
    """
    where = where or {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        shown = ", ".join(prefix + k for k in unknown)
        raise MedsslError(f"unknown option(s) {shown}{where.get(unknown[0], '')}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    bounds = BOUNDS.get(cls, {})
    nested = NESTED.get(cls, {})
    checked: dict[str, Any] = {}
    for key, value in values.items():
        name, context = prefix + key, where.get(key, "")
        try:
            typed = typed_value(value, hints[key])
        except TypeMismatch:
            raise MedsslError(f"{name} must be {describe_type(hints[key])}, not {value!r}{context}") from None
        bound = bounds.get(key)
        if bound is not None and typed is not None:
            numbers = typed if isinstance(typed, list) else [typed]
            if not all(bound.admits(x) for x in numbers):
                every = "every value of " if isinstance(typed, list) else ""
                raise MedsslError(f"{every}{name} must be {bound}, not {value!r}{context}")
        if key in nested:
            typed = check_options(nested[key], typed, prefix=f"{name}.", where=dict.fromkeys(typed, context))
        checked[key] = typed
    return checked


@dataclass(frozen=True)
class Bound:
    """The interval a number option (or every number of a list option) must lie in."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, x: float) -> bool:
        """Whether ``x`` lies in the interval (never for NaN or infinity)."""
        if not math.isfinite(x) or x < self.low or (self.low_open and x == self.low):
            return False
        return self.high is None or x < self.high or (not self.high_open and x == self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"greater than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


_AT_LEAST_1 = Bound(1)
_NON_NEGATIVE = Bound(0)
_POSITIVE = Bound(0, low_open=True)
_PROBABILITY = Bound(0, 1)
_BELOW_1 = Bound(0, 1, high_open=True)
_SHARE = Bound(0, 1, low_open=True)
_SIZES = {"batch_size": _AT_LEAST_1, "patch_size": _AT_LEAST_1, "channels": _AT_LEAST_1, "target_spacing": _POSITIVE}

#: Per config class, the range of each number option (each number of a list option) that has one.
BOUNDS: dict[type[Any], dict[str, Bound]] = {
    FinetuneConfig: {
        "max_steps": _AT_LEAST_1,
        "val_interval": _AT_LEAST_1,
        "checkpoint_interval": _AT_LEAST_1,
        **_SIZES,
        "lr": _POSITIVE,
        "weight_decay": _NON_NEGATIVE,
        "foreground_fraction": _PROBABILITY,
        "flip_axes": Bound(0, 2),
        "rotate_degrees": Bound(0, 180),
        "scale_range": _POSITIVE,
        "affine_probability": _PROBABILITY,
        "intensity_probability": _PROBABILITY,
        "split_seed": _NON_NEGATIVE,
        "test_fraction": _BELOW_1,
        "val_fraction": _BELOW_1,
        "sw_overlap": _BELOW_1,
        "max_val_cases": _AT_LEAST_1,
        "overlay_cases": _NON_NEGATIVE,
        "max_minutes": _POSITIVE,
        "patience": _AT_LEAST_1,
        "min_delta": _NON_NEGATIVE,
    },
    PretrainConfig: {
        "max_steps": _AT_LEAST_1,
        **_SIZES,
        "lr": _POSITIVE,
        "weight_decay": _NON_NEGATIVE,
        "warmup_steps": _NON_NEGATIVE,
        "log_interval": _AT_LEAST_1,
        "checkpoint_interval": _AT_LEAST_1,
        "max_minutes": _POSITIVE,
    },
    LabelEfficiencyConfig: {
        "fractions": _SHARE,
        "seeds": _AT_LEAST_1,
        "pretrain_steps": _AT_LEAST_1,
        "finetune_steps": _AT_LEAST_1,
        "val_interval": _AT_LEAST_1,
        "patience": _AT_LEAST_1,
        "min_delta": _NON_NEGATIVE,
        **_SIZES,
    },
}

#: Options that hold the options of another config class (checked field by field, named ``outer.inner``).
NESTED: dict[type[Any], dict[str, type[Any]]] = {
    LabelEfficiencyConfig: {"pretrain": PretrainConfig, "finetune": FinetuneConfig},
}


def _check_relations(config: Any, where: dict[str, str]) -> None:
    """Checks that involve more than one value of an option, or two options."""
    scale = getattr(config, "scale_range", None)
    if isinstance(config, FinetuneConfig) and scale is not None and (len(scale) != 2 or scale[0] > scale[1]):
        raise MedsslError(f"scale_range must be two numbers, low first, not {scale}{where.get('scale_range', '')}")
    if isinstance(config, FinetuneConfig) and config.test_fraction + config.val_fraction >= 1:
        raise MedsslError(
            f"test_fraction ({config.test_fraction}) + val_fraction ({config.val_fraction}) must be below 1, "
            "to leave training cases"
        )


def save_config(config: Any, path: str | Path) -> None:
    """Write a dataclass as YAML."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
