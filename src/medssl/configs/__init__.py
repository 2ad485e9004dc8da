"""Presets shipped with medssl: YAML files that ``--config NAME`` (and ``config=NAME`` in ``medssl.api``) reads like
a file of the same options.

A preset's name is its file stem, and its first word names the configuration it holds: ``finetune*`` a
``FinetuneConfig``, ``pretrain-*`` a ``PretrainConfig``, ``label-efficiency*`` a ``LabelEfficiencyConfig``,
``segment-*`` the settings of a label-free method (``medssl segment``; its ``method`` key names which),
``superres-*`` a ``SuperResConfig`` (``medssl superres train``; its ``system`` key names the system). Its first
comment line says what it is for (``medssl list presets`` prints it). A preset is one new ``*.yaml`` file here:
the package data of ``pyproject.toml`` ships every one, and ``tests/test_presets.py`` resolves every one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medssl.errors import MedsslError

__all__ = ["find_config", "preset_command", "preset_path", "presets"]

_SUFFIX = ".yaml"
#: The first word of a preset's name -> the command that reads it.
_COMMANDS = {
    "finetune": "finetune",
    "pretrain": "pretrain",
    "label": "experiment label-efficiency",
    "segment": "segment",
    "superres": "superres train",
}


def presets() -> dict[str, str]:
    """Every shipped preset: name -> its first comment line (empty when it has none), sorted by name."""
    found: dict[str, str] = {}
    for item in resources.files(__name__).iterdir():
        if item.is_file() and item.name.endswith(_SUFFIX):
            found[item.name.removesuffix(_SUFFIX)] = _first_comment(item.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def preset_path(name: str) -> Path:
    """The file of the shipped preset ``name``.

    Raises:
        MedsslError: no preset has that name (the message lists the shipped ones).
    """
    known = presets()
    if name not in known:
        raise MedsslError(f"no preset named {name!r}; shipped presets: {', '.join(known)}")
    # a package installed from a wheel or in editable mode is a folder, so the resource is a real file
    return Path(str(resources.files(__name__).joinpath(name + _SUFFIX)))


def preset_command(name: str) -> str:
    """The command whose ``--config`` takes preset ``name`` (``finetune``, ``pretrain``, ...), from its first word."""
    return _COMMANDS.get(name.split("-")[0], "")


def find_config(path_or_name: str | Path) -> Path:
    """``path_or_name`` itself when it is a file, else the shipped preset of that name.

    Raises:
        MedsslError: neither a file nor a preset; one line with the shipped presets.
    """
    path = Path(path_or_name)
    if path.is_file():
        return path
    known = presets()
    if str(path_or_name) in known:
        return preset_path(str(path_or_name))
    raise MedsslError(
        f"config file not found: {path_or_name} (nor a preset shipped with medssl: {', '.join(known)}; "
        "`medssl list presets` says what each is for)"
    )


def _first_comment(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():  # the description must come before the first option
            return ""
    return ""
