"""The instructor's subcommands of ``labkit``: ``grade``, and (from
:mod:`labkit.course.credentials.commands`) ``keys init``, ``certify``, ``verify`` and ``revoke``.

The pieces every ``labkit`` command shares (:func:`course_to_write`, :func:`check_lessons`,
:class:`UsageError`) live in :mod:`labkit.course.usage` and are re-exported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from labkit.course.usage import UsageError, check_lessons, course_to_write

__all__ = ["UsageError", "add_commands", "check_lessons", "course_to_write"]


def grade(args: argparse.Namespace) -> int:
    """Autograde a class, each submission in its own sandbox."""
    import os

    from labkit.course.sandbox import Limits, skip_iri_format_checker

    skip_iri_format_checker()  # before nbformat is imported: seconds off every grading run
    from labkit.course.classroom import grade_class

    course = course_to_write(args.course)
    if args.lesson is not None:
        check_lessons(course, [args.lesson])
    limits = Limits(
        cpu_seconds=args.cpu,
        memory_mb=args.memory,
        wall_seconds=args.timeout,
        cell_seconds=args.cell_timeout,
        processes=args.procs,
        output_kb=args.output_kb,
    )
    gradebook = None if args.no_gradebook else Path(args.gradebook or course.root / "gradebook.db").resolve()
    out = Path(args.out).resolve()
    print(f"course: {course.path}")
    print(f"writing grades to {out}" + (f" and the gradebook {gradebook}" if gradebook else ""))
    grades = grade_class(
        course,
        args.submissions,
        out=out,
        jobs=args.jobs,
        limits=limits,
        lesson=args.lesson,
        gradebook=gradebook,
        profile=args.profile,
        progress=not args.quiet,
        trust_submissions=args.trust_submissions,
    )
    print(grades.summary())
    problems = [r for r in grades.results if r.status != "graded" or r.reason or r.warnings]
    for r in problems:
        notes = "; ".join(x for x in (r.reason, *r.warnings) if x)
        print(f"{r.student}/{r.lesson}: {r.score:g}/{r.max_score:g} ({r.status}) {notes}")
    for p in grades.problems:
        print(f"{p.student}: not graded: {p.reason}")
    n = len(grades.results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per = grades.wall_seconds / n if n else 0.0
    print(
        f"\n{n} submission(s) in {grades.wall_seconds:.0f} s with {args.jobs} job(s): {per:.1f} s each "
        f"(load average {load:.2f}); isolation: {', '.join(grades.isolation) or 'none'}"
    )
    print(f"grades: {out / 'grades.csv'}" + (f"; gradebook: {gradebook}" if gradebook else ""))
    return 0


_COURSE_HELP = (
    "course.yml (or its folder) to act on (default: LABKIT_COURSE, else the working directory "
    "or its parents; never the checkout labkit was installed from)"
)


def add_commands(sub: Any) -> None:
    """Register ``grade``, ``certify``, ``verify``, ``keys`` and ``revoke`` on the ``labkit`` subparsers."""
    p = sub.add_parser(
        "grade",
        help="autograde a class in sandboxes: grades CSV, feedback, gradebook",
        description=(
            "SUBMISSIONS is nbgrader's submitted/ folder (<learner>/<lesson slug>/<notebook>), or a "
            "folder or .zip of notebooks named <learner>/<notebook>, <learner>--<lesson>.ipynb, "
            "or <learner>.ipynb "
            "with --lesson."
        ),
    )
    p.add_argument("submissions", help="folder or .zip of submissions")
    p.add_argument("--lesson", default=None, help="grade only this lesson (id or slug)")
    p.add_argument("--out", default="grades", help="output folder (default: grades)")
    p.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded in parallel (default 1)")
    p.add_argument(
        "--gradebook", default=None, help="nbgrader gradebook to merge into (default: the course's)"
    )
    p.add_argument("--no-gradebook", action="store_true", help="write the CSV and feedback only")
    p.add_argument("--profile", default=None, help="run profile (ci, laptop, gpu)")
    p.add_argument("--course", default=None, help=_COURSE_HELP)
    p.add_argument("--cpu", type=int, default=600, help="CPU seconds per submission (default 600)")
    p.add_argument("--memory", type=int, default=6144, help="memory per submission in MiB (default 6144)")
    p.add_argument("--timeout", type=int, default=900, help="wall-clock seconds per submission (default 900)")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: the profile's)")
    p.add_argument("--procs", type=int, default=64, help="processes and threads per submission (default 64)")
    p.add_argument("--output-kb", type=int, default=512, help="output kept per cell in KiB (default 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--trust-submissions",
        action="store_true",
        help="grade even where learner code cannot run in a bubblewrap sandbox (macOS, no user "
        "namespaces): the notebooks' code then runs with your rights; only for work you trust",
    )
    p.set_defaults(func=grade)

    # certify, verify, keys init and revoke: Open Badges 3.0 credentials signed with Ed25519.
    from labkit.course.credentials.commands import add_credential_commands

    add_credential_commands(sub)
