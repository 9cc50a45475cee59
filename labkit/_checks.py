"""Argument checks shared by the whole library: the one home of argument validation.

Each check returns the value in its plain Python type, or raises with a message that names
the argument, says what was expected and shows what was given: ``TypeError`` for the wrong
kind of value, ``ValueError`` for the right kind out of range. ``bool`` is never accepted as
a number.

>>> check_int(3, "steps", minimum=0)
3
>>> check_int(2.5, "steps")
Traceback (most recent call last):
...
TypeError: steps must be an integer, got float
>>> check_number(0, "temperature")
Traceback (most recent call last):
...
ValueError: temperature must be a finite number > 0, got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection

import torch

__all__ = [
    "check_choice",
    "check_fraction",
    "check_generator",
    "check_int",
    "check_number",
    "check_positive",
]


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``, within ``[minimum, maximum]`` (either end optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    number = int(value)
    if maximum is not None and minimum is not None and not minimum <= number <= maximum:
        raise ValueError(f"{name} must be in {minimum}..{maximum}, got {number}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {number}")
    return number


def check_number(value: object, name: str, *, low: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite ``float`` above ``low`` (``strict``) or at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (number <= low if strict else number < low):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")
    return number


def check_positive(value: object, name: str) -> float:
    """``value`` as a finite, strictly positive ``float`` (a step size, a rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return number


def check_fraction(value: object, name: str) -> float:
    """``value`` as a ``float`` in ``[0, 1]``."""
    number = check_number(value, name, strict=False)
    if number > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def check_choice(value: object, name: str, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_generator(generator: object) -> torch.Generator | None:
    """``generator`` if it is ``None`` or a :class:`torch.Generator`, else ``TypeError``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
