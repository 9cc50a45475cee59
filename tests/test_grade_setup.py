"""Before ``labkit grade`` grades anyone, the lessons' answer checks must be keyable."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

import labkit as lk
from labkit.course.classroom import AnswerKeyUnavailable, prepare_answer_key

ROOT = Path(__file__).resolve().parents[1]
SLUG = "00-welcome"
# Test cells course.yml may score in the learner's kernel: none (24 before the checker learned to
# call back into itself and to rebuild labkit dataclasses, 5 before it ran lesson functions that
# call learner functions only inside their bodies, 1 before a Campaign crossed as its journal).
MAX_KERNEL_TESTS = 0


def _course(tmp_path: Path, *, key: bool) -> lk.course.Course:
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy2(ROOT / "course.yml", course / "course.yml")
    shutil.copytree(ROOT / "solutions" / SLUG, course / "solutions" / SLUG)
    if key:
        shutil.copytree(ROOT / "instructor", course / "instructor")
    return lk.course.load_course(course / "course.yml")


def test_a_course_without_its_answer_key_is_refused_before_grading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABKIT_COHORT_SECRET", raising=False)
    course = _course(tmp_path, key=False)
    with pytest.raises(AnswerKeyUnavailable, match=r"answer_key\.yml does not exist"):
        prepare_answer_key(course, [course.lesson(SLUG)])
    assert not (course.root / ".labkit").exists()


def test_the_first_grading_run_creates_a_private_cohort_secret_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LABKIT_COHORT_SECRET", raising=False)
    course = _course(tmp_path, key=True)
    made = prepare_answer_key(course, [course.lesson(SLUG)])
    assert made == course.root / ".labkit" / "cohort.key"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert "created this course's cohort secret" in capsys.readouterr().err
    secret = made.read_bytes()
    assert prepare_answer_key(course, [course.lesson(SLUG)]) is None  # kept, not replaced
    assert made.read_bytes() == secret
    dest = tmp_path / "key"
    dest.mkdir()
    lk.course.answers.export_key(course.root, SLUG, dest)  # the grader can now seal the key
    assert list(dest.iterdir())


def test_a_secret_others_can_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABKIT_COHORT_SECRET", raising=False)
    course = _course(tmp_path, key=True)
    made = prepare_answer_key(course, [course.lesson(SLUG)])
    assert made is not None
    made.chmod(0o644)
    with pytest.raises(AnswerKeyUnavailable, match="readable by others"):
        prepare_answer_key(course, [course.lesson(SLUG)])


def test_kernel_scored_tests_are_real_test_cells_and_never_quiz_cells() -> None:
    """``kernel_tests`` in course.yml names test cells of the lesson; none checks quiz answers."""
    import nbformat

    course = lk.course.load_course(ROOT / "course.yml")
    listed = 0
    for lesson in course.ready_lessons:
        nb = nbformat.read(ROOT / "solutions" / lesson.slug / str(lesson.notebook), as_version=4)
        tests = {
            str(meta.get("grade_id")): cell.source
            for cell in nb.cells
            if (meta := cell.metadata.get("nbgrader", {})).get("grade") and not meta.get("solution")
        }
        for grade_id in lesson.kernel_tests:
            listed += 1
            assert grade_id in tests, f"{lesson.slug}: kernel_tests names {grade_id!r}, not a test cell"
            assert "check_answer(" not in tests[grade_id] and "check_number(" not in tests[grade_id], (
                f"{lesson.slug}: {grade_id} checks answers against the key, which only the checker holds"
            )
    assert listed <= MAX_KERNEL_TESTS, (
        f"{listed} test cells are scored in the learner's kernel, more than the {MAX_KERNEL_TESTS} that "
        "still need it: teach labkit.course.remote to pass what the new ones need instead"
    )
    exam = course.lesson("17")
    assert exam.kernel_tests == (), "every exam test cell is scored by the trusted checker"
