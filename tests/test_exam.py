"""The certification exam covers every concept of the course, and its numeric answers are checked fairly.

Every exam question's graded cell carries machine-readable metadata,
``cell.metadata["exam"] = {"question": "17-q07", "concepts": [...], "kind": "choice"}``;
these tests read it from the source notebook.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
EXAM = COURSE.lesson("17")
AUTOGRADED_KINDS = {"choice", "id", "list", "number", "code"}


def _exam_cells() -> list[nbformat.NotebookNode]:
    nb = nbformat.read(ROOT / "solutions" / EXAM.slug / str(EXAM.notebook), as_version=4)
    return [c for c in nb.cells if "exam" in c.metadata]


def _course_concepts() -> set[str]:
    return {concept for lesson in COURSE.lessons for concept in lesson.concepts}


def test_every_course_concept_is_examined_by_an_autograded_question() -> None:
    examined = {
        concept
        for cell in _exam_cells()
        if cell.metadata["exam"]["kind"] in AUTOGRADED_KINDS
        for concept in cell.metadata["exam"]["concepts"]
    }
    missing = sorted(_course_concepts() - examined)
    assert not missing, f"concepts in course.yml that no exam question tests: {missing}"


def test_exam_tags_name_only_course_concepts() -> None:
    known = _course_concepts()
    for cell in _exam_cells():
        unknown = set(cell.metadata["exam"]["concepts"]) - known
        assert not unknown, f"{cell.metadata['exam']['question']}: {sorted(unknown)} are not in course.yml"


def test_exam_questions_are_graded_one_cell_each_with_hashed_answers() -> None:
    cells = _exam_cells()
    questions = [c.metadata["exam"]["question"] for c in cells]
    assert len(questions) == len(set(questions)), "each exam question is tagged once"
    auto = [c for c in cells if c.metadata["exam"]["kind"] in AUTOGRADED_KINDS]
    assert len(auto) >= 30, f"the exam needs at least 30 autograded questions, has {len(auto)}"
    for cell in cells:
        meta, grading = cell.metadata["exam"], cell.metadata.get("nbgrader", {})
        assert grading.get("grade") and grading.get("points", 0) > 0, (
            f"{meta['question']} is not a graded cell"
        )
        if meta["kind"] in {"choice", "id", "list", "number"}:
            hidden = cell.source.split("### BEGIN HIDDEN TESTS", 1)[-1]
            ids = re.findall(r"check_(?:answer|number)\(\"([^\"]+)\"", hidden)
            assert ids == [meta["question"]], f"{meta['question']}: its hidden test checks {ids}"


def test_exam_has_hand_graded_answers_and_a_practical() -> None:
    kinds = [c.metadata["exam"]["kind"] for c in _exam_cells()]
    assert 2 <= kinds.count("written") <= 3
    assert kinds.count("practical") >= 1
    for cell in _exam_cells():
        if cell.metadata["exam"]["kind"] == "written":
            assert "### BEGIN SOLUTION" in cell.source and "Rubric" in cell.source


def test_number_hash_accepts_answers_within_tolerance_only() -> None:
    h = lk.course.number_hash("q", 0.25, tolerance=0.01)
    for value in (0.25, 0.2405, 0.2595, 1 / 4):
        assert lk.course.check_number("q", value, h, tolerance=0.01), value
    for value in (0.2394, 0.2606, 0.3, -0.25):
        assert not lk.course.check_number("q", value, h, tolerance=0.01), value
    assert not lk.course.check_number("other", 0.25, h, tolerance=0.01), "the question id salts the hash"
    assert lk.course.number_hash("q", 0.2504, tolerance=0.01) == h, "answers are stored rounded"


def test_check_number_treats_non_numbers_as_wrong_and_numpy_scalars_as_numbers() -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    h = lk.course.number_hash("q", 120, tolerance=0.5)
    for value in ("120", None, True, float("nan"), [120], torch.tensor([120.0, 1.0])):
        assert not lk.course.check_number("q", value, h, tolerance=0.5), repr(value)
    assert lk.course.check_number("q", np.float64(120.2), h, tolerance=0.5)
    assert lk.course.check_number("q", torch.tensor(119.8), h, tolerance=0.5)
    assert not lk.course.check_number("q", 121, h, tolerance=0.5)


@pytest.mark.parametrize(
    ("tolerance", "error", "match"),
    [(0, ValueError, "tolerance must be a finite number > 0"), ("0.1", TypeError, "tolerance must be a")],
)
def test_bad_tolerance_is_reported(tolerance: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        lk.course.number_hash("q", 1.0, tolerance=tolerance)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        lk.course.check_number("q", 1.0, "0", tolerance=tolerance)  # type: ignore[arg-type]


def test_number_hash_rejects_a_non_number_answer() -> None:
    with pytest.raises(ValueError, match="answer must be a finite number"):
        lk.course.number_hash("q", float("inf"), tolerance=0.1)
