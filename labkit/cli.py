"""The ``labkit`` command line: ``labkit doctor``, ``labkit build``, ``labkit pretrain``, ``labkit serve``,
the instructor's ``grade``, ``certify`` and ``verify`` (:mod:`labkit.course.commands`), ``cohort``
(the secret that keys the answer checks) and ``dist learner`` (what learners get)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from labkit.course.commands import UsageError

__all__ = ["main"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def doctor(_: argparse.Namespace) -> int:
    """Print versions, device, cache, profile and which data sets work offline."""
    import torch

    import labkit
    from labkit.config import active_profile, cache_dir
    from labkit.course import CourseError, find_course_file, load_course
    from labkit.data import available, data_root
    from labkit.utils import pick_device

    rows: list[tuple[str, str]] = [
        ("labkit", labkit.__version__),
        ("python", platform.python_version()),
    ]
    for dist in ("torch", "torchvision", "nbgrader", "jupyterlab", "numpy", "scikit-learn"):
        rows.append((dist, _version(dist)))
    device = pick_device()
    detail = str(device)
    if device.type == "cuda":
        detail += f" ({torch.cuda.get_device_name(device)}, {torch.cuda.device_count()} GPU(s))"
    rows.append(("device", detail))
    rows.append(("torch threads", str(torch.get_num_threads())))
    rows.append(("cache dir", str(cache_dir())))
    rows.append(("data dir", str(data_root())))
    problems = 0
    path = find_course_file()
    if path is None:
        rows.append(("course.yml", "not found (built-in ci profile in use)"))
    else:
        try:
            course = load_course(path)
            ready = len(course.ready_lessons)
            rows.append(("course.yml", f"{path} ({ready} of {len(course.lessons)} lessons ready)"))
        except CourseError as err:
            rows.append(("course.yml", f"INVALID: {err}"))
            problems += 1
    try:
        profile = active_profile()
        source = "LABKIT_PROFILE" if os.environ.get("LABKIT_PROFILE") else "course.yml default"
        rows.append(("profile", f"{profile.name} ({source}): {profile.description}"))
    except (ValueError, CourseError) as err:
        rows.append(("profile", f"INVALID: {err}"))
        problems += 1
    for name, status in available().items():
        rows.append((f"data: {name}", status))
    from labkit.models import RECIPES, weights_path

    for name in RECIPES:
        try:
            cached = weights_path(name).exists()
        except (ValueError, CourseError):
            cached = False
        rows.append((f"model: {name}", "cached" if cached else "not trained yet (trains on first use)"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if problems:
        print(f"\n{problems} problem(s) found", file=sys.stderr)
    return 1 if problems else 0


def build(args: argparse.Namespace) -> int:
    """Generate the learner notebooks in lessons/ from solutions/."""
    from labkit.course import build_lessons
    from labkit.course.commands import check_lessons, course_to_write

    course = course_to_write(args.course)
    check_lessons(course, args.lesson)
    print(f"course: {course.path}")
    print(f"writing learner copies to {course.root / 'lessons'}")
    written = build_lessons(course, lessons=args.lesson or None, missing_only=args.missing)
    for path in written:
        print(f"built {path}")
    if not written:
        print("learner copies already present; nothing to build")
    return 0


def pretrain(args: argparse.Namespace) -> int:
    """Train and cache zoo models now (e.g. before a workshop without internet)."""
    from labkit.config import cache_dir
    from labkit.data import available
    from labkit.models import RECIPES, pretrained

    names = args.models or [n for n, r in RECIPES.items() if r.dataset in ("digits", "signs", "transactions")]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; choose from {', '.join(RECIPES)}")
    print(f"caching model weights in {cache_dir().resolve()}")
    status = available()
    for name in names:
        if status.get(RECIPES[name].dataset, "").startswith("missing"):
            print(f"skip {name}: {status[RECIPES[name].dataset]}")
            continue
        model = pretrained(name, profile=args.profile, progress=not args.quiet)
        acc = model.meta.get("test_accuracy")
        shown = f"{acc:.1%}" if isinstance(acc, float) else "?"
        print(f"{name}: test accuracy {shown}")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Serve a zoo model over HTTP on loopback until interrupted."""
    from labkit.models import RECIPES, pretrained
    from labkit.serving.server import ServeConfig, check_loopback, serve_forever

    if args.model not in RECIPES:
        raise UsageError(f"unknown model {args.model!r}; choose from {', '.join(RECIPES)}")
    check_loopback(args.host)
    fields = ("max_batch", "max_body_bytes", "batch_window_ms", "max_batch_rows", "queue_size", "timeout_s")
    options = {k: getattr(args, k) for k in (*fields, "threads", "dtype") if getattr(args, k) is not None}
    config = ServeConfig(**options)
    model = pretrained(args.model, progress=False)
    serve_forever(
        model,
        host=args.host,
        port=args.port,
        name=args.model,
        config=config,
        ready=lambda url: print(f"serving {args.model} at {url}", flush=True),
    )
    return 0


def cohort(args: argparse.Namespace) -> int:
    """``labkit cohort init`` (a new cohort secret) and ``labkit cohort export`` (a lesson's sealed key)."""
    from pathlib import Path

    from labkit.course.answers import AnswerKeyError, export_key, init_cohort_secret
    from labkit.course.commands import check_lessons, course_to_write

    course = course_to_write(args.course)
    try:
        if args.action == "init":
            path = init_cohort_secret(course.root, force=args.force)
            print(f"wrote a new cohort secret to {path} (mode 0600); every lesson's answer key is re-keyed")
            return 0
        check_lessons(course, [args.lesson])
        export_key(course.root, args.lesson, Path(args.dest))
    except AnswerKeyError as err:
        raise UsageError(str(err)) from None
    print(f"wrote the sealed answer key of lesson {course.lesson(args.lesson).id} to {args.dest}")
    return 0


def dist(args: argparse.Namespace) -> int:
    """Build the learner distribution (lessons, labkit, manifest; no answer material)."""
    from labkit.course.commands import course_to_write
    from labkit.course.dist import DistError, build_learner_dist

    course = course_to_write(args.course)
    try:
        written = build_learner_dist(course.root, args.dest)
    except DistError as err:
        raise UsageError(str(err)) from None
    print(
        f"wrote {len(written)} files to {args.dest}: the learner's course, scanned for answer material (none)"
    )
    return 0


def feedback(args: argparse.Namespace) -> int:
    """Append the worked solutions (never an exam's) to the feedback HTML under a folder."""
    from labkit.course.commands import course_to_write
    from labkit.course.dist import add_solutions_to_feedback

    course = course_to_write(args.course)
    changed = add_solutions_to_feedback(course.root, args.folder)
    for path in changed:
        print(f"added the worked solution to {path}")
    print(f"{len(changed)} feedback file(s) now carry the worked solution")
    return 0


class _Version(argparse.Action):
    """``--version``: imports labkit (and torch) only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from labkit import __version__

        print(f"labkit {__version__}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description="Model Hardening Lab tools")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("doctor", help="check the installation, device, data and cache")
    p.set_defaults(func=doctor)
    p = sub.add_parser("build", help="generate learner notebooks (lessons/) from solutions/")
    p.add_argument("lesson", nargs="*", help="lesson ids or slugs (default: every ready lesson)")
    p.add_argument(
        "--course",
        default=None,
        help="course.yml (or its folder) to build (default: LABKIT_COURSE, else the working "
        "directory or its parents; never the checkout labkit was installed from)",
    )
    p.add_argument("--missing", action="store_true", help="only build lessons that have no learner copy yet")
    p.set_defaults(func=build)
    p = sub.add_parser("pretrain", help="train and cache the zoo models for offline use")
    p.add_argument("models", nargs="*", help="model names (default: the offline ones)")
    p.add_argument("--profile", default=None, help="ci, laptop or gpu (default: active profile)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=pretrain)
    from labkit.course.commands import add_commands  # grade, certify, verify

    add_commands(sub)
    p = sub.add_parser("cohort", help="the cohort secret that keys the answer checks (instructor)")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = acts.add_parser("init", help="write a new random secret to .labkit/cohort.key (re-keys every lesson)")
    q.add_argument("--force", action="store_true", help="replace an existing secret")
    q.add_argument("--course", default=None, help="course.yml or its folder (default: as for build)")
    q.set_defaults(func=cohort)
    q = acts.add_parser("export", help="write one lesson's sealed answer key into a folder, for grading")
    q.add_argument("lesson", help="lesson id or slug")
    q.add_argument("dest", help="an existing folder (the grader's LABKIT_ANSWER_KEY_DIR)")
    q.add_argument("--course", default=None, help="course.yml or its folder (default: as for build)")
    q.set_defaults(func=cohort)
    p = sub.add_parser("dist", help="build what learners get (no solutions, hidden tests or keys)")
    acts = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = acts.add_parser("learner", help="copy the learner's part of the course into a new folder, scanned")
    q.add_argument("dest", help="a new or empty folder")
    q.add_argument("--course", default=None, help="course.yml or its folder (default: as for build)")
    q.set_defaults(func=dist)
    p = sub.add_parser("feedback", help="what goes with the feedback learners fetch (instructor)")
    acts = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    q = acts.add_parser("solutions", help="append worked solutions (lessons, not the exam) to feedback HTML")
    q.add_argument(
        "folder", help="feedback folder: <learner>/<lesson>/<notebook>.html (nbgrader's feedback/)"
    )
    q.add_argument("--course", default=None, help="course.yml or its folder (default: as for build)")
    q.set_defaults(func=feedback)
    p = sub.add_parser("serve", help="serve a zoo model over HTTP on 127.0.0.1 (Ctrl-C stops it)")
    p.add_argument("--model", default="digits-cnn", help="zoo model name (default: digits-cnn)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address only (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port, 0 for any free one (default: 8000)")
    p.add_argument("--max-batch", type=int, help="most inputs per request (413 above)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (413 above)")
    p.add_argument("--batch-window-ms", type=float, help="how long to gather requests into one forward pass")
    p.add_argument("--max-batch-rows", type=int, help="most inputs per forward pass")
    p.add_argument("--queue-size", type=int, help="requests that may wait (503 when full)")
    p.add_argument("--timeout-s", type=float, help="seconds before a request gets 504")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="forward-pass precision")
    p.set_defaults(func=serve)
    return parser


def _error(err: BaseException, status: int) -> int:
    """Print ``labkit: error: <message>`` on one line of stderr and return ``status``."""
    message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"labkit: error: {message or type(err).__name__}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``labkit`` with ``argv``; returns the exit status.

    A mistake in the call (a bad argument, an unknown lesson, a broken course.yml, a missing
    file) prints one line ``labkit: error: ...`` and returns 2, like argparse's own usage
    errors; a failure of the environment (a tool that did not run) returns 1. Anything else is
    a bug in labkit and keeps its traceback.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (UsageError, ValueError, OSError) as err:  # CourseError, SubmissionError, ... are ValueErrors
        return _error(err, 2)
    except RuntimeError as err:  # nbgrader or the server could not do its job
        return _error(err, 1)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
