"""Plausible wrong answers lose points on their own cell; valid alternatives earn full marks.

Each ``tests/wrong_answers/<slug>.cells.yml`` maps solution cells to ``wrong`` and ``valid``
answers (a name and a source each). This module checks the specs themselves: a ready lesson, real
solution cells, enough answers per exercise, Python that compiles. The answers are tried in
tests/test_lessons.py, in the one walk of each lesson's reference notebook that also tries the
untouched cells (tests/answer_harness.py): each wrong answer must fail at least one test cell
that grades it, each valid answer must pass all of them.
"""

from __future__ import annotations

from pathlib import Path

from answer_harness import cell_answers, check_sources, graded_spans

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
SPECS = sorted((ROOT / "tests" / "wrong_answers").glob("*.cells.yml"))
#: Solution cells that are quizzes (answers checked against the key), not coding exercises: they
#: need only wrong answers here, since a valid one would copy the answer key into the tests.
QUIZ_PREFIXES = ("quiz", "answers_")


def _slug(spec: Path) -> str:
    return spec.name.removesuffix(".cells.yml")


def test_every_cells_spec_is_complete_and_compiles() -> None:
    """Each spec names a ready lesson's solution cells, and every coding exercise in it has at
    least three wrong answers and one valid one, all of them Python that compiles."""
    ready = {lesson.slug for lesson in COURSE.ready_lessons}
    assert SPECS, "no per-cell answers found"
    for spec in SPECS:
        slug = _slug(spec)
        assert slug in ready, f"{spec.name}: no such ready lesson"
        answers = cell_answers(spec)
        check_sources(slug, answers)
        for cell in {a.cell for a in answers}:
            wrong = [a for a in answers if a.cell == cell and a.name.startswith("wrong:")]
            valid = [a for a in answers if a.cell == cell and a.name.startswith("valid:")]
            quiz = cell.startswith(QUIZ_PREFIXES)
            needed, needed_valid = (1, 0) if quiz else (3, 1)
            assert len(wrong) >= needed and len(valid) >= needed_valid, (
                f"{spec.name}: cell {cell!r} has {len(wrong)} wrong and {len(valid)} valid answers; "
                f"expected at least {needed} wrong and {needed_valid} valid"
            )
        assert set(graded_spans(slug)), f"{spec.name}: {slug} has no solution cells"
