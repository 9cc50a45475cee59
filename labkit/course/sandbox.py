"""Run one learner's submission through nbgrader's autograder in an isolated worker process.

Grading runs learner code, so each submission gets its own worker process
(``labkit.course.sandbox._main(["worker"])``) that grades it in a private copy of the course and
hands back its scores through a file only the parent can read. The learner's code itself runs in
the notebook kernel, which the worker starts through a kernel spec of its own
(``_main(["kernel", ...])``) so that limits apply before any learner code runs.

What the layers do, from the outside in:

* **wall clock**: the parent kills the worker and every process of its sandbox account when
  ``Limits.wall_seconds`` pass;
* **namespaces** (Linux, as root or where user namespaces are allowed): the worker gets its own
  network namespace (only a private loopback: no network), its own mount namespace in which a
  fresh ``tmpfs`` covers ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (so other sandboxes, unpacked
  archives and the results of other learners are out of sight) and empty ``tmpfs`` mounts cover
  the real course's ``solutions/``, ``submitted/``, ``autograded/`` and ``feedback/`` folders, its
  gradebook, the submissions being graded and the output folder;
* **another account** (as root): the kernel runs as a numbered account of its own (one per
  parallel slot), so it cannot read the sandbox gradebook or source notebook (hidden tests), write
  anywhere but its notebook folder and private temporary space, or signal the grader;
* **resource limits** on the kernel: CPU seconds, address space, processes and threads, file size
  (``setrlimit``), plus a cap on the notebook output the grader keeps per cell;
* **integrity checks**: before each graded test cell the grader asks the kernel whether builtins,
  NumPy, PyTorch, labkit, the IPython shell or the names ``lk``/``np``/``torch`` were replaced by
  the submission; a test cell that would run against replaced code scores zero and the reason is
  recorded.

Without root and without user namespaces (macOS, Windows, locked-down hosts) only the separate
process, the private copy of the course, the resource limits (POSIX) and the integrity checks
apply: learner code can then read and write whatever the grading account can. Grade in a
container or as root on such hosts. :func:`isolation_support` says what the host allows.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Limits", "SandboxJob", "isolation_support", "run_sandboxed"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# Environment variables a worker and its kernel may see; everything else (keys, tokens,
# the instructor's certificate secret) is dropped.
ENV_ALLOWED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "LABKIT_PROFILE",
    "LABKIT_DATA",
    "VIRTUAL_ENV",
    "PYTHONHASHSEED",
)


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission.

    Attributes
    ----------
    cpu_seconds:
        CPU time of the kernel (all cells together); past it the kernel is stopped.
    memory_mb:
        Address space of the kernel (``RLIMIT_AS``); allocations beyond it fail with MemoryError.
    wall_seconds:
        Wall-clock time for the whole submission (kernel start, every cell, feedback).
    cell_seconds:
        Time one cell may run before it is interrupted (nbgrader's execution timeout);
        ``None`` takes the profile's ``cell_timeout``.
    processes:
        Processes and threads the kernel may have at once.
    output_kb:
        Notebook output kept per cell; the kernel is interrupted when a cell prints more.
    file_mb:
        Largest file the kernel may write.
    """

    cpu_seconds: int = 600
    memory_mb: int = 6144
    wall_seconds: int = 900
    cell_seconds: int | None = None
    processes: int = 64
    output_kb: int = 512
    file_mb: int = 64

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_mb", "wall_seconds", "processes", "output_kb", "file_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if self.cell_seconds is not None and (
            isinstance(self.cell_seconds, bool)
            or not isinstance(self.cell_seconds, int)
            or self.cell_seconds < 1
        ):
            raise ValueError(
                f"Limits.cell_seconds must be a positive integer or None, got {self.cell_seconds!r}"
            )
        if self.memory_mb < 512:
            raise ValueError(
                f"Limits.memory_mb must be at least 512 (a kernel with torch needs it), got {self.memory_mb}"
            )


@dataclass
class SandboxJob:
    """What a worker needs: the staged course, the notebook, and where to write its result."""

    student: str
    lesson: str
    notebook: str
    inbox: str
    result_path: str
    limits: Limits
    slot: int = 0
    profile: str | None = None
    cache_dir: str | None = None
    hide: list[str] = field(default_factory=list)
    uid_base: int = 61000


def isolation_support() -> dict[str, bool]:
    """Which isolation layers this host offers (tried in a throwaway child process)."""
    support = {"posix_limits": os.name == "posix", "root": hasattr(os, "geteuid") and os.geteuid() == 0}
    support["namespaces"] = False
    if sys.platform.startswith("linux"):
        code = (
            "import sys; from labkit.course.sandbox import _unshare; "
            "sys.exit(0 if _unshare(private_user=not __import__('os').geteuid() == 0) else 1)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
        support["namespaces"] = done.returncode == 0
    support["separate_account"] = support["root"]
    return support


# ---------------------------------------------------------------------------------------------
# Parent side


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED}
    env.setdefault("PATH", os.defpath)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    scripts = str(Path(sys.executable).parent)
    if scripts not in env["PATH"].split(os.pathsep):
        env["PATH"] = scripts + os.pathsep + env["PATH"]
    env.update(extra)
    return env


def _kill_account(uid: int) -> None:
    """Kill every process running as ``uid`` (a sandbox account; only as root)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0) or uid <= 0:
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def start_worker(job: SandboxJob, *, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the worker process for ``job`` (its own process group; output to ``log_path``)."""
    payload = json.dumps({**asdict(job), "limits": asdict(job.limits)})
    env = _clean_env({})
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


def stop_worker(proc: subprocess.Popen[bytes], job: SandboxJob) -> None:
    """Kill a worker, its process group and everything its sandbox account still runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _kill_account(job.uid_base + job.slot)


def run_sandboxed(job: SandboxJob, *, log_path: Path) -> dict[str, Any]:
    """Grade one submission in a worker and wait for it (at most ``limits.wall_seconds``).

    Returns the worker's raw result (not yet validated), or an ``error`` result when the worker
    ran out of time or died.
    """
    start = time.perf_counter()
    proc = start_worker(job, log_path=log_path)
    try:
        proc.wait(timeout=job.limits.wall_seconds)
    except subprocess.TimeoutExpired:
        stop_worker(proc, job)
        return {
            "status": "error",
            "reason": f"stopped after {job.limits.wall_seconds} s wall-clock limit",
            "seconds": time.perf_counter() - start,
        }
    _kill_account(job.uid_base + job.slot)
    return read_result(job, proc.returncode, log_path, time.perf_counter() - start)


def read_result(job: SandboxJob, returncode: int | None, log_path: Path, seconds: float) -> dict[str, Any]:
    """The JSON a worker wrote, or an ``error`` result saying why there is none."""
    path = Path(job.result_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
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


# ---------------------------------------------------------------------------------------------
# Namespaces and mounts (Linux)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(*, private_user: bool) -> bool:
    """Enter new network and mount namespaces (and a user namespace when not root)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | (CLONE_NEWUSER if private_user else 0)
    if libc.unshare(flags) != 0:
        return False
    if private_user:
        try:
            Path("/proc/self/setgroups").write_text("deny")
            # A non-zero uid inside the namespace: the kernel, once started, has no capabilities
            # there and so cannot undo the mounts below.
            Path("/proc/self/uid_map").write_text(f"1000 {uid} 1")
            Path("/proc/self/gid_map").write_text(f"1000 {gid} 1")
        except OSError:
            return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    _loopback_up()
    return True


def _loopback_up() -> None:
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, req))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _mount_tmpfs(target: str, mode: str = "1777") -> bool:
    libc = _libc()
    opts = f"mode={mode},size=2g".encode()
    return bool(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0)


def _expose(paths: list[Path], isolated: list[str]) -> bool:
    """Make ``paths`` reachable for another account, hiding the folders above them.

    A Python installed under a private home (``/root/.pyenv``) cannot be read by the kernel's
    account. For each such path, a tmpfs covers the first folder on the way that others cannot
    enter, and the path alone is bound back into it. Returns False when that fails.
    """
    import stat

    libc = _libc()
    covered: set[Path] = set()
    for path in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        blocked = next(
            (a for a in reversed(path.parents) if a != Path("/") and not os.stat(a).st_mode & stat.S_IXOTH),
            None,
        )
        if blocked is None or any(path.is_relative_to(c) and c != blocked for c in covered):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            if blocked not in covered:
                if not _mount_tmpfs(str(blocked), "0755"):
                    return False
                covered.add(blocked)
                isolated.append(f"hidden:{blocked}")
            path.mkdir(parents=True, exist_ok=True)
            source = f"/proc/self/fd/{fd}".encode()
            if libc.mount(source, str(path).encode(), None, MS_BIND | MS_REC, None) != 0:
                return False
        finally:
            os.close(fd)
    return True


def _hold_under(paths: list[Path], folders: list[str]) -> dict[Path, int]:
    """Open the ``paths`` that lie inside one of ``folders`` (outermost only), keyed by path."""
    roots = [Path(f).resolve() for f in folders]
    held: dict[Path, int] = {}
    for path in sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts)):
        inside = any(path.is_relative_to(r) and path != r for r in roots)
        if inside and path.is_dir() and not any(path.is_relative_to(h) for h in held):
            held[path] = os.open(path, os.O_RDONLY)
    return held


def _bind_back(held: dict[Path, int]) -> None:
    """Bind each held folder (with the mounts under it) back at its path, then close it."""
    libc = _libc()
    for path, fd in held.items():
        try:
            path.mkdir(parents=True, exist_ok=True)
            source = f"/proc/self/fd/{fd}".encode()
            if libc.mount(source, str(path).encode(), None, MS_BIND | MS_REC, None) != 0:
                raise OSError(f"could not bind {path} back into the sandbox's private temporary folder")
        finally:
            os.close(fd)


def _cover(path: str) -> bool:
    """Hide ``path`` (a folder: empty tmpfs; a file: an empty file bound over it)."""
    libc = _libc()
    p = Path(path)
    if p.is_dir():
        return _mount_tmpfs(path, "0755")
    if p.is_file():
        return bool(libc.mount(b"/dev/null", path.encode(), None, MS_BIND, None) == 0)
    return False


# ---------------------------------------------------------------------------------------------
# Worker side


_EVENTS: list[str] = []
_SYSTEM_TMP = tempfile.gettempdir()
# How workers and kernels start (not ``-m``: the package already imports this module).
_ENTRY = "import sys; from labkit.course.sandbox import _main; sys.exit(_main(sys.argv[1:]))"


def _guarded_execute_class(output_bytes: int) -> type:
    """nbgrader's Execute preprocessor with integrity checks, an output cap and kernel-death handling."""
    from nbclient.exceptions import DeadKernelError
    from nbclient.util import run_sync
    from nbformat.notebooknode import NotebookNode
    from nbgrader.preprocessors import Execute

    def error_output(ename: str, evalue: str) -> NotebookNode:
        return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    class GuardedExecute(Execute):
        _snapshot_taken = False
        _dead = False
        _tampered: str | None = None
        _out_bytes = 0
        _interrupted = False
        _interrupt_task: Any = None

        async def _guard(self, snapshot: bool) -> str | None:
            expr = (
                "__import__('labkit.course.sandbox', fromlist=['_integrity'])."
                f"_integrity(get_ipython(), snapshot={snapshot})"
            )
            reply = await self.kc.execute_interactive(
                "",
                silent=True,
                store_history=False,
                user_expressions={"g": expr},
                timeout=120,
                output_hook=lambda msg: None,
            )
            content = reply.get("content", {})
            value = content.get("user_expressions", {}).get("g", {})
            if value.get("status") != "ok":
                return f"the integrity check could not run ({value.get('ename', content.get('status'))})"
            text = value.get("data", {}).get("text/plain", "")
            return None if text in ("''", '""') else text.strip("'\"")

        async def async_execute_cell(
            self,
            cell: NotebookNode,
            cell_index: int,
            execution_count: int | None = None,
            store_history: bool = True,
        ) -> NotebookNode:
            if cell.cell_type != "code" or not cell.source.strip():
                return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
            meta = cell.metadata.get("nbgrader", {})
            grade_id = meta.get("grade_id", f"cell {cell_index}")
            if self._dead:
                cell.outputs = [error_output("KernelDied", "not run: the kernel stopped earlier")]
                return cell
            try:
                if not self._snapshot_taken:
                    self._snapshot_taken = True
                    await self._guard(snapshot=True)
                is_test = bool(meta.get("grade")) and not meta.get("solution")
                if is_test and self._tampered is None:
                    found = await self._guard(snapshot=False)
                    if found:
                        self._tampered = found
                        _EVENTS.append(f"tampering detected before {grade_id}: {found}")
                if is_test and self._tampered is not None:
                    cell.outputs = [
                        error_output("IntegrityError", f"not run: the submission replaced {self._tampered}")
                    ]
                    return cell
                self._out_bytes = 0
                self._interrupted = False
                result: NotebookNode = await super().async_execute_cell(
                    cell, cell_index, execution_count, store_history
                )
                if self._interrupted:
                    _EVENTS.append(f"{grade_id}: output over {output_bytes // 1024} KiB, cell interrupted")
                    cell.outputs.append(
                        error_output("OutputLimitExceeded", f"more than {output_bytes // 1024} KiB of output")
                    )
                return result
            except DeadKernelError:
                self._dead = True
                _EVENTS.append(f"kernel stopped in {grade_id} (CPU-time, memory or process limit)")
                cell.outputs = [error_output("KernelDied", "the kernel stopped (a resource limit was hit)")]
                return cell

        # nbclient binds its synchronous wrapper to the base class's coroutine: rebind it.
        execute_cell = run_sync(async_execute_cell)

        def output(
            self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
        ) -> NotebookNode | None:
            self._out_bytes += len(json.dumps(msg.get("content", {}), default=str))
            if self._out_bytes > output_bytes:
                if not self._interrupted:
                    self._interrupted = True
                    import asyncio

                    self._interrupt_task = asyncio.ensure_future(self.km.interrupt_kernel())
                return None
            out: NotebookNode | None = super().output(outs, msg, display_id, cell_index)
            return out

    return GuardedExecute


def _short_tracebacks_class() -> type:
    """A feedback preprocessor that keeps only the last line of errors in test cells.

    Traceback context lines would quote the hidden tests next to the failing line.
    """
    from nbconvert.preprocessors import Preprocessor

    class ShortTracebacks(Preprocessor):
        def preprocess_cell(self, cell: Any, resources: Any, index: int) -> tuple[Any, Any]:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error":
                        out["traceback"] = [f"{out.get('ename')}: {out.get('evalue')}"]
            return cell, resources

    return ShortTracebacks


def _write_kernelspec(root: Path, config: Path) -> Path:
    spec_dir = root / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [
            sys.executable,
            "-c",
            _ENTRY,
            "kernel",
            str(config),
            "-f",
            "{connection_file}",
        ],
        "display_name": "Python 3 (sandboxed)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root / "jupyter"


def _copy_from_fd(fd: int, dest: Path) -> None:
    shutil.copytree(f"/proc/self/fd/{fd}", dest, symlinks=False)


def _grade(job: SandboxJob, isolated: list[str]) -> dict[str, Any]:
    """Grade inside the (already isolated) worker. Returns the result dictionary."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    from labkit.course.manifest import load_course
    from labkit.course.nbgrader_setup import nbgrader_config

    t0 = time.perf_counter()
    limits = job.limits
    as_root = os.geteuid() == 0
    kernel_uid = job.uid_base + job.slot if as_root and "namespaces" in isolated else -1
    inbox_fd = os.open(job.inbox, os.O_RDONLY)
    cache_fd = os.open(job.cache_dir, os.O_RDONLY) if job.cache_dir and Path(job.cache_dir).is_dir() else -1
    if "namespaces" in isolated:
        for path in job.hide:
            if Path(path).exists() and _cover(path):
                isolated.append(f"hidden:{path}")
        import labkit

        needed = [
            Path(sys.base_prefix),
            Path(sys.prefix),
            Path(sys.executable).resolve().parent,
            Path(labkit.__file__).resolve().parent.parent,
        ]
        tmps = [tmp for tmp in (_SYSTEM_TMP, "/var/tmp", "/dev/shm") if Path(tmp).is_dir()]
        # Python, the course or labkit may live under a temporary folder (a checkout in /tmp):
        # hold them open so they can be bound back into the private tmpfs that covers it.
        held = _hold_under(needed, tmps)
        for tmp in tmps:
            if _mount_tmpfs(tmp):
                isolated.append(f"private:{tmp}")
        _bind_back(held)
        if not _expose(needed, isolated):
            kernel_uid = -1  # the kernel could not import Python: keep the grader's account
        if f"private:{_SYSTEM_TMP}" in isolated:
            base = Path(_SYSTEM_TMP) / "labkit-sandbox"
        else:
            base = Path(tempfile.mkdtemp(prefix="labkit-sandbox-"))
    else:
        base = Path(tempfile.mkdtemp(prefix="labkit-sandbox-"))
    if kernel_uid > 0:
        isolated.append("separate-account")
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    course_root = base / "course"
    _copy_from_fd(inbox_fd, course_root)
    os.close(inbox_fd)
    home = base / "home"
    home.mkdir()
    cache = base / "cache"
    if cache_fd >= 0:
        _copy_from_fd(cache_fd, cache)
        os.close(cache_fd)
        for lock in cache.rglob("*.lock"):
            lock.unlink()
    else:
        cache.mkdir()
    if kernel_uid > 0:
        for owned in (home, cache, *home.rglob("*"), *cache.rglob("*")):
            os.chown(owned, kernel_uid, kernel_uid)
    submission = course_root / "submission.ipynb"
    course = load_course(course_root / "course.yml")
    lesson = course.lesson(job.lesson)
    target = course_root / "submitted" / job.student / lesson.slug / str(lesson.notebook)
    target.parent.mkdir(parents=True)
    shutil.move(str(submission), target)
    os.chmod(course_root, 0o755)
    for private in ("solutions", "lessons", "submitted"):
        os.chmod(course_root / private, 0o700)
    os.chmod(course_root / "gradebook.db", 0o600)

    kernel_config = base / "kernel.json"
    kernel_config.write_text(
        json.dumps(
            {
                "uid": kernel_uid,
                "home": str(home),
                "cpu_seconds": limits.cpu_seconds,
                "memory_mb": limits.memory_mb,
                "processes": limits.processes,
                "file_mb": limits.file_mb,
            }
        )
    )
    runtime = base / "runtime"
    runtime.mkdir(mode=0o711)
    os.environ["JUPYTER_PATH"] = str(_write_kernelspec(base, kernel_config))
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime)
    os.environ["JUPYTER_CONFIG_DIR"] = str(base / "jupyter-config")
    os.environ["JUPYTER_DATA_DIR"] = str(base / "jupyter-data")
    os.environ["HOME"] = str(home)
    os.environ["LABKIT_CACHE"] = str(cache)
    os.environ["LABKIT_COURSE"] = str(course_root / "course.yml")
    os.environ["MPLCONFIGDIR"] = str(home / ".matplotlib")
    os.environ["MPLBACKEND"] = "agg"

    from nbgrader.apps import NbGraderAPI

    cfg = nbgrader_config(course, root=course_root, db_path=course_root / "gradebook.db", profile=job.profile)
    if limits.cell_seconds is not None:
        cfg.Execute.timeout = limits.cell_seconds
    guarded = _guarded_execute_class(limits.output_kb * 1024)
    cfg.Autograde.autograde_preprocessors = [
        guarded,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    cfg.GenerateFeedback.preprocessors = [*cfg.GenerateFeedback.preprocessors, _short_tracebacks_class()]
    api = NbGraderAPI(config=cfg)
    timings = {"setup": time.perf_counter() - t0}
    done = api.autograde(lesson.slug, job.student, force=True)
    timings["autograde"] = time.perf_counter() - t0 - timings["setup"]
    if not done.get("success"):
        log = str(done.get("error") or done.get("log") or "")
        return {
            "status": "error",
            "reason": _autograde_failure(log),
            "events": list(_EVENTS),
            "isolation": isolated,
            "log": log[-4000:],
        }
    feedback_html = ""
    made = api.generate_feedback(lesson.slug, job.student, force=True)
    timings["feedback"] = time.perf_counter() - t0 - timings["setup"] - timings["autograde"]
    if made.get("success"):
        html = (
            course_root / "feedback" / job.student / lesson.slug / (Path(str(lesson.notebook)).stem + ".html")
        )
        if html.is_file():
            feedback_html = html.read_text(encoding="utf-8", errors="replace")
    else:
        _EVENTS.append("feedback could not be generated")
    cells: list[dict[str, Any]] = []
    with Gradebook(f"sqlite:///{course_root / 'gradebook.db'}") as gb:
        nb = gb.find_submission_notebook(Path(str(lesson.notebook)).stem, lesson.slug, job.student)
        for grade in nb.grades:
            cells.append(
                {
                    "grade_id": grade.name,
                    "score": float(grade.auto_score or 0.0),
                    "max_score": float(grade.max_score),
                    "autograded": grade.auto_score is not None,
                }
            )
    errors = _cell_errors(course_root / "autograded" / job.student / lesson.slug / str(lesson.notebook))
    return {
        "status": "graded",
        "student": job.student,
        "lesson": lesson.slug,
        "cells": cells,
        "errors": errors,
        "events": list(_EVENTS),
        "isolation": isolated,
        "feedback_html": feedback_html,
        "timings": timings,
    }


def _autograde_failure(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for key in ("NotJSONError", "JSONDecodeError", "Notebook does not appear to be JSON", "Unreadable"):
        if any(key in ln for ln in lines):
            return "the notebook is not valid JSON (corrupt .ipynb)"
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

    found: dict[str, str] = {}
    try:
        nb = nbformat.read(path, as_version=4)
    except (OSError, ValueError):
        return found
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type != "code" or not grade_id:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found[grade_id] = f"{out.get('ename')}: {str(out.get('evalue', ''))[:200]}"
                break
    return found


def _worker_main() -> int:
    raw = json.loads(sys.stdin.read())
    raw["limits"] = Limits(**raw["limits"])
    job = SandboxJob(**raw)
    # The result file is opened before anything is hidden, then written at the very end. It is
    # not inherited by the kernel (close-on-exec) and its folder is out of the kernel's sight.
    fd = os.open(job.result_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    start = time.perf_counter()
    isolated: list[str] = ["process"]
    try:
        _set_limit("RLIMIT_CORE", 0)
        if _unshare(private_user=os.geteuid() != 0):
            isolated += ["namespaces", "no-network"]
        result = _grade(job, isolated)
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


def _set_limit(name: str, value: int) -> None:
    import resource

    res = getattr(resource, name)
    _, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(res, (value, value))


def _count_own_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
    return count


def _kernel_main(argv: list[str]) -> None:
    """Apply the limits, drop to the sandbox account, then start ipykernel."""
    config = json.loads(Path(argv[0]).read_text())
    rest = argv[1:]
    uid = int(config["uid"])
    home = config["home"]
    os.environ.update(
        {
            "HOME": home,
            "IPYTHONDIR": os.path.join(home, ".ipython"),
            "MPLCONFIGDIR": os.path.join(home, ".mpl"),
        }
    )
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead
    _set_limit("RLIMIT_CPU", int(config["cpu_seconds"]))
    _set_limit("RLIMIT_AS", int(config["memory_mb"]) * 1024 * 1024)
    _set_limit("RLIMIT_FSIZE", int(config["file_mb"]) * 1024 * 1024)
    _set_limit("RLIMIT_CORE", 0)
    if uid > 0:
        connection = rest[rest.index("-f") + 1]
        os.chown(connection, uid, uid)
        with contextlib.suppress(OSError):
            os.chown(os.getcwd(), uid, uid)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _set_limit("RLIMIT_NPROC", int(config["processes"]))
    else:
        _set_limit("RLIMIT_NPROC", _count_own_processes() + int(config["processes"]))

    # A process forked by learner code (a fork bomb, a multiprocessing worker) must not talk on
    # the kernel's channels: replies from copies of the kernel would confuse the grader.
    def mute_forked_child() -> None:
        from jupyter_client.session import Session

        Session.send = lambda self, *args, **kwargs: None  # type: ignore[method-assign]

    os.register_at_fork(after_in_child=mute_forked_child)
    from ipykernel.kernelapp import launch_new_instance

    sys.argv = ["ipykernel_launcher", *rest]
    launch_new_instance()


# ---------------------------------------------------------------------------------------------
# Integrity checks, run inside the kernel


_WATCHED_MODULES = ("builtins", "numpy", "numpy.testing", "torch", "labkit", "labkit.course", "labkit.models")
_ALIASES = {"lk": "labkit", "labkit": "labkit", "np": "numpy", "numpy": "numpy", "torch": "torch"}
_SHELL_METHODS = (
    "run_cell",
    "run_cell_async",
    "run_ast_nodes",
    "run_code",
    "showtraceback",
    "_showtraceback",
    "transform_cell",
    "should_run_async",
)
_SKIP_BUILTINS = {"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__", "__builtins__"}
_SNAPSHOT: dict[str, Any] = {}
_MISSING = object()


def _watched(shell: Any) -> Iterator[tuple[str, Any]]:
    import importlib

    for name in _WATCHED_MODULES:
        module = sys.modules.get(name)
        if module is None:
            with contextlib.suppress(ImportError):
                module = importlib.import_module(name)
        if module is None:
            continue
        yield f"sys.modules[{name!r}]", module
        public = getattr(module, "__all__", None)
        if name == "builtins":
            keys = [
                k
                for k in vars(module)
                if (k not in _SKIP_BUILTINS and not k.startswith("__"))
                or k
                in (
                    "__import__",
                    "__build_class__",
                )
            ]
        elif public is not None:
            keys = list(public)
        else:
            keys = [k for k in vars(module) if not k.startswith("_") and callable(vars(module)[k])]
        for key in keys:
            if key in vars(module):
                yield f"{name}.{key}", vars(module)[key]
    torch = sys.modules.get("torch")
    if torch is not None:
        for key in ("__eq__", "__bool__", "all", "any", "item", "equal", "allclose", "argmax", "tolist"):
            if key in vars(torch.Tensor):
                yield f"torch.Tensor.{key}", vars(torch.Tensor)[key]
    yield "sys.excepthook", sys.excepthook
    yield "sys.displayhook", sys.displayhook
    # What the shell and kernel actually call: an instance attribute if set, else the class's.
    for key in _SHELL_METHODS:
        yield f"shell.{key}", vars(shell).get(key, getattr(type(shell), key, None))
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        yield "kernel.do_execute", vars(kernel).get("do_execute", getattr(type(kernel), "do_execute", None))


def _library_wrapper(new: Any, old: Any) -> bool:
    """True when ``new`` is a library's own wrapper of ``old`` (torch wraps ``torch.manual_seed``
    when ``torch._dynamo`` is first imported): it names ``old`` as ``__wrapped__`` and its code
    lives in that library's installed files."""
    if getattr(new, "__wrapped__", None) is not old or old is None:
        return False
    code = getattr(new, "__code__", None)
    files = [getattr(sys.modules.get(name), "__file__", None) for name in ("torch", "numpy")]
    roots = [os.path.dirname(f) for f in files if f]
    return code is not None and any(code.co_filename.startswith(r + os.sep) for r in roots)


def _integrity(shell: Any, snapshot: bool = False) -> str:
    """Inside the kernel: record (``snapshot``) or check what the tests rely on.

    Returns ``''`` when nothing was replaced, else a short description of what was.
    """
    if snapshot or not _SNAPSHOT:
        _SNAPSHOT.clear()
        _SNAPSHOT.update(dict(_watched(shell)))
        _SNAPSHOT["shell.ast_transformers"] = list(shell.ast_transformers)
        return ""
    current = dict(_watched(shell))
    changed = [
        name if name in current else f"{name} (removed)"
        for name, obj in _SNAPSHOT.items()
        if name != "shell.ast_transformers"
        and current.get(name, _MISSING) is not obj
        and not _library_wrapper(current.get(name), obj)
    ]
    if shell.custom_exceptions:
        changed.append("the shell's exception handler (set_custom_exc)")
    if list(shell.ast_transformers) != _SNAPSHOT.get("shell.ast_transformers"):
        changed.append("the shell's AST transformers")
    if sys.gettrace() is not None:
        changed.append("sys.settrace")
    for alias, module in _ALIASES.items():
        original = _SNAPSHOT.get(f"sys.modules[{module!r}]")
        if original is not None and alias in shell.user_ns and shell.user_ns[alias] is not original:
            if alias in ("lk", "np", "torch") or not isinstance(shell.user_ns[alias], type(original)):
                changed.append(f"the name {alias!r} (it no longer refers to {module})")
    return ", ".join(sorted(set(changed))[:5])


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("worker", "kernel"):
        raise SystemExit("expected 'worker' or 'kernel CONFIG -f CONNECTION_FILE'")
    if argv[0] == "worker":
        return _worker_main()
    _kernel_main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
