"""Lightning Trainer options checked before a run writes anything, and Lightning's chatter kept off the terminal.

``check_trainer_options`` turns a bad ``--accelerator``, ``--devices``, ``--num-nodes`` or ``--precision`` into
one ``MedsslError`` line before any file is written (Lightning would raise a traceback from inside the run).
``make_trainer`` builds every Trainer of medssl: a ``QuietTrainer``, whose construction and ``fit`` /
``validate`` / ``test`` / ``predict`` run inside ``quiet_lightning()``, so that the "GPU available" / "TPU
available" lines, the litlogger tip, "`Trainer.fit` stopped" and known deprecation noise of Lightning's own code
do not print on every run, while its real warnings (and our progress bars) still do.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from medssl.errors import MedsslError

__all__ = [
    "ACCELERATORS",
    "PRECISIONS",
    "QuietTrainer",
    "check_trainer_options",
    "make_trainer",
    "quiet_lightning",
    "resolve_precision",
]

#: Accepted ``--accelerator`` values (``gpu`` and ``cuda`` are the same).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _precisions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Lightning's precision names, and its older aliases (``32``, ``bf16``, ...) that it still accepts."""
    from lightning.fabric import connector

    return typing.get_args(connector._PRECISION_INPUT_STR), typing.get_args(connector._PRECISION_INPUT_STR_ALIAS)


#: Accepted ``--precision`` values: ``auto`` (``resolve_precision``) and Lightning's (its older aliases such as
#: ``32`` are accepted too).
PRECISIONS = ("auto", *_precisions()[0])

# Lightning's rank-zero logger (the "GPU available" lines and the litlogger tip are INFO records on it).
_RANK_ZERO_LOGGERS = (
    "lightning_utilities.core.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
)
# INFO records still shown: why a run stopped early, and how many processes a multi-device run started.
_KEEP_INFO = re.compile(r"Time limit reached|All distributed processes registered")
# (message regex, category) of warnings that Lightning's or torch's own code raises on every run.
_NOISE = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # lightning's _pytree on torch >= 2.9
)


class _DropInfo(logging.Filter):
    """Drops INFO and DEBUG records except the ones matching ``_KEEP_INFO``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(_KEEP_INFO.search(record.getMessage()))


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Inside: Lightning's rank-zero INFO lines and the warnings in ``_NOISE`` are dropped; warnings and errors
    from anywhere else pass as usual. Filters and warning settings are restored on exit."""
    drop = _DropInfo()
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for message, category in _NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


class QuietTrainer(L.Trainer):
    """A ``lightning.Trainer`` whose construction and runs happen inside ``quiet_lightning()``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with quiet_lightning():
            super().__init__(*args, **kwargs)

    def fit(self, *args: Any, **kwargs: Any) -> None:
        with quiet_lightning():
            super().fit(*args, **kwargs)

    def validate(self, *args: Any, **kwargs: Any) -> Any:
        with quiet_lightning():
            return super().validate(*args, **kwargs)

    def test(self, *args: Any, **kwargs: Any) -> Any:
        with quiet_lightning():
            return super().test(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with quiet_lightning():
            return super().predict(*args, **kwargs)


def make_trainer(**kwargs: Any) -> L.Trainer:
    """A ``QuietTrainer(**kwargs)``, ``precision="auto"`` resolved (``resolve_precision``); Lightning's refusals of
    the options raise ``MedsslError``.

    Raises:
        MedsslError: "cannot set up training: <Lightning's reason>" (``check_trainer_options`` catches the
            usual mistakes earlier, with a clearer message).
    """
    if "precision" in kwargs:
        kwargs["precision"] = resolve_precision(kwargs["precision"], kwargs.get("accelerator", "auto"))
    try:
        return QuietTrainer(**kwargs)
    except (MisconfigurationException, ImportError, ValueError, TypeError, RuntimeError) as exc:
        raise MedsslError(f"cannot set up training: {exc}") from None


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto``: ``bf16-mixed`` where training runs on a CPU with bf16 instructions (AVX512-BF16 or AMX), where it
    was measured to take less than half the time of float32 for about the same Dice (``docs/benchmarks.md``);
    ``32-true`` elsewhere, GPUs included (not measured here: pass ``bf16-mixed`` or ``16-mixed`` there). Any other
    value is returned as it is."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if _check_accelerator(accelerator) == "cpu" and cpu_has_native_bf16() else "32-true"


def check_trainer_options(
    accelerator: str = "auto", devices: int | str = 1, precision: str = "32-true", num_nodes: int = 1
) -> None:
    """Refuse Trainer options that cannot run on this machine, one line each, before anything is written.

    Args:
        accelerator: ``--accelerator`` (one of ``ACCELERATORS``).
        devices: ``--devices``: a number of devices, ``auto``, ``-1`` (every GPU), or GPU ids such as ``0,1``.
        precision: ``--precision`` (one of ``PRECISIONS``; ``auto`` is checked as what it resolves to).
        num_nodes: ``--num-nodes``.

    Raises:
        MedsslError: unknown or unavailable accelerator, bad devices or node count, unknown precision, or any
            other combination Lightning refuses.
    """
    kind = _check_accelerator(accelerator)
    _check_devices(devices, kind)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise MedsslError(f"--num-nodes must be at least 1, not {num_nodes!r}")
    _check_precision(precision)
    precision = resolve_precision(precision, accelerator)
    if str(precision).startswith("bf16") and kind == "cpu" and cpu_has_native_bf16() is False:
        warnings.warn(
            f"--precision {precision} on a CPU without bf16 instructions (no AVX512-BF16 or AMX in /proc/cpuinfo): "
            "its bf16 matrix products are emulated, about a hundred times slower than float32 here; use 32-true",
            UserWarning,
            stacklevel=2,
        )
    # Whatever Lightning still refuses (a combination of the above): ask it, without its chatter or warnings.
    try:
        with quiet_lightning(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            L.Trainer(
                accelerator=accelerator,
                devices=devices,
                num_nodes=num_nodes,
                precision=precision,  # type: ignore[arg-type]
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    except (MisconfigurationException, ImportError, ValueError, TypeError, RuntimeError) as exc:
        raise MedsslError(
            f"cannot train with --accelerator {accelerator} --devices {devices} --precision {precision}: {exc}"
        ) from None


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), from ``/proc/cpuinfo``; None where that
    cannot be read (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def _check_accelerator(accelerator: str) -> str:
    """The kind of device ``accelerator`` resolves to on this machine (``cpu``, ``cuda``, ``mps`` or ``tpu``)."""
    name = accelerator.lower() if isinstance(accelerator, str) else accelerator
    if name not in ACCELERATORS:
        raise MedsslError(f"unknown accelerator {accelerator!r} (--accelerator); known: {', '.join(ACCELERATORS)}")
    has = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "tpu": importlib.util.find_spec("torch_xla") is not None,
    }
    kind = "cuda" if name == "gpu" else name
    if kind == "auto":
        return next((k for k in ("cuda", "tpu", "mps") if has[k]), "cpu")
    what = {"cuda": "GPU", "mps": "Apple MPS device", "tpu": "TPU support (torch_xla)"}
    if kind in has and not has[kind]:
        raise MedsslError(
            f"no {what[kind]} on this machine (--accelerator {accelerator}); use --accelerator cpu or auto"
        )
    return kind


def _check_devices(devices: int | str, kind: str) -> None:
    usage = "a number of devices (1, 2, ...), 'auto', or GPU ids such as 0,1"
    if isinstance(devices, bool):
        raise MedsslError(f"--devices must be {usage}; not {devices!r}")
    text = str(devices).strip()
    if text == "auto":
        return
    ids: list[int] | None = None
    if re.fullmatch(r"-?\d+", text):
        count = int(text)
    elif re.fullmatch(r"\d+(\s*,\s*\d+)*\s*,?", text):
        ids = [int(t) for t in text.split(",") if t.strip()]
        count = len(ids)
    else:
        raise MedsslError(f"--devices must be {usage}; not {devices!r}")
    if count == 0 or count < -1:
        raise MedsslError(f"--devices must be at least 1 (or -1: every GPU, or 'auto'), not {devices!r}")
    if kind != "cuda":
        if ids is not None or count == -1:
            raise MedsslError(f"--devices {devices}: GPU ids and -1 need a GPU; on {kind} give a number of processes")
        return
    available = torch.cuda.device_count()
    if count > available or (ids is not None and max(ids) >= available):
        raise MedsslError(f"--devices {devices}: this machine has {available} GPU(s) (ids 0 to {available - 1})")


def _check_precision(precision: str) -> None:
    if str(precision) not in (*PRECISIONS, *_precisions()[1]):
        raise MedsslError(f"unknown precision {precision!r} (--precision); valid: {', '.join(PRECISIONS)}")
    if str(precision).startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise MedsslError(f"--precision {precision} needs NVIDIA's transformer_engine package, which is not installed")
