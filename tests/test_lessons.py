"""Learner copies: in sync with the sources, and autograded as they should be.

For every ready lesson:
* the reference solution gets full marks on every autograded cell, graded as certification
  grades it (``labkit grade``: sandbox, trusted checker kernel, keyed answers), in a scratch
  course with its own gradebook;
* in one walk of the reference notebook (tests/answer_harness.py), every solution cell is tried
  as the learner copy leaves it (untouched), as the plausible wrong answers of
  tests/wrong_answers/<slug>.yml write it, and as the wrong and valid answers of
  <slug>.cells.yml: every test cell fails when a solution cell it follows is left untouched, each
  wrong answer loses at least one, together they lose every cell <slug>.yml names, and each
  valid answer keeps full marks;
* no autograded test cell stands outside the span of a solution cell (points nobody must earn).

Trying each answer in place of its own cell, with the reference everywhere else, is stricter than
grading one whole notebook with every cell wrong at once: a test cell that passes without its
exercise done shows up even when an earlier blank cell would have failed it by accident.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from answer_harness import TEST_COHORT_SECRET, Answer, cell_answers, graded_spans, notebook_path, run_answers

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]
COURSE = lk.course.load_course(ROOT / "course.yml")
READY = [lesson.slug for lesson in COURSE.ready_lessons]
WRONG = ROOT / "tests" / "wrong_answers"


def _comparable(path: Path) -> list[tuple[str, str, dict]]:
    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source, c.metadata.get("nbgrader", {})) for c in nb.cells]


def test_learner_copies_match_a_fresh_build(tmp_path: Path) -> None:
    written = lk.course.build_lessons(COURSE, dest=tmp_path)
    assert len(written) == len(READY)
    for fresh in written:
        committed = ROOT / "lessons" / fresh.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is missing: run `labkit build`"
        assert _comparable(committed) == _comparable(fresh), (
            f"{committed.relative_to(ROOT)} is out of date: run `labkit build`"
        )


def test_build_keeps_a_backup_of_learner_work(tmp_path: Path) -> None:
    slug = READY[0]
    (written,) = lk.course.build_lessons(COURSE, lessons=[slug], dest=tmp_path)
    nb = nbformat.read(written, as_version=4)
    nb.cells[0].source += "\n\nmy notes"
    nbformat.write(nb, written)
    assert lk.course.build_lessons(COURSE, lessons=[slug], dest=tmp_path, missing_only=True) == []
    lk.course.build_lessons(COURSE, lessons=[slug], dest=tmp_path)
    backups = list(written.parent.glob(f"{written.name}.backup-*"))
    assert len(backups) == 1 and "my notes" in backups[0].read_text()
    assert "my notes" not in written.read_text()


def _graded_for_certification(slug: str, notebook: Path, tmp_path: Path) -> lk.course.SubmissionResult:
    """``notebook`` graded as ``labkit grade`` grades it: bubblewrap, the trusted checker kernel,
    the keyed answer checks. Where the sandbox cannot run, the plain nbgrader result instead
    (the test says so)."""
    from labkit.course.classroom import grade_class

    problem = lk.course.sandbox.sandbox_problem()
    if problem is not None:
        print(f"\n{slug}: reference graded by nbgrader alone, not the sandboxed grader ({problem})")
        return lk.course.autograde(COURSE, slug, {"reference": notebook})["reference"]
    lesson = COURSE.lesson(slug)
    folder = tmp_path / "submitted" / "reference" / slug
    folder.mkdir(parents=True)
    shutil.copy2(notebook, folder / str(lesson.notebook))
    grades = grade_class(COURSE, tmp_path / "submitted", out=tmp_path / "grades", lesson=slug, progress=False)
    grade = grades.get("reference", slug)
    assert grade is not None and grade.status == "graded", f"{slug}: the grader did not grade it: {grade}"
    print(f"\n{slug} reference, graded by labkit grade: {grade.score:g}/{grade.max_score:g} {grade.reason}")
    result = lk.course.SubmissionResult(student="reference", lesson=slug)
    result.cells.extend(grade.cells)
    return result


HARMLESS = "a harmless warning from correct code"


def _with_harmless_warnings(source: str) -> str:
    """``source`` with a line on stderr when it runs, and a ``UserWarning`` at the start of every
    function and method it defines, as a PyTorch or NumPy warning from correct code would print."""
    import ast

    lines = source.splitlines()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        functions += [n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    starts = []
    for fn in functions:
        body = fn.body
        has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        first = body[1] if has_doc and len(body) > 1 else body[0]
        if first.lineno > fn.lineno and not (has_doc and len(body) == 1):  # not a one-line def
            starts.append((first.lineno, first.col_offset))
    for lineno, col in sorted(starts, reverse=True):
        lines.insert(lineno - 1, " " * col + f'__import__("warnings").warn("{HARMLESS}", stacklevel=1)')
    lines.append(f'print("{HARMLESS}", file=__import__("sys").stderr)')
    return "\n".join(lines)


def test_harmless_warnings_are_inserted_where_correct_code_would_print_them() -> None:
    source = 'import torch\n\ndef f(x):\n    """Doc."""\n    return x\n\nclass A:\n    def g(self):\n        return 1\n'
    changed = _with_harmless_warnings(source)
    namespace: dict[str, object] = {}
    with pytest.warns(UserWarning, match=HARMLESS):
        exec(compile(changed, "<cell>", "exec"), namespace)
        assert namespace["f"](3) == 3  # type: ignore[operator]
        assert namespace["A"]().g() == 1  # type: ignore[operator]
    assert changed.count("warnings") == 2


@pytest.mark.slow
@pytest.mark.parametrize("slug", READY)
def test_reference_gets_full_marks_as_certification_grades_it(
    slug: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference keeps full marks under ``labkit grade``, with every one of its functions
    printing a warning on stderr when called: output that correct code prints never costs
    points (nbgrader alone zeroes a test cell with any stderr output)."""
    monkeypatch.setenv("LABKIT_COHORT_SECRET", TEST_COHORT_SECRET)
    lesson = COURSE.lesson(slug)
    nb = nbformat.read(ROOT / "solutions" / slug / str(lesson.notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = _with_harmless_warnings(cell.source)
    noisy = tmp_path / "noisy" / str(lesson.notebook)
    noisy.parent.mkdir()
    nbformat.write(nb, noisy)
    ref = _graded_for_certification(slug, noisy, tmp_path)
    cells = ", ".join(f"{c.grade_id}={c.score:g}/{c.max_score:g}" for c in ref.cells if c.autograded)
    print(f"\n{slug} reference: {ref.auto_score:g}/{ref.auto_max:g} autograded points ({cells})")
    assert ref.auto_max > 0, "a lesson needs autograded points"
    lost = [
        f"{c.grade_id} ({c.score:g}/{c.max_score:g})"
        for c in ref.cells
        if c.autograded and c.score < c.max_score
    ]
    assert not lost, f"{slug}: the reference solution loses points on {', '.join(lost)}"


def _solution_cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(grade id, source) of each code solution cell, in order."""
    return [
        (str(c.metadata["nbgrader"]["grade_id"]), c.source)
        for c in nb.cells
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
    ]


def _answer(slug: str, cell: str, name: str, source: str) -> Answer:
    """An answer to ``cell``. A solution cell that no test cell follows before the next solution
    cell (a helper the next exercise uses, as lesson 07's ``leaks_canary``) is judged by the tests
    of the next one: the answer is tried there, followed by the reference of the cells between."""
    spans = graded_spans(slug)
    assert cell in spans, f"{slug}: {cell!r} is not a solution cell (expected one of {sorted(spans)})"
    if spans[cell]:
        return Answer(cell, name, source)
    reference = _solution_cells(nbformat.read(notebook_path(slug), as_version=4))
    ids = [grade_id for grade_id, _ in reference]
    parts = [source]
    for grade_id, ref_source in reference[ids.index(cell) + 1 :]:
        if spans[grade_id]:
            return Answer(grade_id, f"{name} ({cell})", "\n\n".join([*parts, ref_source]))
        parts.append(ref_source)
    raise AssertionError(f"{slug}: no test cell follows the solution cell {cell!r}")


def _untouched_and_wrong(slug: str) -> tuple[list[Answer], set[str]]:
    """The learner copy's solution cells as released, the wrong answers of <slug>.yml and the
    wrong and valid answers of <slug>.cells.yml, and the test cells <slug>.yml says its wrong
    answers lose."""
    lesson = COURSE.lesson(slug)
    released = nbformat.read(ROOT / "lessons" / slug / str(lesson.notebook), as_version=4)
    answers = [_answer(slug, cell, "untouched", source) for cell, source in _solution_cells(released)]
    spec = yaml.safe_load((WRONG / f"{slug}.yml").read_text(encoding="utf-8"))
    answers += [_answer(slug, cell, "wrong", source) for cell, source in spec["solutions"].items()]
    per_cell = WRONG / f"{slug}.cells.yml"  # checked by tests/test_answer_cells.py
    if per_cell.is_file():
        answers += [_answer(slug, a.cell, a.name, a.source) for a in cell_answers(per_cell)]
    return answers, set(spec["expect_lost"])


@pytest.mark.slow
@pytest.mark.parametrize("slug", READY)
def test_untouched_and_wrong_answers_lose_points(slug: str) -> None:
    ref = nbformat.read(ROOT / "solutions" / slug / str(COURSE.lesson(slug).notebook), as_version=4)
    autograded = [
        str(c.metadata["nbgrader"]["grade_id"])
        for c in ref.cells
        if c.cell_type == "code"
        and c.metadata.get("nbgrader", {}).get("grade")
        and not c.metadata["nbgrader"].get("solution")
    ]
    judged = {grade_id for span in graded_spans(slug).values() for grade_id in span}
    free = [g for g in autograded if g not in judged]
    assert not free, (
        f"{slug}: test cells {free} follow no solution cell, so an untouched copy could earn them"
    )
    answers, expect_lost = _untouched_and_wrong(slug)
    results = run_answers(slug, answers)
    problems: list[str] = []
    lost_by_wrong: set[str] = set()
    lost_untouched: set[str] = set()
    for result in results:
        print(f"\n{result.describe()} ({result.seconds:.1f} s)")
        if result.answer.name.startswith("untouched"):
            lost_untouched.update(result.failed)
        elif result.answer.name.startswith("valid:"):
            if result.failed:
                problems.append(
                    f"a valid answer fails {result.failed}; expected full marks\n{result.describe()}"
                )
        else:
            if not result.answer.name.startswith("wrong:"):  # <slug>.yml's, not <slug>.cells.yml's
                lost_by_wrong.update(result.failed)
            if not result.failed:
                problems.append(
                    f"the wrong answer to {result.answer.cell!r} keeps full marks:\n{result.describe()}"
                )
    # A test cell may judge an earlier cell too (lesson 11's masking_choice_tests follows the
    # next exercise): it must fail when at least one of the cells it follows is left untouched.
    earned = [g for g in autograded if g not in lost_untouched]
    if earned:
        problems.append(
            f"test cells {earned} pass whichever solution cell before them is left as the learner copy has it"
            " (each tried alone, the reference elsewhere): they can be earned without the exercise"
        )
    missed = sorted(expect_lost - lost_by_wrong)
    if missed:
        problems.append(f"tests/wrong_answers/{slug}.yml says its wrong answers lose {missed}, but they pass")
    assert not problems, "\n".join(problems)
