"""Checking a view generator's settings: sizes, scales, probabilities and intensity ops."""

from __future__ import annotations

from collections.abc import Sequence

IntensityOp = tuple[float, float, float]
"""An intensity op's settings ``(p, low, high)``: applied with probability ``p``, parameter ~ U(low, high)."""


def _is_probability(p: object) -> bool:
    return isinstance(p, int | float) and not isinstance(p, bool) and 0.0 <= p <= 1.0


def _size(name: str, size: int | Sequence[int], d: int) -> tuple[int, ...]:
    values = [size] * d if isinstance(size, int) else list(size)
    if len(values) != d or not all(isinstance(s, int) and s > 0 for s in values):
        raise ValueError(f"{name} must be a positive int or {d} positive ints, got {size!r}")
    return tuple(int(s) for s in values)


def _scale(name: str, scale: tuple[float, float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0.0 < scale[0] <= scale[1]:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {scale!r}")
    return float(scale[0]), float(scale[1])


def _op(name: str, op: IntensityOp, *, minimum: float, strict: bool = False) -> IntensityOp:
    """Validate ``(p, low, high)``: p in [0, 1], minimum <= low <= high (``<`` for strict)."""
    ok = len(op) == 3 and _is_probability(op[0]) and op[1] <= op[2]
    ok = ok and (op[1] > minimum if strict else op[1] >= minimum)
    if not ok:
        bound = "<" if strict else "<="
        raise ValueError(
            f"{name} must be (p, low, high) with p in [0, 1] and {minimum} {bound} low <= high, got {op!r}"
        )
    return float(op[0]), float(op[1]), float(op[2])


def _multi_crop(
    spec: Sequence[tuple[int, int | Sequence[int], tuple[float, float]]] | None, d: int
) -> list[tuple[int, tuple[int, ...], tuple[float, float]]]:
    out = []
    for entry in spec or []:
        if len(entry) != 3 or not isinstance(entry[0], int) or entry[0] < 1:
            raise ValueError(f"multi_crop entries must be (n_views >= 1, out_size, scale), got {entry!r}")
        out.append((entry[0], _size("multi_crop", entry[1], d), _scale("multi_crop", entry[2])))
    return out
