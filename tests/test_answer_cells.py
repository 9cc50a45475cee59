"""Plausible wrong answers lose points on their own cell; valid alternatives earn full marks.

For each ``tests/wrong_answers/<slug>.cells.yml`` (a mapping from solution cell to ``wrong`` and
``valid`` answers, each a name and a source), the reference notebook is walked once
(tests/answer_harness.py) and every answer is tried in place of its solution cell, graded by the
test cells that follow it. Each wrong answer must fail at least one of them; each valid answer
must pass all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from answer_harness import Answer, check_sources, graded_spans, run_answers

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
SPECS = sorted((ROOT / "tests" / "wrong_answers").glob("*.cells.yml"))
#: Solution cells that are quizzes (answers checked against the key), not coding exercises: they
#: need only wrong answers here, since a valid one would copy the answer key into the tests.
QUIZ_PREFIXES = ("quiz", "answers_")


def _slug(spec: Path) -> str:
    return spec.name.removesuffix(".cells.yml")


def _answers(spec: Path) -> list[Answer]:
    data: dict[str, Any] = yaml.safe_load(spec.read_text(encoding="utf-8"))
    answers: list[Answer] = []
    for cell, kinds in data.items():
        unknown = set(kinds) - {"wrong", "valid"}
        assert not unknown, (
            f"{spec.name}: cell {cell!r} has {sorted(unknown)}; expected only 'wrong' and 'valid'"
        )
        for kind in ("wrong", "valid"):
            answers.extend(
                Answer(cell, f"{kind}:{name}", source) for name, source in (kinds.get(kind) or {}).items()
            )
    return answers


def test_every_cells_spec_is_complete_and_compiles() -> None:
    """Each spec names a ready lesson's solution cells, and every coding exercise in it has at
    least three wrong answers and one valid one, all of them Python that compiles."""
    ready = {lesson.slug for lesson in COURSE.ready_lessons}
    assert SPECS, "no per-cell answers found"
    for spec in SPECS:
        slug = _slug(spec)
        assert slug in ready, f"{spec.name}: no such ready lesson"
        answers = _answers(spec)
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


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[_slug(s) for s in SPECS])
def test_wrong_answers_fail_and_valid_answers_pass(spec: Path) -> None:
    slug = _slug(spec)
    results = run_answers(slug, _answers(spec))
    problems = []
    for result in results:
        wrong = result.answer.name.startswith("wrong:")
        print(f"\n{result.describe()} ({result.seconds:.1f} s)")
        if wrong and not result.failed:
            problems.append(
                f"a wrong answer passes every test cell; expected at least one to fail\n{result.describe()}"
            )
        if not wrong and result.failed:
            problems.append(f"a valid answer fails {result.failed}; expected full marks\n{result.describe()}")
    assert not problems, "\n".join(problems)
