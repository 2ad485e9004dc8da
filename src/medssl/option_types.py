"""Option values checked against their type annotations, and the annotations said in words: shared by the run
configurations (``medssl.config``) and the systems' own options (``medssl.systems.options``)."""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Literal

__all__ = ["TypeMismatch", "describe_type", "typed_value"]


class TypeMismatch(Exception):
    """A value does not match a type annotation."""


def typed_value(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int -> float, numeric string -> float, tuple -> list; a fixed-length tuple
    annotation wants that many values, a ``Literal`` one of its values), or ``TypeMismatch``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise TypeMismatch
        return value
    if origin is tuple:
        fixed = Ellipsis not in args
        if not isinstance(value, list | tuple) or (fixed and len(value) != len(args)):
            raise TypeMismatch
        return [typed_value(v, a) for v, a in zip(value, args if fixed else [args[0]] * len(value), strict=True)]
    if origin is collections.abc.Sequence:
        origin = list
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return typed_value(value, arg)
                except TypeMismatch:
                    pass
        raise TypeMismatch
    if origin is list:
        if not isinstance(value, list | tuple):
            raise TypeMismatch
        return [typed_value(v, args[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TypeMismatch
        return {k: typed_value(v, args[1]) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeMismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeMismatch
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise TypeMismatch from None
        raise TypeMismatch
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise TypeMismatch


def describe_type(hint: Any) -> str:
    """A type annotation in words (``list[int] | None`` -> ``a list of integers or null``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple and Ellipsis not in args:
        return f"a list of {len(args)} " + describe_type(list[args[0]]).removeprefix("a list of ")  # type: ignore[valid-type]
    if origin in (tuple, collections.abc.Sequence):
        origin = list
    if origin in (typing.Union, types.UnionType):
        words = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is list:
        inner = describe_type(args[0])
        return "a list of " + {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(
            inner, "values"
        )
    if origin is dict:
        return "a mapping of option: value"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")
