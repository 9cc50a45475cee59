"""Answer checks for check-your-understanding questions.

Hidden tests compare a salted hash of the learner's answer with the hash of the right one, so
neither the test source nor a traceback in the feedback reveals the answer.
"""

from __future__ import annotations

import hashlib

__all__ = ["answer_hash", "check_answer"]


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
