"""The grades of a class: one :class:`LessonGrade` per learner and lesson, gathered in
:class:`ClassGrades`, which gives the per-learner rows (totals, lessons, concepts), the grades and
submissions CSVs (cells a spreadsheet shows as text, never as a formula) and a per-lesson summary.
:func:`labkit.course.classroom.grade_class` produces them.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.course.grading import CellScore
from labkit.course.manifest import Course, Lesson
from labkit.course.submissions import Problem

__all__ = ["ClassGrades", "LessonGrade"]


@dataclass
class LessonGrade:
    """The outcome for one learner and one lesson."""

    student: str
    lesson: str
    status: str  # "graded" or "error"
    score: float
    max_score: float
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cells: list[CellScore] = field(default_factory=list)
    feedback_html: str = ""

    @property
    def fraction(self) -> float:
        return self.score / self.max_score if self.max_score else 0.0


@dataclass
class ClassGrades:
    """Grades of a class for the lessons graded in one run."""

    course: Course
    lessons: list[Lesson]
    results: list[LessonGrade]
    wall_seconds: float = 0.0
    isolation: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def students(self) -> list[str]:
        return sorted({r.student for r in self.results} | {p.student for p in self.problems})

    def get(self, student: str, lesson: str) -> LessonGrade | None:
        for r in self.results:
            if r.student == student and lesson in (r.lesson, self.course.lesson(r.lesson).id):
                return r
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per learner: totals, per-lesson and per-concept fractions, problems."""
        concepts = sorted({c for ls in self.lessons for c in ls.concepts})
        rows = []
        for student in self.students:
            row: dict[str, Any] = {"student": student}
            earned = possible = 0.0
            per_concept: dict[str, list[float]] = {c: [0.0, 0.0] for c in concepts}
            notes = []
            for ls in self.lessons:
                grade = self.get(student, ls.slug)
                score = grade.score if grade else 0.0
                top = grade.max_score if grade and grade.max_score else float(ls.points)
                earned += score
                possible += top
                row[f"lesson:{ls.slug}"] = round(score / top, 4) if top else 0.0
                row[f"points:{ls.slug}"] = round(score, 2)
                for c in ls.concepts:
                    per_concept[c][0] += score
                    per_concept[c][1] += top
                if grade is None:
                    notes.append(f"{ls.slug}: no submission")
                elif grade.status != "graded":
                    notes.append(f"{ls.slug}: {grade.reason}")
                elif grade.reason:
                    notes.append(f"{ls.slug}: {grade.reason}")
            notes += [_problem_text(p) for p in self.problems if p.student == student]
            row["points"] = round(earned, 2)
            row["max_points"] = round(possible, 2)
            row["percent"] = round(100 * earned / possible, 1) if possible else 0.0
            for c in concepts:
                got, top = per_concept[c]
                row[f"concept:{c}"] = round(got / top, 4) if top else 0.0
            row["notes"] = "; ".join(notes)
            rows.append(row)
        return rows

    def write_csv(self, path: str | Path) -> Path:
        """The grades CSV: one row per learner (see :meth:`rows`)."""
        out = Path(path)
        rows = self.rows()
        head = ["student", "points", "max_points", "percent"]
        if rows:
            head += [k for k in rows[0] if k not in head]
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=head)
            writer.writeheader()
            writer.writerows({k: _csv_safe(v) for k, v in row.items()} for row in rows)
        return out

    def write_submissions_csv(self, path: str | Path) -> Path:
        """One row per submission: status, score, reason, warnings and grading time."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["student", "lesson", "status", "score", "max_score", "reason", "warnings", "seconds"]
            )
            for r in self.results:
                fields = [r.student, r.lesson, r.status, f"{r.score:g}", f"{r.max_score:g}", r.reason]
                fields += ["; ".join(r.warnings), f"{r.seconds:.1f}"]
                writer.writerow([_csv_safe(f) for f in fields])
            for p in self.problems:
                writer.writerow(
                    [_csv_safe(f) for f in (p.student, "", "error", "0", "0", _problem_text(p), "", "0")]
                )
        return out

    def summary(self) -> str:
        """A Markdown table per lesson: how many graded, failed, and the score distribution."""
        lines = [
            "| lesson | graded | errors | mean | median | min | max | s/submission |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for ls in self.lessons:
            mine = [r for r in self.results if r.lesson == ls.slug]
            ok = [r for r in mine if r.status == "graded"]
            pct = [100 * r.fraction for r in mine]
            secs = [r.seconds for r in ok]

            def fmt(values: list[float], fn: Any) -> str:
                return f"{fn(values):.0f}%" if values else "-"

            lines.append(
                f"| {ls.slug} | {len(ok)} | {len(mine) - len(ok)} | {fmt(pct, statistics.mean)} | "
                f"{fmt(pct, statistics.median)} | {fmt(pct, min)} | {fmt(pct, max)} | "
                f"{(statistics.mean(secs) if secs else 0):.1f} |"
            )
        if self.problems:
            lines.append(
                f"\n{len(self.problems)} entr{'y' if len(self.problems) == 1 else 'ies'} not graded:"
            )
            lines += [f"- {p.student}: {_problem_text(p)}" for p in self.problems]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.summary()


def _problem_text(problem: Problem) -> str:
    return problem.reason if problem.entry in problem.reason else f"{problem.entry}: {problem.reason}"


def _csv_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: strings that would start a formula (``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return) get a leading ``'``; numbers stay numbers."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value
