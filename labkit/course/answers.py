"""Answer checks for check-your-understanding questions, keyed by a per-cohort secret.

A hidden test cell asks ``check_answer("00-q1", q1)`` (or ``check_number("08-q4", q4,
tolerance=0.005)``): the notebook holds no answer and no hash of one. The right answers live in
the instructor's key file ``instructor/answer_key.yml`` beside ``course.yml`` (outside every
nbgrader assignment folder, so ``generate_assignment`` never releases it) and the check compares
sealed values:

* the **cohort secret** (32 random bytes from :mod:`secrets`; ``labkit cohort init`` writes it
  to ``.labkit/cohort.key`` with mode 0600, or the instructor sets ``LABKIT_COHORT_SECRET``)
  is stretched by HKDF-SHA256 into one key per lesson;
* a lesson's **sealed key** holds, for each question, ``HMAC-SHA256(lesson key, qid || 0 ||
  normalised answer)``; a numeric answer is rounded to a grid of a tenth of its tolerance
  first, and the check MACs the ~21 grid points within the tolerance of the learner's value.

Changing the secret re-keys every lesson: sealed keys exported before no longer match. Where a
check finds its key:

1. ``LABKIT_ANSWER_KEY_DIR`` (set by the grader's trusted process): the sealed key of the
   question's lesson written there by :func:`export_key`. Nothing else is tried; set but empty,
   it means a grading run without a key, and every check raises :class:`AnswerKeyError`.
2. The instructor's key file of the course (``LABKIT_COURSE``, else the working directory or its
   parents; where that course has no key, as in a scratch copy that nbgrader grades in, the
   checkout labkit was installed from), sealed in memory with the cohort secret; where the
   instructor set none, with a random secret that lives only in this process. A process that
   reads the plain key gains nothing from the secret, so running a solution notebook or
   ``lk.course.autograde`` needs none; exporting a key for the grader's sandbox does.
3. Neither (a learner's own copy): :class:`AnswerKeyError` says that the check needs the
   instructor's key. Learner copies have no such checks; their visible format checks need none.

Answers are normalised before sealing: strings case- and whitespace-insensitively, lists and
sets regardless of order; numbers within a tolerance, anything that is not a finite number is
wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import numbers
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_DIR_ENV",
    "SECRET_ENV",
    "AnswerKeyError",
    "Expected",
    "SealedKey",
    "answer_hash",
    "answer_key_path",
    "check_answer",
    "check_number",
    "cohort_secret",
    "expect_raises",
    "export_key",
    "init_cohort_secret",
    "lesson_key",
    "load_answer_key",
    "number_hash",
    "seal",
    "secret_path",
]

KEY_DIR_ENV = "LABKIT_ANSWER_KEY_DIR"
SECRET_ENV = "LABKIT_COHORT_SECRET"
KEY_FILE = Path("instructor") / "answer_key.yml"
SECRET_FILE = Path(".labkit") / "cohort.key"
SEALED_FORMAT = "labkit-sealed-answer-key/1"
_MIN_SECRET = 32  # characters of LABKIT_COHORT_SECRET / hex digits of cohort.key, at least

# A numeric answer is stored rounded to a grid of tolerance / _GRID: fine enough that the
# tolerance is honoured to within 5%, coarse enough that a check MACs only ~2 * _GRID points.
_GRID = 10


class AnswerKeyError(RuntimeError):
    """The answer key or the cohort secret is missing, unreadable or does not fit the question."""


def _normalise(answer: object) -> str:
    if isinstance(answer, str):
        return " ".join(answer.strip().lower().split())
    if isinstance(answer, list | tuple | set | frozenset):
        return ",".join(sorted(_normalise(a) for a in answer))
    if isinstance(answer, bool) or answer is None:
        return str(answer).lower()
    return str(answer)


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


def _grid_point(index: int, step: float) -> str:
    return f"number:{index}*{step!r}"


def _grid(value: float, tolerance: float) -> range:
    """Grid indices within ``tolerance`` of ``value`` (grid step ``tolerance / _GRID``)."""
    step = tolerance / _GRID
    return range(math.ceil((value - tolerance) / step), math.floor((value + tolerance) / step) + 1)


def _lesson_of(question: str) -> str:
    lesson, sep, rest = question.partition("-")
    if not (sep and rest and lesson.isdigit() and len(lesson) == 2):
        raise ValueError(f"question ids look like '00-q1' (lesson id, dash, name), got {question!r}")
    return lesson


# --------------------------------------------------------------------------- the plain key


@dataclass(frozen=True)
class Expected:
    """One right answer of the instructor's key: a value, or a number with its tolerance."""

    value: object
    tolerance: float | None = None


def answer_key_path(course_root: str | os.PathLike[str]) -> Path:
    """Where the instructor's key file of the course at ``course_root`` lives."""
    return Path(course_root) / KEY_FILE


def load_answer_key(course_root: str | os.PathLike[str]) -> dict[str, Expected]:
    """Question id -> right answer, from ``instructor/answer_key.yml`` of the course.

    The file maps ``questions`` to ``{qid: answer}``; an answer is a string, a list of strings,
    or ``{number: <value>, tolerance: <positive number>}``.
    """
    path = answer_key_path(course_root)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnswerKeyError(f"{path}: the instructor's answer key is not there") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise AnswerKeyError(f"{path}: cannot read the answer key ({err})") from None
    questions = raw.get("questions") if isinstance(raw, dict) else None
    if not isinstance(questions, dict):
        raise AnswerKeyError(f"{path}: expected a mapping 'questions: {{qid: answer}}'")
    key: dict[str, Expected] = {}
    for qid, answer in questions.items():
        where = f"{path}: questions[{qid!r}]"
        try:
            _lesson_of(str(qid))
        except ValueError as err:
            raise AnswerKeyError(f"{where}: {err}") from None
        if isinstance(answer, dict):
            if set(answer) != {"number", "tolerance"} or _as_number(answer["number"]) is None:
                raise AnswerKeyError(
                    f"{where}: expected {{number: <finite number>, tolerance: <number > 0>}}"
                )
            try:
                tol = _check_tolerance(answer["tolerance"])
            except (TypeError, ValueError) as err:
                raise AnswerKeyError(f"{where}: {err}") from None
            key[str(qid)] = Expected(float(answer["number"]), tol)
        elif answer is None or isinstance(answer, float):
            raise AnswerKeyError(f"{where}: a number needs a tolerance ({{number: ..., tolerance: ...}})")
        elif isinstance(answer, bool):
            raise AnswerKeyError(
                f"{where}: YAML read {answer!r} as a boolean; quote the answer ('yes', 'no')"
            )
        else:
            key[str(qid)] = Expected(answer)
    return key


# --------------------------------------------------------------------------- the cohort secret


def secret_path(course_root: str | os.PathLike[str]) -> Path:
    """Where ``labkit cohort init`` keeps the cohort secret of the course at ``course_root``."""
    return Path(course_root) / SECRET_FILE


def cohort_secret(course_root: str | os.PathLike[str] | None) -> bytes | None:
    """The cohort secret: ``LABKIT_COHORT_SECRET``, else ``.labkit/cohort.key``, else None.

    Raises :class:`AnswerKeyError` for a secret that is too short or a key file that others
    can read.
    """
    env = os.environ.get(SECRET_ENV)
    if env is not None:
        if len(env.strip()) < _MIN_SECRET:
            raise AnswerKeyError(
                f"{SECRET_ENV} is too short ({len(env.strip())} characters, at least {_MIN_SECRET} "
                "expected); generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return env.strip().encode()
    if course_root is None:
        return None
    path = secret_path(course_root)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AnswerKeyError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise AnswerKeyError(f"{path}: expected the hex secret written by 'labkit cohort init'") from None
    if len(text) < _MIN_SECRET:
        raise AnswerKeyError(f"{path}: the secret is too short; run 'labkit cohort init --force'")
    return secret


def init_cohort_secret(course_root: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write a new random cohort secret to ``.labkit/cohort.key`` (mode 0600) and return its path.

    An existing secret is kept unless ``force``: a new one re-keys every lesson, so keys already
    exported for grading stop matching.
    """
    path = secret_path(course_root)
    if path.exists() and not force:
        raise AnswerKeyError(
            f"{path} already exists; a new secret re-keys every lesson (pass --force to replace it)"
        )
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secrets.token_hex(32) + "\n")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- sealing


def lesson_key(secret: bytes, lesson: str) -> bytes:
    """The HMAC key of ``lesson``, derived from the cohort ``secret`` with HKDF-SHA256.

    A sealed key exported for one lesson holds only this key: it opens no other lesson and
    does not give the cohort secret away.
    """
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"labkit answer key {lesson}".encode())
    return hkdf.derive(secret)


@dataclass(frozen=True)
class SealedKey:
    """What a check of one lesson's questions needs: the lesson key and a MAC per question.

    ``questions`` maps a question id to ``(mac, tolerance)``; ``tolerance`` is None for a
    non-numeric answer. Whoever holds a sealed key can test guesses against it: it belongs in
    the grader's trusted process, never where learner code runs.
    """

    lesson: str
    key: bytes
    questions: Mapping[str, tuple[str, float | None]]

    def mac(self, question: str, normalised: str) -> str:
        message = question.encode() + b"\x00" + normalised.encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def expected(self, question: str) -> tuple[str, float | None]:
        try:
            return self.questions[question]
        except KeyError:
            raise AnswerKeyError(
                f"the answer key of lesson {self.lesson} has no question {question!r}; "
                "add it to instructor/answer_key.yml"
            ) from None

    def to_json(self) -> str:
        questions = {q: {"mac": m, "tolerance": t} for q, (m, t) in sorted(self.questions.items())}
        return json.dumps(
            {"format": SEALED_FORMAT, "lesson": self.lesson, "key": self.key.hex(), "questions": questions}
        )

    @classmethod
    def from_json(cls, text: str, *, source: str = "sealed key") -> SealedKey:
        try:
            raw = json.loads(text)
            if raw.get("format") != SEALED_FORMAT:
                raise ValueError(f"format is {raw.get('format')!r}, expected {SEALED_FORMAT!r}")
            questions = {
                str(q): (str(v["mac"]), None if v["tolerance"] is None else float(v["tolerance"]))
                for q, v in raw["questions"].items()
            }
            return cls(str(raw["lesson"]), bytes.fromhex(raw["key"]), questions)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise AnswerKeyError(f"{source}: not a sealed answer key ({err})") from None


def seal(key: Mapping[str, Expected], secret: bytes, lesson: str) -> SealedKey:
    """The sealed key of ``lesson``'s questions in ``key``, under the cohort ``secret``."""
    sealed = SealedKey(lesson, lesson_key(secret, lesson), {})
    questions: dict[str, tuple[str, float | None]] = {}
    for qid, expected in key.items():
        if _lesson_of(qid) != lesson:
            continue
        if expected.tolerance is None:
            questions[qid] = (sealed.mac(qid, _normalise(expected.value)), None)
        else:
            step = expected.tolerance / _GRID
            point = _grid_point(round(float(expected.value) / step), step)  # type: ignore[arg-type]
            questions[qid] = (sealed.mac(qid, point), expected.tolerance)
    return SealedKey(lesson, sealed.key, questions)


def _sealed_file(dest: Path, lesson: str) -> Path:
    return dest / f"answer-key-{lesson}.json"


def export_key(course_root: Path, lesson_slug: str, dest: Path) -> None:
    """Write the sealed key of one lesson into the existing folder ``dest``, for grading.

    The grader's trusted process points ``LABKIT_ANSWER_KEY_DIR`` at ``dest``; the checks there
    read ``dest/answer-key-<lesson id>.json`` (mode 0600) and nothing else. Exporting needs the
    cohort secret (``labkit cohort init`` or ``LABKIT_COHORT_SECRET``): without one it raises
    :class:`AnswerKeyError` rather than grade under a throwaway secret.
    """
    from labkit.course.manifest import load_course

    course = load_course(Path(course_root) / "course.yml")
    try:
        lesson = course.lesson(lesson_slug).id
    except KeyError as err:
        raise AnswerKeyError(str(err.args[0])) from None
    dest = Path(dest)
    if not dest.is_dir():
        raise AnswerKeyError(f"{dest}: the folder for the answer key does not exist")
    secret = cohort_secret(course.root)
    if secret is None:
        raise AnswerKeyError(
            f"no cohort secret for {course.root}: run 'labkit cohort init' there or set {SECRET_ENV}"
        )
    sealed = seal(load_answer_key(course.root), secret, lesson)
    out = _sealed_file(dest, lesson)
    out.unlink(missing_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(sealed.to_json())


_PROCESS_SECRET: list[bytes] = []  # a random secret for instructor-side checks without a cohort secret
_SEALED_CACHE: dict[tuple[str, int, int, str, str], SealedKey] = {}


def _course_root() -> Path | None:
    """The course whose answer key a check reads: the one ``find_course_file`` names
    (``LABKIT_COURSE``, the working directory or its parents), else, for a scratch copy of a
    course without its key (an nbgrader run in a temporary folder), the checkout labkit was
    installed from. None where neither has a key."""
    from labkit.course.manifest import find_course_file, installed_course_file

    for found in (find_course_file(), installed_course_file()):
        if found is not None and answer_key_path(found.resolve().parent).is_file():
            return found.resolve().parent
    return None


def _sealed_for(question: str) -> SealedKey:
    """The sealed key that checks ``question`` (see the module docstring for the order)."""
    lesson = _lesson_of(question)
    folder = os.environ.get(KEY_DIR_ENV)
    if folder is not None and not folder.strip():
        raise AnswerKeyError(
            f"{KEY_DIR_ENV} is set but empty: this grading run has no exported answer key for lesson "
            f"{lesson} (export_key needs the cohort secret: 'labkit cohort init' or {SECRET_ENV})"
        )
    if folder:
        path = _sealed_file(Path(folder), lesson)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise AnswerKeyError(
                f"{KEY_DIR_ENV} is set but the sealed key of lesson {lesson} cannot be read ({err}); "
                "the grader writes it with labkit.course.answers.export_key"
            ) from None
        sealed = SealedKey.from_json(text, source=str(path))
        if sealed.lesson != lesson:
            raise AnswerKeyError(f"{path} is the key of lesson {sealed.lesson}, not {lesson}")
        return sealed
    root = _course_root()
    if root is None:
        raise AnswerKeyError(
            f"{question} is checked against the instructor's answer key, which this copy of the "
            "course does not have: hidden checks run when the instructor grades (run the "
            "visible checks to test the format of your answers)"
        )
    secret = cohort_secret(root)
    if secret is None:
        if not _PROCESS_SECRET:
            _PROCESS_SECRET.append(secrets.token_bytes(32))
        secret = _PROCESS_SECRET[0]
    info = answer_key_path(root).stat()
    stamp = (str(root), info.st_mtime_ns, info.st_size, hashlib.sha256(secret).hexdigest(), lesson)
    if stamp not in _SEALED_CACHE:
        _SEALED_CACHE.clear()  # one course and lesson at a time: a notebook checks one lesson
        _SEALED_CACHE[stamp] = seal(load_answer_key(root), secret, lesson)
    return _SEALED_CACHE[stamp]


# --------------------------------------------------------------------------- the checks


def check_answer(question: str, answer: object, expected_hash: str | None = None) -> bool:
    """True when ``answer`` is the right answer to ``question`` in the (sealed) answer key.

    Strings count case- and whitespace-insensitively; lists and sets regardless of order. Raises
    :class:`AnswerKeyError` where no key can be found (a learner's own copy of the course).

    ``expected_hash`` is the old public-salt form (:func:`answer_hash`): anyone can invert it by
    trying the options, so no notebook of this course uses it any more.

    Examples
    --------
    >>> check_answer("00-q1", " B "), check_answer("00-q1", "a")   # run inside the instructor's course
    (True, False)
    """
    if expected_hash is not None:
        return hmac.compare_digest(answer_hash(question, answer), expected_hash)
    sealed = _sealed_for(question)
    mac, tolerance = sealed.expected(question)
    if tolerance is not None:
        raise AnswerKeyError(
            f"{question} has a numeric answer: check it with check_number(..., tolerance=...)"
        )
    return hmac.compare_digest(sealed.mac(question, _normalise(answer)), mac)


def check_number(
    question: str, value: object, expected_hash: str | None = None, *, tolerance: float | None = None
) -> bool:
    """True when ``value`` is within the tolerance of the numeric answer to ``question``.

    The key stores the answer rounded to a tenth of its tolerance, so values up to 0.95
    ``tolerance`` away from the exact answer are always accepted and values more than 1.05
    ``tolerance`` away never are. Anything that is not a finite number (a string, ``None``, NaN,
    a list) is wrong; NumPy numbers and one-element tensors count as numbers. A ``tolerance``
    given here must be the key's (it documents the check in the notebook).

    ``expected_hash`` is the old public-salt form (:func:`number_hash`, ``tolerance`` required).

    Examples
    --------
    >>> check_number("08-q4", 0.812, tolerance=0.005), check_number("08-q4", "0.81", tolerance=0.005)
    (True, False)
    """
    if expected_hash is not None:
        if tolerance is None:
            raise TypeError("check_number with an expected hash needs tolerance=")
        tol = _check_tolerance(tolerance)
        number = _as_number(value)
        return number is not None and any(
            hmac.compare_digest(_legacy_grid_hash(question, k, tol / _GRID), expected_hash)
            for k in _grid(number, tol)
        )
    if tolerance is not None:
        _check_tolerance(tolerance)
    sealed = _sealed_for(question)
    mac, key_tolerance = sealed.expected(question)
    if key_tolerance is None:
        raise AnswerKeyError(f"{question} does not have a numeric answer: check it with check_answer")
    if tolerance is not None and not math.isclose(float(tolerance), key_tolerance):
        raise AnswerKeyError(
            f"{question}: the check says tolerance={tolerance!r} but the answer key says {key_tolerance!r}"
        )
    number = _as_number(value)
    if number is None:
        return False
    step = key_tolerance / _GRID
    return any(
        hmac.compare_digest(sealed.mac(question, _grid_point(k, step)), mac)
        for k in _grid(number, key_tolerance)
    )


# --------------------------------------------------------------------------- legacy hashes


def answer_hash(question: str, answer: object) -> str:
    """A short public-salt hash of ``answer`` (legacy: anyone can invert it by trying options).

    Kept for old notebooks only; the course's checks use the keyed :func:`check_answer`.

    Examples
    --------
    >>> answer_hash("q1", " B ") == answer_hash("q1", "b")
    True
    >>> answer_hash("q1", ["a", "c"]) == answer_hash("q1", ("c", "A"))
    True
    """
    digest = hashlib.sha256(f"labkit:{question}:{_normalise(answer)}".encode())
    return digest.hexdigest()[:16]


def _legacy_grid_hash(question: str, index: int, step: float) -> str:
    return answer_hash(question, _grid_point(index, step))


def number_hash(question: str, answer: float, *, tolerance: float) -> str:
    """A public-salt hash of the numeric ``answer`` (legacy form of :func:`check_number`).

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
    return _legacy_grid_hash(question, round(number / step), step)


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
