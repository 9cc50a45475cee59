"""Build learner notebooks and autograde notebooks with nbgrader, in throwaway course folders.

Both operations work on a temporary copy of the course with its own gradebook, so they never
touch the instructor's ``gradebook.db`` and can run again and again.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from labkit.course.manifest import Course, Lesson
from labkit.course.nbgrader_setup import nbgrader_config

__all__ = ["CellScore", "GradingError", "SubmissionResult", "autograde", "build_lessons"]


class GradingError(RuntimeError):
    """nbgrader reported a failure (its log is in the message)."""


@dataclass(frozen=True)
class CellScore:
    grade_id: str
    score: float
    max_score: float
    autograded: bool


@dataclass
class SubmissionResult:
    """Scores of one learner's notebook for one lesson."""

    student: str
    lesson: str
    cells: list[CellScore] = field(default_factory=list)

    @property
    def auto_score(self) -> float:
        return sum(c.score for c in self.cells if c.autograded)

    @property
    def auto_max(self) -> float:
        return sum(c.max_score for c in self.cells if c.autograded)

    def score_of(self, grade_id: str) -> float:
        for cell in self.cells:
            if cell.grade_id == grade_id:
                return cell.score
        raise KeyError(f"no graded cell {grade_id!r} in {self.lesson}")


def _autograded_ids(path: Path) -> set[str]:
    """Grade ids of the autograded test cells (graded, not answer cells) of a source notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
            found.add(meta["grade_id"])
    return found


def _lessons(course: Course, which: Iterable[str] | None) -> list[Lesson]:
    chosen = [course.lesson(key) for key in which] if which else list(course.ready_lessons)
    for lesson in chosen:
        if not lesson.ready:
            raise ValueError(f"lesson {lesson.slug} is planned, not ready: nothing to build")
    return chosen


def _stage(course: Course, lessons: list[Lesson], root: Path) -> None:
    """Copy the manifest and the lessons' source folders into a scratch course root."""
    shutil.copy2(course.path, root / "course.yml")
    for lesson in lessons:
        src = course.root / "solutions" / lesson.slug
        if not (src / str(lesson.notebook)).is_file():
            raise FileNotFoundError(
                f"lesson {lesson.slug}: expected its source notebook at {src / str(lesson.notebook)}"
            )
        shutil.copytree(
            src,
            root / "solutions" / lesson.slug,
            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
        )


def _api(course: Course, root: Path, profile: str | None = None):  # type: ignore[no-untyped-def]
    from nbgrader.apps import NbGraderAPI

    # nbgrader runs the `alembic` executable of its own environment: make sure it is on PATH
    # even when Python was started as .venv/bin/python without activating the venv.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")

    cfg = nbgrader_config(course, root=root, db_path=root / "gradebook.db", profile=profile)
    return NbGraderAPI(config=cfg)


def _check(result: Mapping[str, object], what: str) -> None:
    if not result.get("success"):
        raise GradingError(f"nbgrader {what} failed:\n{result.get('error') or result.get('log')}")


def _cells(path: Path) -> list[tuple[str, str]]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [(c.cell_type, c.source) for c in nb.cells]


def build_lessons(
    course: Course,
    *,
    lessons: Iterable[str] | None = None,
    dest: str | Path | None = None,
    missing_only: bool = False,
) -> list[Path]:
    """Generate the learner copies of ``lessons`` (default: every ready lesson).

    Runs nbgrader ``generate_assignment`` in a scratch folder and copies each result to
    ``dest/<slug>/`` (default: the course's ``lessons/``). A learner notebook that differs from
    the new copy (someone worked in it) is kept as ``<name>.ipynb.backup-<time>`` beside it,
    never lost. With ``missing_only``, lessons that already have a learner copy are left alone.
    Returns the learner notebooks written.
    """
    import time

    chosen = _lessons(course, lessons)
    out_root = Path(dest) if dest is not None else course.root / "lessons"
    if missing_only:
        chosen = [ls for ls in chosen if not (out_root / ls.slug / str(ls.notebook)).exists()]
    written: list[Path] = []
    if not chosen:
        return written
    with tempfile.TemporaryDirectory(prefix="labkit-build-") as tmp:
        root = Path(tmp)
        _stage(course, chosen, root)
        api = _api(course, root)
        for lesson in chosen:
            _check(api.generate_assignment(lesson.slug, force=True), f"generate_assignment {lesson.slug}")
            fresh = root / "lessons" / lesson.slug
            target = out_root / lesson.slug
            target.mkdir(parents=True, exist_ok=True)
            for item in sorted(fresh.rglob("*")):
                if item.is_dir():
                    continue
                out = target / item.relative_to(fresh)
                out.parent.mkdir(parents=True, exist_ok=True)
                if out.exists() and out.suffix == ".ipynb" and _cells(out) != _cells(item):
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    shutil.copy2(out, out.with_name(f"{out.name}.backup-{stamp}"))
                shutil.copy2(item, out)
            written.append(target / str(lesson.notebook))
    return written


def autograde(
    course: Course,
    lesson_key: str,
    submissions: Mapping[str, str | Path],
    *,
    profile: str | None = None,
) -> dict[str, SubmissionResult]:
    """Autograde notebooks for one lesson and return per-cell scores.

    Parameters
    ----------
    course:
        The manifest.
    lesson_key:
        Lesson id or slug.
    submissions:
        Learner name -> path of their notebook for this lesson.
    profile:
        Run profile for the execution timeout.
    """
    from nbgrader.api import Gradebook

    lesson = course.lesson(lesson_key)
    (chosen,) = _lessons(course, [lesson.slug])
    results: dict[str, SubmissionResult] = {}
    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp:
        root = Path(tmp)
        _stage(course, [chosen], root)
        api = _api(course, root, profile)
        _check(api.generate_assignment(chosen.slug, force=True), f"generate_assignment {chosen.slug}")
        for student, path in submissions.items():
            folder = root / "submitted" / student / chosen.slug
            folder.mkdir(parents=True)
            shutil.copy2(path, folder / str(chosen.notebook))
            _check(api.autograde(chosen.slug, student, force=True), f"autograde {student}")
        notebook_id = Path(str(chosen.notebook)).stem
        tests = _autograded_ids(root / "solutions" / chosen.slug / str(chosen.notebook))
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
            for student in submissions:
                nb = gb.find_submission_notebook(notebook_id, chosen.slug, student)
                result = SubmissionResult(student=student, lesson=chosen.slug)
                for grade in nb.grades:
                    result.cells.append(
                        CellScore(
                            grade_id=grade.name,
                            score=float(grade.score or 0.0),
                            max_score=float(grade.max_score),
                            autograded=grade.name in tests,
                        )
                    )
                results[student] = result
    return results
