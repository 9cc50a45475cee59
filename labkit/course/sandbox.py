"""Run one learner's submission through nbgrader's autograder, the learner's code in bubblewrap.

Grading runs learner code, so each submission gets its own worker process
(``labkit.course.sandbox._main(["worker"])``) that grades it in a private copy of the course and
hands back its scores through a file only the parent can read. The learner's code itself runs
only in the notebook kernel, which the worker starts through a kernel spec of its own
(``_main(["kernel", ...])``): that launcher builds a bubblewrap sandbox and the kernel starts
inside it, with its limits set before any learner code runs.

What the layers do, from the outside in:

* **wall clock**: the parent kills the worker's process group when ``Limits.wall_seconds``
  pass; each kernel sandbox dies with its worker (``--die-with-parent``), and everything in it
  with the sandbox's own PID namespace. Nothing is killed by user id, so grading runs on one
  host never touch each other;
* **the worker** (trusted code: nbgrader, nbconvert) gets its own network namespace (a private
  loopback shared only with its kernel) and, as root, drops to a user id of its own, chosen per
  job, before it starts a kernel: it never touches anything the kernel wrote with root's rights;
* **the kernel sandbox** (bubblewrap, :func:`kernel_sandbox_argv`): new user, PID, IPC, UTS,
  mount and cgroup namespaces, no capabilities, a new session, no further user namespaces, and a
  seccomp filter (:func:`seccomp_filter`) that refuses ptrace, mount, keyctl, bpf, unshare,
  setns, kexec, module loading and friends. Its file system is built from nothing: read-only
  binds of the system libraries (``/usr``), the Python installation, the virtual environment and
  the installed ``labkit`` package folder, the cached model files and the lesson's supporting
  files; size-capped tmpfs mounts for ``/tmp``, ``/dev/shm`` and the learner's home and working
  folder. The checkout (``.git``, ``solutions/``), gradebooks, other learners' work, the
  instructor's keys and ``$HOME`` are not in it, and nothing it writes lands on the host's disk;
* **resource limits** on the kernel: CPU seconds, address space, processes and threads, file
  size (``setrlimit``), tmpfs sizes, and a cap on the notebook output (every message type) that
  the grader keeps per cell;
* **scoring** (:mod:`labkit.course.scoring`): a test cell scores
  only when its execute reply is ``ok`` and it produced no error output; a non-numeric
  ``execute_result`` never scores; stderr alone (a warning) does not cost a correct cell; a cell
  that runs past its time limit and ignores the interrupt restarts the kernel, and the points
  earned before it are kept;
* **integrity checks** (advisory): before each graded test cell the grader asks the kernel
  whether builtins, NumPy, PyTorch, labkit or the IPython shell were replaced; a test cell that
  would run against replaced code scores zero and the reason is recorded. Learner code can
  defeat a check that runs in its own process, so this only catches the careless.

Where bubblewrap cannot run (macOS, Windows, hosts without user namespaces),
:func:`sandbox_problem` says why and ``labkit grade`` refuses to grade unless told to trust the
submissions; then only the separate processes, the resource limits and the scoring rules apply.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.course import jail
from labkit.course.jail import (
    LAUNCHER,
    bwrap_path,
    clean_env,
    drop_to,
    expose,
    isolation_support,
    job_uid,
    kernel_sandbox_argv,
    python_paths,
    sandbox_problem,
    seccomp_filter,
    set_limit,
    unshare,
)
from labkit.course.limits import SLOW_START, Limits

__all__ = [
    "Limits",
    "SandboxJob",
    "course_setup",
    "isolation_support",
    "job_uid",
    "kernel_sandbox_argv",
    "run_sandboxed",
    "sandbox_problem",
    "seccomp_filter",
    "skip_iri_format_checker",
    "stop_worker",
    "worker_exited",
]


@dataclass
class SandboxJob:
    """What a worker needs: the staged course, the notebook, and where to write its result.

    ``uid`` is the account the worker drops to when started as root (chosen per job, see
    :func:`job_uid`); ``trust`` runs the kernel without bubblewrap (only with
    ``--trust-submissions``). ``course_root`` is the instructor's course (for the answer key;
    found from the working folder when not given); :func:`start_worker` fills in
    ``answer_key_dir``, the lesson's sealed key for the checker kernel, or
    ``answer_key_problem``, why there is none, and ``setup``, what the worker needs from the
    staged ``course.yml`` (:func:`course_setup`), so that the worker never loads the manifest
    (which imports PyTorch, seconds of every submission).
    """

    student: str
    lesson: str
    notebook: str
    inbox: str
    result_path: str
    limits: Limits
    slot: int = 0
    profile: str | None = None
    cache_dir: str | None = None
    uid: int = -1
    trust: bool = False
    course_root: str | None = None
    answer_key_dir: str | None = None
    answer_key_problem: str | None = None
    setup: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# Parent side


def _export_answer_key(job: SandboxJob) -> None:
    """Write the lesson's sealed answer key beside the job for its checker kernel (parent side:
    the worker and its kernels never see the instructor's key file or the cohort secret).

    Uses :func:`labkit.course.answers.export_key`; a course or lesson without one, or a host
    without a cohort secret, leaves ``job.answer_key_problem`` saying why (quiz checks then fail).
    """
    from labkit.course import answers

    export = getattr(answers, "export_key", None)
    if export is None or job.answer_key_dir is not None:
        return
    from labkit.course.manifest import find_course_file

    root = Path(job.course_root) if job.course_root else None
    if root is None:
        found = find_course_file()
        root = found.resolve().parent if found is not None else None
    if root is None:
        job.answer_key_problem = "no course folder to read the answer key from"
        return
    dest = Path(job.result_path).parent / "answer-key"
    dest.mkdir(mode=0o700)
    try:
        export(root, job.lesson, dest)
    except Exception as err:
        job.answer_key_problem = f"no answer key for the checker ({type(err).__name__}: {err})"[:300]
        return
    job.answer_key_dir = str(dest)


def course_setup(course_file: Path, lesson: str, profile: str | None) -> dict[str, Any]:
    """What a worker needs from ``course_file`` (the staged ``course.yml``) to grade ``lesson``,
    as plain JSON data: the lesson's slug, notebook and kernel-scored tests, the profile's cell
    time limit, and nbgrader's settings for the course (:func:`nbgrader_config`; the worker
    points them at its own copy of the course).

    Read on the parent side: the manifest imports the library's core, PyTorch included, which a
    worker (nbgrader and two kernels, none of it PyTorch) would otherwise load for every
    submission.
    """
    from labkit.course.manifest import load_course
    from labkit.course.nbgrader_setup import nbgrader_config

    course = load_course(course_file)
    found = course.lesson(lesson)
    cfg = nbgrader_config(course, root=course_file.parent, profile=profile)
    return {
        "slug": found.slug,
        "notebook": str(found.notebook),
        "kernel_tests": list(found.kernel_tests),
        "cell_seconds": course.profile(profile).cell_timeout,
        "nbgrader": json.loads(json.dumps(cfg)),
    }


def start_worker(job: SandboxJob, *, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the worker process for ``job`` (its own process group; output to ``log_path``)."""
    _export_answer_key(job)
    if job.setup is None:
        job.setup = course_setup(Path(job.inbox) / "course.yml", job.lesson, job.profile)
    payload = json.dumps({**asdict(job), "limits": asdict(job.limits)})
    env = clean_env()
    log = open(log_path, "wb")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, "worker"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()
    assert proc.stdin is not None
    proc.stdin.write(payload.encode())
    proc.stdin.close()
    return proc


def skip_iri_format_checker() -> None:
    """Keep jsonschema from loading its optional IRI format checker in this process.

    ``rfc3987_syntax``, when installed, builds a Lark grammar as it is imported: about four
    seconds on a busy two-core machine, paid by every grading process that reads a notebook
    (nbformat imports jsonschema). nbformat's and nbgrader's schemas use no ``iri`` formats and
    nbformat validates without a format checker, so no validation changes. A process that has
    imported jsonschema already is left as it is.
    """
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def worker_exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the worker has exited, without reaping it: while it is a zombie its process
    group id cannot be handed to another process, so :func:`stop_worker` kills only its own."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def stop_worker(proc: subprocess.Popen[bytes], job: SandboxJob) -> None:
    """Kill a worker's process group, then reap the worker; its kernel sandboxes die with it
    (and everything in their PID namespaces with them).

    Call it before anything else reaps the worker (``wait``, ``poll``): once reaped, the
    worker's id may already belong to a process of another grading run on this host.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def run_sandboxed(job: SandboxJob, *, log_path: Path) -> dict[str, Any]:
    """Grade one submission in a worker and wait for it (at most ``limits.wall_seconds``).

    Returns the worker's raw result (not yet validated), or an ``error`` result when the worker
    ran out of time or died.
    """
    start = time.perf_counter()
    proc = start_worker(job, log_path=log_path)
    while not worker_exited(proc) and time.perf_counter() - start < job.limits.wall_seconds:
        time.sleep(0.2)
    finished = worker_exited(proc)
    stop_worker(proc, job)
    if not finished:
        return {
            "status": "error",
            "reason": f"stopped after {job.limits.wall_seconds} s wall-clock limit",
            "seconds": time.perf_counter() - start,
        }
    return read_result(job, proc.returncode, log_path, time.perf_counter() - start)


def read_result(job: SandboxJob, returncode: int | None, log_path: Path, seconds: float) -> dict[str, Any]:
    """The JSON a worker wrote, or an ``error`` result saying why there is none."""
    try:
        fd = os.open(job.result_path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            data = json.loads(fh.read(64 * 1024 * 1024).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        tail = ""
        with contextlib.suppress(OSError):
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-600:]
        return {
            "status": "error",
            "reason": f"the grading worker exited with code {returncode} without a result ({err})",
            "log": tail,
            "seconds": seconds,
        }
    data.setdefault("seconds", seconds)
    return data


def _files_under(folder: Path, *, skip_suffixes: tuple[str, ...] = ()) -> dict[str, str]:
    """Regular files under ``folder`` (no links followed) -> their path relative to it."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            path = Path(root) / name
            if (
                name.startswith(".")
                or name.endswith(skip_suffixes)
                or path.is_symlink()
                or not path.is_file()
            ):
                continue
            found[str(path)] = str(path.relative_to(folder))
    return found


# ---------------------------------------------------------------------------------------------
# Worker side


# How workers start (not ``-m``: the package already imports this module). ``labkit`` and
# ``labkit.course`` are entered as bare packages, their ``__init__`` not run: those import the
# whole library (PyTorch, two seconds and more) and the worker needs none of it, only this
# module, ``jail``, ``limits``, ``cellplan`` and ``scoring`` with nbgrader.
BARE_PACKAGES = [
    "import importlib.machinery as m, importlib.util as u, os, sys",
    "where = u.find_spec('labkit').submodule_search_locations[0]",
    "for name, path in (('labkit', where), ('labkit.course', os.path.join(where, 'course'))):",
    "    spec = m.ModuleSpec(name, None, is_package=True)",
    "    spec.submodule_search_locations = [path]",
    "    sys.modules[name] = u.module_from_spec(spec)",
]
_ENTRY = "\n".join(
    [*BARE_PACKAGES, "from labkit.course.sandbox import _main", "sys.exit(_main(sys.argv[1:]))"]
)


def _read_nofollow(path: Path, limit: int) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit).decode("utf-8", errors="replace")


def _prepare(job: SandboxJob, isolated: list[str]) -> Path:
    """Isolate the worker and give it a private copy of the course; returns that folder's parent.

    As root: new network and mount namespaces, Python made reachable for the job's account, the
    copy made and handed over, then root is dropped for good. Otherwise: a user namespace with
    its own network. The kernel shares that private network (only loopback, only this job).
    """
    jobdir = Path(job.inbox).parent
    base = jobdir / "work"
    as_root = os.geteuid() == 0
    if as_root:
        if not unshare(private_user=False):
            raise OSError("could not enter a private network and mount namespace")
        isolated += ["namespaces", "no-network"]
        if job.uid > 0 and not expose(python_paths(), isolated):
            raise OSError("could not make Python reachable for the worker's account")
    elif unshare(private_user=True):
        isolated += ["namespaces", "no-network"]
    os.mkdir(base, 0o700)
    os.mkdir(base / "home", 0o700)
    os.environ["HOME"] = str(base / "home")
    shutil.copytree(job.inbox, base / "course", symlinks=False)
    cache = base / "cache"
    if job.cache_dir and Path(job.cache_dir).is_dir():
        shutil.copytree(
            job.cache_dir, cache, symlinks=False, ignore=shutil.ignore_patterns("*.lock", "*.tmp*")
        )
    else:
        cache.mkdir()
    if as_root and job.uid > 0:
        for root, dirs, files in os.walk(base):
            for name in (*dirs, *files):
                os.chown(os.path.join(root, name), job.uid, job.uid, follow_symlinks=False)
        os.chown(base, job.uid, job.uid)
        if job.answer_key_dir:  # the checker kernel runs as the job's account too
            key = Path(job.answer_key_dir)
            for path in (key, *key.iterdir()):
                os.chown(path, job.uid, job.uid, follow_symlinks=False)
        drop_to(job.uid)
        isolated.append("worker-own-account")
    return base


def _grade(job: SandboxJob, isolated: list[str], base: Path) -> dict[str, Any]:
    """Grade inside the (already isolated, unprivileged) worker. Returns the result dictionary."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput
    from traitlets.config import Config

    from labkit.course.cellplan import plan_cells
    from labkit.course.scoring import (
        CHECKER_KERNEL,
        EVENTS,
        guarded_execute_class,
        strict_grades_class,
        test_feedback_class,
    )

    t0 = time.perf_counter()
    limits = job.limits
    course_root = base / "course"
    home = base / "home"
    submission = course_root / "submission.ipynb"
    setup = job.setup or course_setup(course_root / "course.yml", job.lesson, job.profile)
    slug, notebook, kernel_tests = setup["slug"], setup["notebook"], tuple(setup["kernel_tests"])
    target = course_root / "submitted" / job.student / slug / notebook
    target.parent.mkdir(parents=True)
    shutil.move(str(submission), target)

    bwrap = None if job.trust else bwrap_path()
    if not job.trust and (bwrap is None or "no-network" not in isolated):
        raise OSError("no bubblewrap sandbox for the kernel here (grade with trust only on your own work)")
    isolated.append("kernel-sandbox" if bwrap else "kernel-unsandboxed")
    if bwrap and seccomp_filter() is not None:
        isolated.append("seccomp")
    kernel_settings = {
        "trust": job.trust,
        "bwrap": bwrap,
        "cpu_seconds": limits.cpu_seconds,
        "memory_mb": limits.memory_mb,
        "processes": limits.processes,
        "file_mb": limits.file_mb,
        "course_file": str(course_root / "course.yml"),
        "cache_files": _files_under(base / "cache", skip_suffixes=(".lock",)),
        "work_files": _files_under(course_root / "lessons" / slug, skip_suffixes=(".ipynb",)),
    }
    kernel_config = base / "kernel.json"
    kernel_config.write_text(json.dumps({**kernel_settings, "role": "learner"}))
    # The trusted checker kernel: the same limits and view, plus the learner kernel's connection
    # file and the lesson's answer key (neither is ever in the learner kernel's sandbox).
    cell_seconds = int(limits.cell_seconds or setup["cell_seconds"])
    checker = {**kernel_settings, "role": "trusted", "peer_timeout": cell_seconds + 10}
    if job.answer_key_dir:
        checker["answer_key"] = job.answer_key_dir
        isolated.append("answer-key-checker-only")
    elif job.answer_key_problem:
        EVENTS.append(job.answer_key_problem)
    checker_config = base / "kernel-trusted.json"
    checker_config.write_text(json.dumps(checker))
    release = course_root / "lessons" / slug / notebook
    runtime = base / "runtime"
    runtime.mkdir(mode=0o700)
    os.environ["JUPYTER_PATH"] = str(_write_kernelspec(base, kernel_config))
    _write_kernelspec(base, checker_config, CHECKER_KERNEL)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)
    os.environ["JUPYTER_CONFIG_DIR"] = str(base / "jupyter-config")
    os.environ["JUPYTER_DATA_DIR"] = str(base / "jupyter-data")
    os.environ["HOME"] = str(home)
    os.environ["LABKIT_CACHE"] = str(base / "cache")
    os.environ["LABKIT_COURSE"] = str(course_root / "course.yml")
    os.environ["MPLCONFIGDIR"] = str(home / ".matplotlib")
    os.environ["MPLBACKEND"] = "agg"

    from nbgrader.apps import NbGraderAPI

    cfg = Config(setup["nbgrader"])
    cfg.CourseDirectory.root = str(course_root)
    cfg.CourseDirectory.db_url = f"sqlite:///{course_root / 'gradebook.db'}"
    if limits.cell_seconds is not None:
        cfg.Execute.timeout = limits.cell_seconds
    cfg.Execute.startup_timeout = limits.startup_seconds
    # Both kernels are killed once the last cell has run (bubblewrap's PID namespace takes
    # everything in it along): nothing is read from them after that, and a graceful shutdown
    # waits for a busy kernel to exit on its own.
    cfg.Execute.shutdown_kernel = "immediate"
    import nbformat

    # The plan reads the instructor's source (hidden tests included), never the submission.
    source = course_root / "solutions" / slug / notebook
    plan = plan_cells(
        nbformat.read(source if source.is_file() else release, as_version=4), in_kernel=kernel_tests
    )
    if kernel_tests:
        isolated.append("kernel-scored-tests:" + "+".join(kernel_tests))
    isolated.append("trusted-checker")
    cfg.Autograde.autograde_preprocessors = [
        guarded_execute_class(limits.output_kb * 1024, plan=plan),
        IgnorePattern,
        LimitOutput,
        strict_grades_class(),
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    feedback = list(cfg.GenerateFeedback.preprocessors)
    feedback.insert(feedback.index("nbgrader.preprocessors.ClearHiddenTests"), test_feedback_class())
    cfg.GenerateFeedback.preprocessors = feedback
    # Learner HTML (markdown cells, rich outputs) is cleaned by nbconvert (bleach): formgrader
    # shows the feedback on the instructor's origin.
    cfg.HTMLExporter.sanitize_html = True
    api = NbGraderAPI(config=cfg)
    timings = {"setup": time.perf_counter() - t0}
    done = api.autograde(slug, job.student, force=True)
    timings["autograde"] = time.perf_counter() - t0 - timings["setup"]
    if not done.get("success"):
        log = str(done.get("error") or "") + "\n" + str(done.get("log") or "")
        return {
            "status": "error",
            "reason": _autograde_failure(log),
            "events": list(EVENTS),
            "isolation": isolated,
            "log": log[-4000:],
        }
    feedback_html = ""
    made = api.generate_feedback(slug, job.student, force=True)
    timings["feedback"] = time.perf_counter() - t0 - timings["setup"] - timings["autograde"]
    if made.get("success"):
        html = course_root / "feedback" / job.student / slug / (Path(notebook).stem + ".html")
        with contextlib.suppress(OSError):
            feedback_html = _read_nofollow(html, 32 * 1024 * 1024)
        if not feedback_html:
            EVENTS.append("feedback could not be read")
    else:
        EVENTS.append("feedback could not be generated")
    cells: list[dict[str, Any]] = []
    with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(Path(notebook).stem, slug, job.student)
        for grade in nb.grades:
            cells.append(
                {
                    "grade_id": grade.name,
                    "score": float(grade.auto_score or 0.0),
                    "max_score": float(grade.max_score),
                    "autograded": grade.auto_score is not None,
                }
            )
    errors = _cell_errors(course_root / "autograded" / job.student / slug / notebook)
    return {
        "status": "graded",
        "student": job.student,
        "lesson": slug,
        "cells": cells,
        "errors": errors,
        "events": list(EVENTS),
        "isolation": isolated,
        "feedback_html": feedback_html,
        "timings": timings,
    }


def _write_kernelspec(root: Path, config: Path, name: str = "python3") -> Path:
    spec_dir = root / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [
            sys.executable,
            "-c",
            ";".join(LAUNCHER),
            "kernel",
            str(config),
            "-f",
            "{connection_file}",
        ],
        "display_name": "Python 3 (sandboxed)" if name == "python3" else "Python 3 (trusted checker)",
        "language": "python",
        # bubblewrap does not pass SIGINT on: interrupt through the control channel.
        "interrupt_mode": "message",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root / "jupyter"


def _autograde_failure(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for key in ("NotJSONError", "JSONDecodeError", "Notebook does not appear to be JSON", "Unreadable"):
        if any(key in ln for ln in lines):
            return "the notebook is not valid JSON (corrupt .ipynb)"
    started = [ln for ln in lines if "Kernel didn't respond" in ln]
    if started:
        return (
            SLOW_START + " (" + started[-1][:120] + "); the machine may have been "
            "too busy: grade this submission again, or raise Limits.startup_seconds"
        )
    interesting = [
        ln for ln in lines if re.search(r"\w+(Error|Exception)\b", ln) and "NbGraderException" not in ln
    ]
    return (
        "nbgrader could not grade it: "
        + (interesting[-1] if interesting else (lines[-1] if lines else "no log"))[:300]
    )


def _cell_errors(path: Path) -> dict[str, str]:
    """grade_id -> first error (ename: evalue) of each graded cell that raised."""
    import nbformat

    from labkit.course.scoring import error_line

    found: dict[str, str] = {}
    try:
        nb = nbformat.reads(_read_nofollow(path, 256 * 1024 * 1024), as_version=4)
    except (OSError, ValueError):
        return found
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or not grade_id:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found[grade_id] = error_line(cell, out)[:260]
                break
    return found


def _worker_main() -> int:
    skip_iri_format_checker()
    raw = json.loads(sys.stdin.read())
    raw["limits"] = Limits(**raw["limits"])
    job = SandboxJob(**raw)
    # The result file is created (never followed, never reused) before anything else, then
    # written at the very end through this descriptor. The kernel never inherits it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(job.result_path, flags, 0o600)
    start = time.perf_counter()
    isolated: list[str] = ["process"]
    try:
        set_limit("RLIMIT_CORE", 0)
        base = _prepare(job, isolated)
        result = _grade(job, isolated, base)
    except Exception as err:  # a failure to grade is a result, not a crash of the class
        result = {
            "status": "error",
            "reason": f"grading failed: {type(err).__name__}: {err}",
            "isolation": isolated,
        }
    result["seconds"] = time.perf_counter() - start
    os.write(fd, json.dumps(result).encode())
    os.close(fd)
    return 0


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "worker":
        return _worker_main()
    return jail.main(argv)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
