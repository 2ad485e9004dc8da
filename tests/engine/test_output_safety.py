"""A user error (wrong data path, a split with no validation case) must leave the output path as it was: no
empty folder created, and the run that ``--overwrite`` would replace not wiped before the error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medssl import api
from medssl.errors import MedsslError
from tests.conftest import TINY

COMMANDS: dict[str, Callable[..., Any]] = {
    "pretrain": lambda data, out, **kw: api.pretrain(data, out, method="autoencoder", max_steps=1, quiet=True, **kw),
    "finetune": lambda data, out, **kw: api.finetune(data, out, max_steps=1, quiet=True, **TINY, **kw),
    "experiment": lambda data, out, **kw: api.label_efficiency(
        data, out, methods=["random"], fractions=[1.0], seeds=1, finetune_steps=1, quiet=True, **kw
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_data_creates_nothing(command: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(MedsslError, match="does not exist"):
        COMMANDS[command](tmp_path / "no-such-data", out)
    assert not out.exists()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(command: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    with pytest.raises(MedsslError, match="does not exist"):
        COMMANDS[command](tmp_path / "no-such-data", out, overwrite=True)
    assert (out / "result.json").read_text() == "{}"


def test_finetune_split_error_keeps_the_old_run(paired_2d: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    with pytest.raises(MedsslError, match="no validation case"):
        api.finetune(paired_2d, out, max_steps=1, quiet=True, overwrite=True, val_fraction=0.0, **TINY)
    assert (out / "result.json").read_text() == "{}"
