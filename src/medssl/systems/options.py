"""The options of a registered system, declared once: the keyword parameters of its constructor.

A pretraining method's options are the parameters of its ``__init__`` (SimCLR's ``temperature``, PGL's
``preset``); a segmentation system's are those of its ``for_run`` classmethod when it has one (the constructor
the run workflow calls), else of its ``__init__``. Their documentation is the ``Args:`` section of the Google
docstring (the class's, then its bases'). The YAML config, the api and ``--set KEY=VALUE`` all read them from
here, so a new constructor parameter is an option everywhere with no other edit.

Left out: what the engine supplies (``ENGINE_SUPPLIED``), ``*args``/``**kwargs``, and parameters whose type is no
plain value (a callable, a network): those are set in Python, not in a config file.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from medssl import registry
from medssl.errors import MedsslError
from medssl.option_types import TypeMismatch, describe_type, typed_value

__all__ = [
    "ENGINE_SUPPLIED",
    "REQUIRED",
    "Option",
    "check_system_options",
    "config_fields",
    "listed_options",
    "split_config_fields",
    "system_options",
]

#: Parameters the engine passes itself (from the data, the plan, the config and the seed); never options.
ENGINE_SUPPLIED = frozenset({"spatial_dims", "in_channels", "channels", "encoder", "plan", "cfg", "seed", "network"})
#: ``Option.default`` of an option the constructor requires.
REQUIRED: Any = inspect.Parameter.empty
_PLAIN = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Option:
    """One option of a system.

    Attributes:
        name: the keyword parameter.
        annotation: its type annotation, resolved (``float``, ``int | None``, ...).
        default: its default value (``REQUIRED`` when it has none).
        doc: its entry in the docstring's ``Args:`` section, on one line (empty when undocumented).
    """

    name: str
    annotation: Any
    default: Any
    doc: str = ""

    def describe(self) -> str:
        """``name: type = default`` (``(required)`` instead of a default)."""
        shown = "(required)" if self.default is REQUIRED else f"= {self.default!r}"
        return f"{self.name}: {_type_text(self.annotation)} {shown}"


def system_options(kind: str, name: str) -> dict[str, Option]:
    """The options of ``name`` of registry ``kind``, in declaration order.

    Raises:
        MedsslError: unknown kind or name (the registry's message).
    """
    obj = registry.get(kind, name)
    constructor: Callable[..., Any] = obj  # a registered function: its own parameters
    if isinstance(obj, type):
        constructor = getattr(obj, "for_run", None) or obj.__init__  # type: ignore[misc]
    hints = _hints(constructor)
    docs = _documented(obj, constructor)
    options: dict[str, Option] = {}
    for parameter in inspect.signature(constructor).parameters.values():
        if parameter.name in ENGINE_SUPPLIED or parameter.name == "self" or parameter.kind in _VARIADIC:
            continue
        hint = hints.get(parameter.name, Any)
        if _plain(hint):
            options[parameter.name] = Option(parameter.name, hint, parameter.default, docs.get(parameter.name, ""))
    return options


def check_system_options(
    kind: str, name: str, values: dict[str, Any], where: str = "", *, also: Iterable[str] = ()
) -> dict[str, Any]:
    """``values`` checked against the options of ``name`` of ``kind``: known names, values of the declared type.

    Args:
        kind: the registry kind (``"pretraining"``, ``"segmentation"``).
        name: the registered name.
        values: option name -> value (YAML values: lists for tuples, numeric strings for floats are converted).
        where: appended to the message (e.g. `` (in run.yaml)``).
        also: other keys the caller accepts besides these options (its config fields), listed in the message for
            an unknown key.

    Returns:
        The values converted to their option's type; sequences stay lists (as YAML writes them, so that the
        resolved config can be saved), also where a tuple is declared.

    Raises:
        MedsslError: one line: the unknown option(s) with the known ones, or the first value of the wrong type.
    """
    options = system_options(kind, name)
    noun = f"{registry.kind_noun(kind)} {name!r}"
    unknown = [key for key in values if key not in options]
    if unknown:
        known = ", ".join(options) or "none"
        others = sorted(also)
        more = f"; or one of the config's own fields: {', '.join(others)}" if others else ""
        raise MedsslError(f"unknown option(s) {', '.join(unknown)} of {noun}{where}; its options: {known}{more}")
    checked: dict[str, Any] = {}
    for key, value in values.items():
        hint = options[key].annotation
        try:
            checked[key] = typed_value(value, hint)
        except TypeMismatch:
            raise MedsslError(f"option {key} of {noun} must be {describe_type(hint)}, not {value!r}{where}") from None
    return checked


def config_fields(cls: type[Any]) -> dict[str, Option]:
    """The fields of a config dataclass as options, documented by its ``Attributes:`` section (and its bases').

    A label-free method's options are the fields of its dataclass (``S3Config``, ``KMeansConfig``).
    """
    hints = typing.get_type_hints(cls)
    docs: dict[str, str] = {}
    for source in inspect.getmro(cls):
        for key, text in _args_section(source.__doc__ or "", "Attributes:").items():
            docs.setdefault(key, text)
    options: dict[str, Option] = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        default = REQUIRED if default is dataclasses.MISSING else default
        options[f.name] = Option(f.name, hints[f.name], default, docs.get(f.name, ""))
    return options


def listed_options(kind: str, name: str) -> dict[str, Option]:
    """What ``medssl list --options`` shows for ``name`` of ``kind``: the fields of its config dataclass where it is
    configured by one (the label-free methods' ``config``), else ``system_options``."""
    config = getattr(registry.get(kind, name), "config", None)
    if isinstance(config, type) and dataclasses.is_dataclass(config):
        return config_fields(config)
    return system_options(kind, name)


def split_config_fields(cls: type[Any], values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``values`` split into the fields of the config dataclass ``cls`` and the rest (a system's options)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in fields}, {k: v for k, v in values.items() if k not in fields}


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``function``; one that cannot be resolved (a name imported for type checking
    only) is taken as ``Any`` rather than failing every other one."""
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):
        pass
    namespace = getattr(function, "__globals__", {})
    hints: dict[str, Any] = {}
    for key, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[key] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:  # an annotation that cannot be resolved only loses its type check
            hints[key] = Any
    return hints


def _plain(hint: Any) -> bool:
    """Whether values of ``hint`` can be written in YAML (numbers, strings, booleans, lists, mappings, null)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint in _PLAIN:
        return True
    if origin is Literal:
        return all(isinstance(a, _PLAIN) for a in args)
    if origin in (typing.Union, types.UnionType, list, tuple, dict, collections.abc.Sequence):
        return bool(args) and all(a is Ellipsis or _plain(a) for a in args)
    return False


def _type_text(hint: Any) -> str:
    """A short spelling of ``hint`` for listings (``float``, ``int | None``, ``list[int]``)."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None").replace("collections.abc.", "")


def _documented(obj: Any, constructor: Callable[..., Any]) -> dict[str, str]:
    """Parameter -> its ``Args:`` entry: from the constructor's docstring, the class's, then each base class's."""
    docs: dict[str, str] = {}
    sources = [constructor, *(inspect.getmro(obj) if isinstance(obj, type) else [])]
    for source in sources:
        for key, text in _args_section(getattr(source, "__doc__", None) or "").items():
            docs.setdefault(key, text)
    return docs


_ENTRY = re.compile(r"^([A-Za-z_][\w, *]*?)\s*(?:\([^)]*\))?:\s*(.*)$")


def _args_section(docstring: str, heading: str = "Args:") -> dict[str, str]:
    """The entries of a Google docstring's ``heading`` section (``Args:``, ``Attributes:``), one line each; ``a, b:
    text`` documents both."""
    entries: dict[str, str] = {}
    names: list[str] = []
    indent: int | None = None
    inside = False
    for line in inspect.cleandoc(docstring).splitlines():
        text = line.strip()
        if text == heading:
            inside, indent = True, None
            continue
        if not inside or not text:
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:  # the next section
            inside = False
            continue
        indent = depth if indent is None else indent
        entry = _ENTRY.match(text) if depth == indent else None
        if entry:
            names = [n.strip().lstrip("*") for n in entry.group(1).split(",") if n.strip()]
            entries.update(dict.fromkeys(names, entry.group(2)))
        elif depth > indent:
            entries.update({n: f"{entries[n]} {text}".strip() for n in names})
    return entries
