"""Answer checks for check-your-understanding questions.

Hidden tests compare a salted hash of the learner's answer with the hash of the right one, so
neither the test source nor a traceback in the feedback reveals the answer.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable

__all__ = ["answer_hash", "check_answer", "check_number", "expect_raises", "number_hash"]

# A numeric answer is stored rounded to a grid of tolerance / _GRID: fine enough that the
# tolerance is honoured to within 5%, coarse enough that a check hashes only ~2 * _GRID points.
_GRID = 10


def _normalise(answer: object) -> str:
    if isinstance(answer, str):
        return " ".join(answer.strip().lower().split())
    if isinstance(answer, list | tuple | set | frozenset):
        return ",".join(sorted(_normalise(a) for a in answer))
    if isinstance(answer, bool) or answer is None:
        return str(answer).lower()
    return str(answer)


def answer_hash(question: str, answer: object) -> str:
    """A short salted hash of ``answer`` for question ``question``.

    Strings are compared case- and whitespace-insensitively; lists and sets regardless of order.

    Examples
    --------
    >>> answer_hash("q1", " B ") == answer_hash("q1", "b")
    True
    >>> answer_hash("q1", ["a", "c"]) == answer_hash("q1", ("c", "A"))
    True
    """
    digest = hashlib.sha256(f"labkit:{question}:{_normalise(answer)}".encode())
    return digest.hexdigest()[:16]


def check_answer(question: str, answer: object, expected_hash: str) -> bool:
    """True when ``answer`` hashes to ``expected_hash`` for ``question``."""
    return answer_hash(question, answer) == expected_hash


def _check_tolerance(tolerance: object) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a positive number, got {type(tolerance).__name__}")
    value = float(tolerance)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    return value


def _as_number(value: object) -> float | None:
    """``value`` as a finite float, or None for strings, booleans, None, NaN and non-numbers."""
    if value is None or isinstance(value, str | bytes | bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # numpy and 0-d torch scalars convert too
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _grid_hash(question: str, index: int, step: float) -> str:
    return answer_hash(question, f"number:{index}*{step!r}")


def number_hash(question: str, answer: float, *, tolerance: float) -> str:
    """A salted hash of the numeric ``answer`` to ``question``, for :func:`check_number`.

    The answer is rounded to a multiple of ``tolerance / 10`` before hashing, so the same
    ``tolerance`` must be given to :func:`check_number`.

    Examples
    --------
    >>> h = number_hash("q7", 0.25, tolerance=0.01)
    >>> check_number("q7", 0.254, h, tolerance=0.01), check_number("q7", 0.27, h, tolerance=0.01)
    (True, False)
    """
    step = _check_tolerance(tolerance) / _GRID
    number = _as_number(answer)
    if number is None:
        raise ValueError(f"answer must be a finite number, got {answer!r}")
    return _grid_hash(question, round(number / step), step)


def check_number(question: str, value: object, expected_hash: str, *, tolerance: float) -> bool:
    """True when ``value`` is within ``tolerance`` of the answer hashed by :func:`number_hash`.

    The stored answer is rounded to a tenth of the tolerance, so values up to 0.95 ``tolerance``
    away from the exact answer are always accepted and values more than 1.05 ``tolerance`` away
    never are. Anything that is not a finite number (a string, ``None``, NaN, a list) is wrong;
    NumPy numbers and one-element tensors count as numbers.

    Examples
    --------
    >>> h = number_hash("q7", 120, tolerance=0.5)
    >>> check_number("q7", 120.0, h, tolerance=0.5), check_number("q7", "120", h, tolerance=0.5)
    (True, False)
    """
    tol = _check_tolerance(tolerance)
    step = tol / _GRID
    v = _as_number(value)
    if v is None:
        return False
    low, high = math.ceil((v - tol) / step), math.floor((v + tol) / step)
    return any(_grid_hash(question, k, step) == expected_hash for k in range(low, high + 1))


def expect_raises(
    error: type[BaseException] | tuple[type[BaseException], ...],
    func: Callable[..., object],
    *args: object,
    match: str | None = None,
    **kwargs: object,
) -> BaseException:
    """Call ``func`` and check that it raises ``error`` (for test cells in notebooks).

    Returns the exception so a test can look at it. Raises ``AssertionError`` with a readable
    message when nothing, or the wrong thing, is raised.

    Examples
    --------
    >>> expect_raises(ValueError, int, "seven")
    ValueError("invalid literal for int() with base 10: 'seven'")
    """
    import re

    names = error.__name__ if isinstance(error, type) else " or ".join(e.__name__ for e in error)
    try:
        func(*args, **kwargs)
    except error as err:
        if match is not None and not re.search(match, str(err), flags=re.IGNORECASE):
            raise AssertionError(
                f"{func.__name__} raised {type(err).__name__} as expected, but its message "
                f"{str(err)!r} does not mention {match!r}"
            ) from None
        return err
    except Exception as err:
        raise AssertionError(
            f"{func.__name__} should raise {names}, but raised {type(err).__name__}: {err}"
        ) from None
    raise AssertionError(f"{func.__name__} should raise {names}, but returned normally")
