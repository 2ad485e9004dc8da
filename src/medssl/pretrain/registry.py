"""Pretraining methods in the registry (``medssl.registry``, kind ``"pretraining"``): ``@register(name)`` on the
class, ``create(name, **kwargs)``, ``names()``.

Importing ``medssl.pretrain`` registers the built-in methods; the classes stay usable directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from medssl import registry as _registry
from medssl.pretrain.base import PretrainMethod

__all__ = ["create", "get", "names", "register"]

_KIND = "pretraining"
# The registry's own dict of this kind (tests swap in a copy to register dummies without leaking them).
_METHODS: dict[str, type[PretrainMethod]] = _registry.table(_KIND)
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
        _registry.insert(_METHODS, _KIND, name, cls)
        cls.name = name
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
        raise _registry.unknown_name(_KIND, name, names()) from None


def create(name: str, **kwargs: Any) -> PretrainMethod:
    """Build the method registered under ``name`` with keyword arguments, e.g.
    ``create("byol", spatial_dims=3, in_channels=1, momentum=0.99)``.

    Raises:
        MedsslError: ``name`` is unknown; the message lists the known names.
    """
    return get(name)(**kwargs)
