"""Explicit registry of pretraining methods: ``@register(name)`` on the class, ``create(name, **kwargs)``, ``names()``.

Importing ``medssl.pretrain`` registers the built-in methods; the classes stay usable directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from medssl.errors import MedsslError
from medssl.pretrain.base import PretrainMethod

__all__ = ["create", "get", "names", "register"]

_METHODS: dict[str, type[PretrainMethod]] = {}
M = TypeVar("M", bound=type[PretrainMethod])


def register(name: str) -> Callable[[M], M]:
    """Class decorator that registers a ``PretrainMethod`` subclass under ``name`` and sets its ``name`` attribute.

    Raises:
        ValueError: ``name`` is empty or already registered.
        TypeError: the decorated object is not a ``PretrainMethod`` subclass.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, PretrainMethod)):
            raise TypeError(f"only PretrainMethod subclasses can be registered, got {cls!r}")
        if name in _METHODS:
            raise ValueError(f"pretraining method {name!r} is already registered (by {_METHODS[name].__qualname__})")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorator


def names() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get(name: str) -> type[PretrainMethod]:
    """The class registered under ``name``.

    Raises:
        MedsslError: ``name`` is unknown; the message lists the known names.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise MedsslError(f"unknown pretraining method {name!r}; known methods: {', '.join(names())}") from None


def create(name: str, **kwargs: Any) -> PretrainMethod:
    """Build the method registered under ``name`` with keyword arguments, e.g.
    ``create("byol", spatial_dims=3, in_channels=1, momentum=0.99)``.

    Raises:
        MedsslError: ``name`` is unknown; the message lists the known names.
    """
    return get(name)(**kwargs)
