"""Keyed answer checks: the sealed key, the cohort secret, export for the grader, no key at all.

A scratch course (the real course.yml and a small answer key) under ``tmp_path`` stands in for
the instructor's checkout; ``LABKIT_COURSE`` points at it.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import nbformat
import pytest

from labkit.cli import main
from labkit.course import answers
from labkit.course.answers import AnswerKeyError, check_answer, check_number, export_key

ROOT = Path(__file__).resolve().parents[1]
SECRET = "0123456789abcdef" * 4
KEY_TEXT = """format: labkit-answer-key/1
questions:
  00-q1: b
  00-q2: AML.M0003
  00-q4: [evasion, extraction, inversion, prompt injection]
  00-q9: {number: 0.25, tolerance: 0.01}
  01-q1: c
"""


@pytest.fixture
def course(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "course"
    (root / "instructor").mkdir(parents=True)
    shutil.copy(ROOT / "course.yml", root / "course.yml")
    (root / "instructor" / "answer_key.yml").write_text(KEY_TEXT)
    monkeypatch.setenv("LABKIT_COURSE", str(root / "course.yml"))
    monkeypatch.delenv(answers.KEY_DIR_ENV, raising=False)
    monkeypatch.delenv(answers.SECRET_ENV, raising=False)
    return root


def test_answers_are_normalised(course: Path) -> None:
    assert check_answer("00-q1", "  B ") and not check_answer("00-q1", "c")
    assert check_answer("00-q2", "aml.m0003") and not check_answer("00-q2", "AML.M0006")
    assert check_answer("00-q4", {"prompt injection", "Inversion", "extraction", "evasion"})
    assert not check_answer("00-q4", ["evasion", "extraction", "inversion"])
    assert not check_answer("01-q1", "b"), "another lesson's right letter is not this one's"


def test_numbers_within_the_tolerance_only_and_non_numbers_wrong(course: Path) -> None:
    np = pytest.importorskip("numpy")
    for value in (0.25, 0.2405, 0.2595, np.float64(0.251)):
        assert check_number("00-q9", value, tolerance=0.01), value
        assert check_number("00-q9", value), "the tolerance comes from the key"
    for value in (0.2394, 0.2606, -0.25, "0.25", None, True, float("nan"), [0.25]):
        assert not check_number("00-q9", value, tolerance=0.01), repr(value)
    with pytest.raises(AnswerKeyError, match="the answer key says 0.01"):
        check_number("00-q9", 0.25, tolerance=0.5)
    with pytest.raises(AnswerKeyError, match="check_number"):
        check_answer("00-q9", 0.25)
    with pytest.raises(AnswerKeyError, match="check_answer"):
        check_number("00-q1", 1.0)


def test_a_copy_without_the_key_says_so(course: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """labkit installed from a learner distribution: neither the course nor the install has a key."""
    monkeypatch.setattr("labkit.course.manifest.installed_course_file", lambda: None)
    (course / "instructor" / "answer_key.yml").unlink()
    with pytest.raises(
        AnswerKeyError, match="instructor's answer key, which this copy of the course does not have"
    ):
        check_answer("00-q1", "b")
    with pytest.raises(ValueError, match="question ids look like '00-q1'"):
        check_answer("q1", "b")


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("00-q1: 0.5", "a number needs a tolerance"),
        ("00-q1: {number: 0.5}", "expected {number"),
        ("00-q1: {number: 0.5, tolerance: 0}", "tolerance must be a finite number > 0"),
        ("00-q1: yes", "quote the answer"),
        ("q1: b", "question ids look like '00-q1'"),
    ],
)
def test_a_bad_key_entry_is_named(course: Path, entry: str, match: str) -> None:
    (course / "instructor" / "answer_key.yml").write_text(f"questions:\n  {entry}\n")
    with pytest.raises(
        AnswerKeyError, match=re.escape("answer_key.yml: questions[") + ".*" + re.escape(match)
    ):
        answers.load_answer_key(course)


def test_a_scratch_copy_without_the_key_reads_the_installed_checkouts(
    course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nbgrader grades in a temporary copy of the course (manifest and sources only)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copy(course / "course.yml", scratch / "course.yml")
    monkeypatch.setenv("LABKIT_COURSE", str(scratch / "course.yml"))
    monkeypatch.setattr("labkit.course.manifest.installed_course_file", lambda: course / "course.yml")
    assert check_answer("00-q1", "b") and not check_answer("00-q1", "a")


def test_a_question_missing_from_the_key_is_named(course: Path) -> None:
    with pytest.raises(AnswerKeyError, match="no question '00-q7'"):
        check_answer("00-q7", "b")


def test_the_export_needs_a_cohort_secret(course: Path, tmp_path: Path) -> None:
    with pytest.raises(AnswerKeyError, match="no cohort secret.*labkit cohort init"):
        export_key(course, "00-welcome", tmp_path)
    assert not list(tmp_path.glob("answer-key-*")), "nothing is written without a secret"


def test_the_exported_key_checks_in_the_grader_and_reveals_no_answer(
    course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(answers.SECRET_ENV, SECRET)
    dest = tmp_path / "grader"
    dest.mkdir()
    export_key(course, "00-welcome", dest)
    (path,) = dest.iterdir()
    assert path.name == "answer-key-00.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "AML.M0003" not in text and "aml.m0003" not in text and "evasion" not in text
    assert answers.answer_hash("00-q1", "b") not in text, "no public-salt hash either"
    assert set(json.loads(text)["questions"]) == {"00-q1", "00-q2", "00-q4", "00-q9"}, "this lesson only"
    # the grader's process: the key folder only, no course, no secret
    monkeypatch.setenv(answers.KEY_DIR_ENV, str(dest))
    monkeypatch.setenv("LABKIT_COURSE", str(tmp_path / "nowhere" / "course.yml"))
    monkeypatch.delenv(answers.SECRET_ENV)
    assert check_answer("00-q1", "B") and not check_answer("00-q1", "a")
    assert check_number("00-q9", 0.255, tolerance=0.01) and not check_number("00-q9", 0.3, tolerance=0.01)
    with pytest.raises(AnswerKeyError, match="sealed key of lesson 01 cannot be read"):
        check_answer("01-q1", "c")
    # a grading run whose export failed: no fallback to the course's key, even where there is one
    monkeypatch.setenv(answers.KEY_DIR_ENV, "")
    monkeypatch.setenv("LABKIT_COURSE", str(course / "course.yml"))
    with pytest.raises(AnswerKeyError, match="set but empty"):
        check_answer("00-q1", "b")


def test_a_new_secret_rekeys_every_lesson(
    course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = answers.load_answer_key(course)
    one = answers.seal(key, SECRET.encode(), "00")
    two = answers.seal(key, ("f" * 64).encode(), "00")
    assert one.questions.keys() == two.questions.keys()
    assert all(one.questions[q][0] != two.questions[q][0] for q in one.questions)
    # a key exported under one secret, its MACs put in another's file: nothing matches
    mixed = answers.SealedKey("00", two.key, one.questions)
    dest = tmp_path / "mixed"
    dest.mkdir()
    (dest / "answer-key-00.json").write_text(mixed.to_json())
    monkeypatch.setenv(answers.KEY_DIR_ENV, str(dest))
    assert not check_answer("00-q1", "b")


def test_the_cohort_secret_file(course: Path) -> None:
    assert main(["cohort", "init", "--course", str(course)]) == 0
    path = answers.secret_path(course)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    first = answers.cohort_secret(course)
    assert first is not None and len(first) == 32
    assert main(["cohort", "init", "--course", str(course)]) == 2, "an existing secret is kept"
    assert answers.cohort_secret(course) == first
    assert main(["cohort", "init", "--course", str(course), "--force"]) == 0
    assert answers.cohort_secret(course) != first
    path.chmod(0o644)
    with pytest.raises(AnswerKeyError, match="readable by others"):
        answers.cohort_secret(course)


def test_a_short_environment_secret_is_refused(course: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(answers.SECRET_ENV, "hunter2")
    with pytest.raises(AnswerKeyError, match="too short"):
        answers.cohort_secret(course)


def test_the_cli_exports_a_lesson_key(course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(answers.SECRET_ENV, SECRET)
    dest = tmp_path / "out"
    dest.mkdir()
    assert main(["cohort", "export", "01", str(dest), "--course", str(course)]) == 0
    assert json.loads((dest / "answer-key-01.json").read_text())["lesson"] == "01"


# ----------------------------------------------------------------- the course's own notebooks and key

_CALL = re.compile(r"check_(?:answer|number)\(\s*\"([^\"]+)\"")
_HASH = re.compile(r"check_(?:answer|number)\([^\n]*\"[0-9a-f]{16}\"")
SOURCES = sorted((ROOT / "solutions").glob("*/*.ipynb"))


def test_the_notebooks_hold_no_answer_hash_and_the_key_covers_every_check() -> None:
    key = answers.load_answer_key(ROOT)
    asked: set[str] = set()
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not _HASH.search(text), f"{path.parent.name}: a check still carries an answer hash"
        for cell in nbformat.read(path, as_version=4).cells:
            asked.update(_CALL.findall(cell.source))
    assert asked, "no checks found: the pattern no longer matches the notebooks"
    assert sorted(asked - set(key)) == [], "checks without an answer in instructor/answer_key.yml"
    assert sorted(set(key) - asked) == [], "answers in the key that no notebook checks"


def test_the_key_lives_outside_every_assignment_folder() -> None:
    key = answers.answer_key_path(ROOT).resolve()
    assert (ROOT / "solutions") not in key.parents and (ROOT / "lessons") not in key.parents
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".labkit/" in ignored, "the cohort secret's folder must never be committed"
