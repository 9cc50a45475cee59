"""The instructor's subcommands of ``labkit``: ``grade``, ``certify`` and ``verify``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]


def grade(args: argparse.Namespace) -> int:
    """Autograde a class, each submission in its own sandbox."""
    import os

    from labkit.course.classroom import grade_class
    from labkit.course.manifest import load_course
    from labkit.course.sandbox import Limits

    course = load_course(args.course)
    limits = Limits(
        cpu_seconds=args.cpu,
        memory_mb=args.memory,
        wall_seconds=args.timeout,
        cell_seconds=args.cell_timeout,
        processes=args.procs,
        output_kb=args.output_kb,
    )
    gradebook = None if args.no_gradebook else (args.gradebook or course.root / "gradebook.db")
    grades = grade_class(
        course,
        args.submissions,
        out=args.out,
        jobs=args.jobs,
        limits=limits,
        lesson=args.lesson,
        gradebook=gradebook,
        profile=args.profile,
        progress=not args.quiet,
    )
    print(grades.summary())
    problems = [r for r in grades.results if r.status != "graded" or r.reason or r.warnings]
    for r in problems:
        notes = "; ".join(x for x in (r.reason, *r.warnings) if x)
        print(f"{r.student}/{r.lesson}: {r.score:g}/{r.max_score:g} ({r.status}) {notes}")
    n = len(grades.results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    per = grades.wall_seconds / n if n else 0.0
    print(
        f"\n{n} submission(s) in {grades.wall_seconds:.0f} s with {args.jobs} job(s): {per:.1f} s each "
        f"(load average {load:.2f}); isolation: {', '.join(grades.isolation) or 'none'}"
    )
    print(
        f"grades: {os.path.join(args.out, 'grades.csv')}" + (f"; gradebook: {gradebook}" if gradebook else "")
    )
    return 0


def certify(args: argparse.Namespace) -> int:
    """Issue PDF certificates to the learners who pass the course's policy."""
    from labkit.course.certificates import certify as issue
    from labkit.course.certificates import load_key
    from labkit.course.manifest import load_course

    key = load_key(args.key_file)
    course = load_course(args.course)
    results = issue(course, args.grades, out=args.out, key=key, date=args.date)
    passed = [r for r in results if r[0].passed]
    for decision, pdf, _ in results:
        shown = f"{100 * decision.score:.1f}%"
        print(
            f"{decision.learner}: {shown} "
            + (f"certificate {pdf}" if pdf else f"no certificate ({decision.reason})")
        )
    print(f"{len(passed)} of {len(results)} learner(s) certified; list in {args.out}/certificates.csv")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Check a verification code or a certificate PDF."""
    from labkit.course.certificates import CertificateError, load_key
    from labkit.course.certificates import verify as check

    key = load_key(args.key_file)
    try:
        cert = check(args.code_or_pdf, key)
    except CertificateError as err:
        print(f"INVALID: {err}")
        return 1
    print(
        f"VALID: {cert.learner} completed {cert.title} ({cert.course} {cert.version}) "
        f"with {cert.score}% on {cert.date}"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register ``grade``, ``certify`` and ``verify`` on the ``labkit`` subparsers."""
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
    p.add_argument("--course", default=None, help="path to course.yml (default: found upwards)")
    p.add_argument("--cpu", type=int, default=600, help="CPU seconds per submission (default 600)")
    p.add_argument("--memory", type=int, default=6144, help="memory per submission in MiB (default 6144)")
    p.add_argument("--timeout", type=int, default=900, help="wall-clock seconds per submission (default 900)")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: the profile's)")
    p.add_argument("--procs", type=int, default=64, help="processes and threads per submission (default 64)")
    p.add_argument("--output-kb", type=int, default=512, help="output kept per cell in KiB (default 512)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=grade)

    p = sub.add_parser("certify", help="PDF certificates for the learners who pass (needs the signing key)")
    p.add_argument("grades", help="grades CSV written by labkit grade")
    p.add_argument("--out", default="certificates", help="output folder (default: certificates)")
    p.add_argument(
        "--key-file", default=None, help="file holding the signing secret (default: LABKIT_CERT_KEY_FILE)"
    )
    p.add_argument("--date", default=None, help="date on the certificates, ISO (default: today)")
    p.add_argument("--course", default=None, help="path to course.yml (default: found upwards)")
    p.set_defaults(func=certify)

    p = sub.add_parser("verify", help="check a certificate's verification code or PDF")
    p.add_argument("code_or_pdf", help="the code printed on the certificate, or the PDF file")
    p.add_argument(
        "--key-file", default=None, help="file holding the signing secret (default: LABKIT_CERT_KEY_FILE)"
    )
    p.set_defaults(func=verify)
