"""Grade a whole class: every submission in its own sandbox, then one validated merge.

:func:`grade_class` finds the notebooks (:mod:`labkit.course.submissions`), builds each lesson
once in a scratch course, grades every submission in a worker of its own
(:mod:`labkit.course.sandbox`), checks what each worker reports against the lesson's gradebook
entries, and only then writes the grades CSV, the feedback and the instructor's gradebook.
The grades it returns (:class:`~labkit.course.class_grades.ClassGrades`, with the CSVs and the
summary) live in :mod:`labkit.course.class_grades` and the grader's pass over the feedback HTML
in :mod:`labkit.course.feedback`; both are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.course.class_grades import ClassGrades, LessonGrade
from labkit.course.feedback import sanitize_feedback
from labkit.course.grading import CellScore, GradingError, _api, _check, _stage
from labkit.course.manifest import Course, Lesson
from labkit.course.sandbox import (
    SLOW_START,
    Limits,
    SandboxJob,
    job_uid,
    read_result,
    sandbox_problem,
    start_worker,
    stop_worker,
    worker_exited,
)
from labkit.course.submissions import (
    LAYOUTS,
    Problem,
    Submission,
    SubmissionError,
    check_submission,
    copy_notebook,
    find_submissions,
)

__all__ = ["ClassGrades", "LessonGrade", "SandboxUnavailable", "grade_class", "merge_into_gradebook"]


class SandboxUnavailable(ValueError):
    """Learner code cannot run in a sandbox on this host, and the submissions are not trusted."""


@dataclass
class _Template:
    lesson: Lesson
    root: Path
    cells: dict[str, tuple[float, bool]]  # grade_id -> (max_score, autograded)

    @property
    def release(self) -> Path:
        return self.root / "lessons" / self.lesson.slug / str(self.lesson.notebook)

    @property
    def max_score(self) -> float:
        return sum(m for m, _ in self.cells.values())


def _build_template(course: Course, lesson: Lesson, root: Path, profile: str | None) -> _Template:
    from nbgrader.api import Gradebook

    root.mkdir(parents=True)
    _stage(course, [lesson], root)
    api = _api(course, root, profile)
    _check(api.generate_assignment(lesson.slug, force=True), f"generate_assignment {lesson.slug}")
    cells: dict[str, tuple[float, bool]] = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(Path(str(lesson.notebook)).stem, lesson.slug)
        for cell in nb.grade_cells:
            source = next((s for s in nb.source_cells if s.name == cell.name), None)
            autograded = cell.cell_type == "code" and not _is_solution(nb, cell.name)
            cells[cell.name] = (float(cell.max_score), autograded and source is not None)
    return _Template(lesson=lesson, root=root, cells=cells)


def _is_solution(nb: Any, name: str) -> bool:
    return any(s.name == name for s in nb.solution_cells)


def _validate(raw: dict[str, Any], sub: Submission, tpl: _Template) -> LessonGrade:
    """Turn a worker's raw result into a LessonGrade, rejecting anything malformed."""
    top = tpl.max_score
    base = LessonGrade(sub.student, sub.lesson, "error", 0.0, top, warnings=list(sub.warnings))
    seconds = raw.get("seconds")
    base.seconds = float(seconds) if isinstance(seconds, int | float) and math.isfinite(seconds) else 0.0
    status = raw.get("status")
    if status == "error":
        base.reason = str(raw.get("reason", "grading failed"))[:300]
        return base
    if status != "graded" or raw.get("student") != sub.student or raw.get("lesson") != sub.lesson:
        base.reason = "invalid result from the grading worker (wrong learner, lesson or status)"
        return base
    cells = raw.get("cells")
    if not isinstance(cells, list):
        base.reason = "invalid result from the grading worker (no cells)"
        return base
    seen: dict[str, CellScore] = {}
    for item in cells:
        if not isinstance(item, dict):
            base.reason = "invalid result from the grading worker (a cell is not a mapping)"
            return base
        gid, score, top_cell = item.get("grade_id"), item.get("score"), item.get("max_score")
        if gid not in tpl.cells or gid in seen:
            base.reason = f"invalid result from the grading worker (unexpected cell {gid!r})"
            return base
        expected_max, autograded = tpl.cells[str(gid)]
        if (
            not isinstance(score, int | float)
            or not isinstance(top_cell, int | float)
            or not math.isfinite(score)
            or not 0 <= score <= expected_max
            or top_cell != expected_max
        ):
            base.reason = f"invalid result from the grading worker (score {score!r} for {gid})"
            return base
        seen[str(gid)] = CellScore(str(gid), float(score), float(expected_max), autograded)
    if set(seen) != set(tpl.cells):
        missing = ", ".join(sorted(set(tpl.cells) - set(seen)))
        base.reason = f"invalid result from the grading worker (missing cells {missing})"
        return base
    feedback = raw.get("feedback_html", "")
    if not isinstance(feedback, str) or "BEGIN HIDDEN TESTS" in feedback:
        feedback = ""
        base.warnings.append("feedback withheld: it did not pass the hidden-test check")
    elif feedback:
        feedback = sanitize_feedback(feedback)
    reasons = []
    events = raw.get("events")
    errors = raw.get("errors")
    events = events if isinstance(events, list) else []
    errors = errors if isinstance(errors, dict) else {}
    reasons += [str(e)[:200] for e in events]
    # The learner's own cells that raised (a timeout, MemoryError, ...) explain the lost points.
    reasons += [f"{gid}: {str(err)[:160]}" for gid, err in errors.items() if gid not in tpl.cells]
    for gid, cell in seen.items():
        if cell.autograded and cell.score < cell.max_score and gid in errors:
            reasons.append(f"{gid}: {str(errors[gid])[:160]}")
    return LessonGrade(
        student=sub.student,
        lesson=sub.lesson,
        status="graded",
        score=sum(c.score for c in seen.values()),
        max_score=top,
        reason="; ".join(reasons[:6]),
        warnings=base.warnings,
        seconds=base.seconds,
        cells=[seen[g] for g in tpl.cells],
        feedback_html=feedback,
    )


def merge_into_gradebook(
    gradebook: str | Path, template_db: Path, lesson: Lesson, grades: Sequence[LessonGrade]
) -> int:
    """Write validated autograded scores into an nbgrader gradebook; returns how many merged.

    The lesson's assignment is created from the scratch build when the gradebook does not have
    it yet. Manually graded cells keep whatever score they already have.
    """
    from nbgrader.api import Gradebook, MissingEntry

    nb_name = Path(str(lesson.notebook)).stem
    merged = 0
    with Gradebook(f"sqlite:///{template_db}") as src, Gradebook(f"sqlite:///{Path(gradebook)}") as gb:
        try:
            gb.find_assignment(lesson.slug)
        except MissingEntry:
            snb = src.find_notebook(nb_name, lesson.slug)
            gb.update_or_create_assignment(lesson.slug)
            gb.update_or_create_notebook(nb_name, lesson.slug)
            for c in snb.source_cells:
                gb.update_or_create_source_cell(
                    c.name,
                    nb_name,
                    lesson.slug,
                    cell_type=c.cell_type,
                    locked=c.locked,
                    source=c.source,
                    checksum=c.checksum,
                )
            for c in snb.solution_cells:
                gb.update_or_create_solution_cell(c.name, nb_name, lesson.slug)
            for c in snb.grade_cells:
                gb.update_or_create_grade_cell(
                    c.name, nb_name, lesson.slug, max_score=c.max_score, cell_type=c.cell_type
                )
            for c in snb.task_cells:
                gb.update_or_create_task_cell(
                    c.name, nb_name, lesson.slug, max_score=c.max_score, cell_type=c.cell_type
                )
        for g in grades:
            if g.status != "graded":
                continue
            gb.update_or_create_student(g.student)
            try:
                gb.find_submission(lesson.slug, g.student)
            except MissingEntry:
                gb.add_submission(lesson.slug, g.student)
            for cell in g.cells:
                grade = gb.find_grade(cell.grade_id, nb_name, lesson.slug, g.student)
                if cell.autograded:
                    grade.auto_score = cell.score
                    grade.needs_manual_grade = False
                elif grade.manual_score is None:
                    grade.needs_manual_grade = True
            gb.db.commit()
            merged += 1
    return merged


class AnswerKeyUnavailable(ValueError):
    """The answer checks of a lesson to grade cannot be keyed (no answer key, a bad secret)."""


def _needs_answer_key(course: Course, lesson: Lesson) -> bool:
    source = course.root / "solutions" / lesson.slug / str(lesson.notebook)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError:
        return True  # no source to look at: assume the lesson has keyed checks
    return "check_answer(" in text or "check_number(" in text


def prepare_answer_key(course: Course, lessons: Sequence[Lesson]) -> Path | None:
    """Make sure the answer checks of ``lessons`` can be graded, before any learner is.

    The lessons' quiz checks need the course's answer key (``instructor/answer_key.yml``) and a
    cohort secret to seal it with. A missing key is an error (every quiz cell would score zero);
    a missing secret is created (``.labkit/cohort.key``, mode 0600), and its path returned, so
    the first ``labkit grade`` of a course works without a separate ``labkit cohort init``.
    """
    import sys

    from labkit.course import answers

    needing = [ls for ls in lessons if _needs_answer_key(course, ls)]
    if not needing:
        return None
    key = answers.answer_key_path(course.root)
    if not key.is_file():
        raise AnswerKeyUnavailable(
            f"refusing to grade: lesson {needing[0].slug} checks its quiz answers against the course's "
            f"answer key, and {key} does not exist (it is instructor material: copy the instructor/ "
            "folder of the course repository into the course)"
        )
    try:
        if answers.cohort_secret(course.root) is not None:
            return None
        made = answers.init_cohort_secret(course.root)
    except answers.AnswerKeyError as err:
        raise AnswerKeyUnavailable(f"refusing to grade: {err}") from None
    print(
        f"labkit grade: created this course's cohort secret {made} (it keys the answer checks: "
        "keep it private; 'labkit cohort init --force' replaces it)",
        file=sys.stderr,
    )
    return made


def grade_class(
    course: Course,
    source: str | Path,
    *,
    out: str | Path,
    jobs: int = 1,
    limits: Limits | None = None,
    lesson: str | None = None,
    gradebook: str | Path | None = None,
    profile: str | None = None,
    progress: bool = True,
    trust_submissions: bool = False,
) -> ClassGrades:
    """Autograde every submission under ``source`` and write the results to ``out``.

    Parameters
    ----------
    course:
        The manifest.
    source:
        Folder or zip of submissions (layouts in :mod:`labkit.course.submissions`).
    out:
        Output folder: ``grades.csv``, ``submissions.csv``, ``summary.md`` and
        ``feedback/<learner>/<lesson>/<notebook>.html``.
    jobs:
        Submissions graded at once, each in its own worker process.
    limits:
        Resource limits per submission.
    lesson:
        Grade only this lesson (and map ``<learner>.ipynb`` files to it).
    gradebook:
        nbgrader gradebook to merge validated grades into; ``None`` merges nothing.
    profile:
        Run profile (its ``cell_timeout`` is the per-cell limit unless ``limits`` sets one).
    progress:
        Show a progress bar.
    trust_submissions:
        Grade even where learner code cannot run in a bubblewrap sandbox (macOS, hosts without
        user namespaces): only for notebooks you trust, since their code then runs with your
        rights. Without it such a host raises :class:`SandboxUnavailable`.

    Raises :class:`~labkit.course.SubmissionError` when ``source`` holds no submission (of
    ``lesson``): an empty folder is a wrong path, not a class with nothing to grade.
    """
    from tqdm.auto import tqdm

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    limits = limits or Limits()
    out_dir = Path(out)
    start = time.perf_counter()
    problem = sandbox_problem()
    if problem is not None and not trust_submissions:
        raise SandboxUnavailable(
            f"refusing to grade: learner code cannot be sandboxed on this host ({problem}). "
            "Grade on a Linux host with bubblewrap, or pass --trust-submissions to run the "
            "notebooks' code with your own rights (only for work you trust)"
        )
    scratch = Path(tempfile.mkdtemp(prefix="labkit-class-"))
    # Workers drop to accounts of their own: they may pass through (not list) the scratch folder.
    os.chmod(scratch, 0o711)
    try:
        problems: list[Problem] = []
        subs = find_submissions(course, source, lesson=lesson, workdir=scratch, problems=problems)
        if not subs and not problems:
            which = f" for lesson {course.lesson(lesson).slug}" if lesson else ""
            raise SubmissionError(
                f"{source}: no submissions found{which}; expected notebooks laid out as {LAYOUTS}"
                + ("" if lesson else " (the last one with --lesson)")
            )
        lessons = sorted({course.lesson(s.lesson) for s in subs}, key=lambda ls: ls.id)
        if lesson is not None:
            lessons = [course.lesson(lesson)]
        prepare_answer_key(course, lessons)
        templates = {
            ls.slug: _build_template(course, ls, scratch / "templates" / ls.slug, profile) for ls in lessons
        }
        cache = _cache_dir()
        results: dict[int, LessonGrade] = {}
        pending: list[tuple[int, Submission, SandboxJob]] = []

        def new_job(i: int, sub: Submission, attempt: int = 1) -> SandboxJob:
            """A job folder of its own (a fresh one for a second attempt) and the job to run there."""
            tpl = templates[sub.lesson]
            jobdir = scratch / "jobs" / (f"{i}" if attempt == 1 else f"{i}-{attempt}")
            jobdir.mkdir(parents=True, mode=0o711)
            os.chmod(jobdir.parent, 0o711)
            inbox = jobdir / "inbox"
            shutil.copytree(tpl.root, inbox)
            os.chmod(inbox, 0o700)
            copy_notebook(sub.path, inbox / "submission.ipynb")
            job = SandboxJob(
                student=sub.student,
                lesson=sub.lesson,
                notebook=str(course.lesson(sub.lesson).notebook),
                inbox=str(inbox),
                result_path=str(jobdir / "result.json"),
                limits=limits,
                profile=profile,
                cache_dir=str(cache) if cache else None,
                uid=job_uid() if os.geteuid() == 0 else -1,
                trust=problem is not None,
                course_root=str(course.root),
            )
            return job

        for i, sub in enumerate(subs):
            tpl = templates[sub.lesson]
            readable, warnings = check_submission(sub.path, tpl.release)
            sub.warnings += warnings
            if not readable:
                results[i] = LessonGrade(
                    sub.student,
                    sub.lesson,
                    "error",
                    0.0,
                    tpl.max_score,
                    reason="corrupt .ipynb: " + warnings[0],
                    warnings=sub.warnings,
                )
                continue
            pending.append((i, sub, new_job(i, sub)))
        bar = tqdm(total=len(subs), disable=not progress, desc="grading", unit="notebook")
        bar.update(len(results))
        running: dict[int, tuple[int, Submission, SandboxJob, subprocess.Popen[bytes], float]] = {}
        free = list(range(jobs))
        retried: set[int] = set()
        while pending or running:
            while pending and free:
                i, sub, job = pending.pop(0)
                job.slot = free.pop(0)
                try:
                    proc = start_worker(job, log_path=Path(job.result_path).with_suffix(".log"))
                except OSError as err:  # one job that cannot start is that learner's error, not the class's
                    failed = {"status": "error", "reason": f"the grading worker could not start: {err}"}
                    results[i] = _validate(failed, sub, templates[sub.lesson])
                    free.append(job.slot)
                    bar.update(1)
                    continue
                running[job.slot] = (i, sub, job, proc, time.perf_counter())
            time.sleep(0.2)
            for slot, (i, sub, job, proc, t0) in list(running.items()):
                elapsed = time.perf_counter() - t0
                finished = worker_exited(proc)  # not reaped yet: its group id is still its own
                if not finished and elapsed < limits.wall_seconds:
                    continue
                stop_worker(proc, job)  # kills what is left of its process group, then reaps it
                if not finished:
                    raw: dict[str, Any] = {
                        "status": "error",
                        "reason": f"stopped after the {limits.wall_seconds} s wall-clock limit",
                        "seconds": elapsed,
                    }
                else:
                    raw = read_result(
                        job, proc.returncode, Path(job.result_path).with_suffix(".log"), elapsed
                    )
                del running[slot]
                free.append(slot)
                if raw.get("status") == "error" and str(raw.get("reason", "")).startswith(SLOW_START):
                    if i not in retried:  # the machine was busy, not the learner: once more, at the back
                        retried.add(i)
                        sub.warnings.append("graded twice: in the first run " + str(raw["reason"])[:160])
                        pending.append((i, sub, new_job(i, sub, attempt=2)))
                        continue
                results[i] = _validate(raw, sub, templates[sub.lesson])
                results[i].seconds = elapsed
                bar.update(1)
                bar.set_postfix_str(f"{sub.student}/{sub.lesson}: {results[i].status}")
        bar.close()
        grades = ClassGrades(
            course=course,
            lessons=lessons,
            results=[results[i] for i in sorted(results)],
            wall_seconds=time.perf_counter() - start,
            problems=problems,
        )
        grades.isolation = sorted(set(_isolation_from_logs(scratch)))
        _write_outputs(grades, out_dir)
        if gradebook is not None:
            for ls in lessons:
                merge_into_gradebook(
                    gradebook,
                    templates[ls.slug].root / "gradebook.db",
                    ls,
                    [r for r in grades.results if r.lesson == ls.slug],
                )
        return grades
    except GradingError:
        raise
    finally:
        if not os.environ.get("LABKIT_KEEP_GRADING_FILES"):
            shutil.rmtree(scratch, ignore_errors=True)


def _isolation_from_logs(scratch: Path) -> list[str]:
    found: list[str] = []
    for path in scratch.glob("jobs/*/result.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        iso = data.get("isolation") if isinstance(data, dict) else None
        if isinstance(iso, list):
            found += [str(x) for x in iso if not str(x).startswith(("hidden:", "private:"))]
    return found


def _cache_dir() -> Path | None:
    from labkit.config import cache_dir

    try:
        return cache_dir()
    except OSError:
        return None


def _write_outputs(grades: ClassGrades, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    grades.write_csv(out / "grades.csv")
    grades.write_submissions_csv(out / "submissions.csv")
    (out / "summary.md").write_text(grades.summary() + "\n", encoding="utf-8")
    for r in grades.results:
        if r.feedback_html:
            nb = Path(str(grades.course.lesson(r.lesson).notebook)).stem
            path = out / "feedback" / r.student / r.lesson / f"{nb}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(r.feedback_html)
    os.chmod(out, 0o755)
