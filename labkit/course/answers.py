"""Answer checks for check-your-understanding questions.

Hidden tests compare a salted hash of the learner's answer with the hash of the right one, so
neither the test source nor a traceback in the feedback reveals the answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

__all__ = ["answer_hash", "check_answer", "expect_raises"]


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
