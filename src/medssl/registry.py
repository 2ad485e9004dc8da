"""One explicit registry of what medssl can run, by kind: pretraining methods, segmentation systems, label-free
methods, evaluation protocols (and, later, super-resolution systems).

A module registers its classes with ``@register(kind, name)`` and other objects (functions, configurations) with
``register_object(kind, name, obj)``; ``get(kind, name)``, ``names(kind)`` and ``kinds()`` read the registry, and
``medssl list`` prints it. Each kind names the modules that register it (``_KINDS``); they are imported the first
time the kind is read, so importing this module stays cheap (no torch) and the CLI starts fast.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from medssl.errors import MedsslError

__all__ = [
    "describe",
    "get",
    "insert",
    "kind_noun",
    "kinds",
    "names",
    "register",
    "register_object",
    "table",
    "unknown_name",
    "used_by",
]

T = TypeVar("T", bound=type[Any])


@dataclass(frozen=True)
class _Kind:
    noun: str  # one entry, in messages: "unknown <noun> 'x'; known <noun>s: ..."
    used_by: str  # where a user chooses one, shown by `medssl list`
    modules: tuple[str, ...]  # imported on first use; they register the built-in entries


_KINDS: dict[str, _Kind] = {
    "pretraining": _Kind("pretraining method", "medssl pretrain --method", ("medssl.pretrain",)),
    "segmentation": _Kind(
        "segmentation system",
        "medssl finetune",
        (
            "medssl.segment.supervised",
            "medssl.segment.adversarial",
            "medssl.segment.dodnet",
            "medssl.segment.partial_baselines",
            "medssl.segment.mrnet",
            "medssl.segment.rater_mean",
        ),
    ),
    "label-free": _Kind(
        "label-free method", "medssl segment --method", ("medssl.labelfree.kmeans", "medssl.labelfree.s3")
    ),
    "evaluation": _Kind(
        "protocol", "medssl evaluate --protocol", ("medssl.evaluation.scoring", "medssl.labelfree.protocols")
    ),
    "super-resolution": _Kind("super-resolution system", "medssl superres train --system", ("medssl.superres.system",)),
}
_OBJECTS: dict[str, dict[str, Any]] = {kind: {} for kind in _KINDS}
_DESCRIPTIONS: dict[tuple[str, str], str] = {}
_LOADED: set[str] = set()


def kinds() -> list[str]:
    """The kinds of the registry, in a fixed order (pretraining, segmentation, label-free, evaluation, ...)."""
    return list(_KINDS)


def kind_noun(kind: str) -> str:
    """What one entry of ``kind`` is called in messages, e.g. ``"pretraining method"``."""
    return _kind(kind).noun


def used_by(kind: str) -> str:
    """Where a user chooses an entry of ``kind`` (a command and option), for ``medssl list``."""
    return _kind(kind).used_by


def table(kind: str) -> dict[str, Any]:
    """The live name -> object dict of ``kind``, without importing its modules (for thin per-kind layers such as
    ``medssl.pretrain.registry``; everything else should use ``get`` and ``names``)."""
    _kind(kind)
    return _OBJECTS[kind]


def insert(into: dict[str, Any], kind: str, name: str, obj: Any, description: str | None = None) -> None:
    """Add ``obj`` under ``name`` to ``into`` (``table(kind)``, or a test's copy of it).

    Raises:
        ValueError: ``name`` is empty or already registered in ``into``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in into:
        raise ValueError(f"{kind_noun(kind)} {name!r} is already registered (by {_label(into[name])})")
    into[name] = obj
    if description is not None:
        _DESCRIPTIONS[kind, name] = description


def register_object(kind: str, name: str, obj: Any, *, description: str | None = None) -> None:
    """Register ``obj`` (a function, a configuration, an instance) as ``name`` of ``kind``.

    Args:
        kind: one of ``kinds()``.
        name: the name users type; unique within the kind.
        obj: what ``get(kind, name)`` returns.
        description: one line for ``medssl list``; default: the first line of the object's docstring (or its
            ``description`` attribute).

    Raises:
        MedsslError: unknown kind.
        ValueError: ``name`` is empty or already registered for ``kind``.
    """
    insert(table(kind), kind, name, obj, description)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: register the class as ``name`` of ``kind`` (see ``register_object``)."""
    _kind(kind)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(cls: T) -> T:
        register_object(kind, name, cls)
        return cls

    return decorator


def names(kind: str) -> list[str]:
    """The names registered for ``kind``, sorted.

    Raises:
        MedsslError: unknown kind.
    """
    _load(kind)
    return sorted(_OBJECTS[kind])


def get(kind: str, name: str) -> Any:
    """The object registered as ``name`` of ``kind``.

    Raises:
        MedsslError: unknown kind, or unknown name (the message lists the known names of the kind).
    """
    _load(kind)
    try:
        return _OBJECTS[kind][name]
    except KeyError:
        raise unknown_name(kind, name, names(kind)) from None


def describe(kind: str, name: str) -> str:
    """One line about ``name`` of ``kind``: the description given when it was registered, else its
    ``description`` attribute, else the first line of its docstring (empty when it has none)."""
    obj = get(kind, name)
    text = _DESCRIPTIONS.get((kind, name))
    if text is None:
        attribute = getattr(obj, "description", None)
        text = attribute if isinstance(attribute, str) else inspect.getdoc(obj) or ""
    return text.strip().split("\n\n")[0].replace("\n", " ")


def unknown_name(kind: str, name: str, known: list[str]) -> MedsslError:
    """The error for an unknown ``name`` of ``kind``, listing ``known``."""
    noun = kind_noun(kind)
    return MedsslError(f"unknown {noun} {name!r}; known {noun}s: {', '.join(known) or 'none'}")


def _kind(kind: str) -> _Kind:
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        raise MedsslError(f"unknown registry kind {kind!r}; known kinds: {', '.join(_KINDS)}") from None


def _load(kind: str) -> None:
    """Import the modules that register ``kind``'s built-in entries, once."""
    for module in _kind(kind).modules:
        if module not in _LOADED:
            _LOADED.add(module)  # first, so that a module that reads the registry while it registers does not recurse
            try:
                importlib.import_module(module)
            except BaseException:
                _LOADED.discard(module)
                raise


def _label(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or type(obj).__qualname__)
