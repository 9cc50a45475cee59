"""Learner copies: in sync with the sources, and autograded as they should be.

For every ready lesson, in a scratch copy of the course with its own gradebook:
* the reference solution gets full marks on every autograded cell,
* the untouched learner copy gets zero,
* a plausible wrong answer (tests/wrong_answers/<slug>.yml) gets less than full marks on every
  cell it changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

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


def _wrong_copy(slug: str, dest: Path) -> tuple[Path, set[str]]:
    """The reference notebook with the solution cells replaced by plausible wrong answers."""
    spec = yaml.safe_load((WRONG / f"{slug}.yml").read_text(encoding="utf-8"))
    lesson = COURSE.lesson(slug)
    nb = nbformat.read(ROOT / "solutions" / slug / str(lesson.notebook), as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for grade_id, source in spec["solutions"].items():
        assert grade_id in by_id, f"{slug}: wrong answer for unknown cell {grade_id}"
        by_id[grade_id].source = source
    nbformat.write(nb, dest)
    return dest, set(spec["expect_lost"])


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


@pytest.mark.slow
@pytest.mark.parametrize("slug", READY)
def test_autograding_reference_blank_and_wrong(
    slug: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference solution is graded as certification grades it (``labkit grade``: sandbox,
    trusted checker, keyed answers); the untouched and wrong copies with nbgrader directly."""
    monkeypatch.setenv("LABKIT_COHORT_SECRET", "c0" * 32)
    lesson = COURSE.lesson(slug)
    wrong, lost = _wrong_copy(slug, tmp_path / "wrong.ipynb")
    results = lk.course.autograde(
        COURSE,
        slug,
        {
            "untouched": ROOT / "lessons" / slug / str(lesson.notebook),
            "wrong": wrong,
        },
    )
    results["reference"] = _graded_for_certification(
        slug, ROOT / "solutions" / slug / str(lesson.notebook), tmp_path / "certify"
    )
    for who, result in results.items():
        cells = ", ".join(f"{c.grade_id}={c.score:g}/{c.max_score:g}" for c in result.cells if c.autograded)
        print(f"\n{slug} {who}: {result.auto_score:g}/{result.auto_max:g} autograded points ({cells})")
    ref, blank, bad = results["reference"], results["untouched"], results["wrong"]
    assert ref.auto_max > 0, "a lesson needs autograded points"
    for cell in ref.cells:
        if cell.autograded:
            assert cell.score == cell.max_score, f"reference loses points on {cell.grade_id}"
    assert blank.auto_score == 0, f"an untouched copy scores {blank.auto_score}"
    assert bad.auto_score < bad.auto_max
    for grade_id in lost:
        assert bad.score_of(grade_id) < next(c.max_score for c in bad.cells if c.grade_id == grade_id), (
            f"the wrong answer should lose points on {grade_id}"
        )
