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
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Limits",
    "SandboxJob",
    "isolation_support",
    "kernel_sandbox_argv",
    "run_sandboxed",
    "sandbox_problem",
    "seccomp_filter",
    "stop_worker",
    "worker_exited",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# Environment variables a worker may see; everything else (keys, tokens, the instructor's
# certificate secret) is dropped. The kernel gets a fresh environment of its own.
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
# Inside the kernel sandbox.
SANDBOX_HOME = "/home/learner"
SANDBOX_WORK = SANDBOX_HOME + "/work"
SANDBOX_CONNECTION = "/run/labkit/connection.json"
SANDBOX_COURSE = "/run/labkit/course.yml"
# Only in the trusted checker kernel's sandbox: the learner kernel's connection file and the key.
SANDBOX_PEER = "/run/labkit/peer.json"
SANDBOX_ANSWER_KEY = "/run/labkit/answer-key"
SANDBOX_UID = 1000


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
        Notebook output kept per cell (every message type); the cell is interrupted past it.
    file_mb:
        Largest file the kernel may write, and the size of each of its tmpfs mounts.
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
    """What a worker needs: the staged course, the notebook, and where to write its result.

    ``uid`` is the account the worker drops to when started as root (chosen per job, see
    :func:`job_uid`); ``trust`` runs the kernel without bubblewrap (only with
    ``--trust-submissions``). ``course_root`` is the instructor's course (for the answer key;
    found from the working folder when not given); :func:`start_worker` fills in
    ``answer_key_dir``, the lesson's sealed key for the checker kernel, or
    ``answer_key_problem``, why there is none.
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


def job_uid() -> int:
    """A user id for one job's worker: random in a range no distribution hands out, so that two
    grading runs (or two jobs) on one host never share an account."""
    return 0x40000000 + secrets.randbelow(0x3FFF0000)


# ---------------------------------------------------------------------------------------------
# Which sandbox this host offers


def _bwrap() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None
    )


def sandbox_problem() -> str | None:
    """``None`` when learner code can run in a bubblewrap sandbox here, else why it cannot.

    Tries a throwaway sandbox with the options the kernel gets, as the account a worker would
    use (an unprivileged one when this process is root).
    """
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if _bwrap() is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    uid = str(job_uid() if os.geteuid() == 0 else -1)
    try:
        done = subprocess.run(
            [sys.executable, "-c", ";".join(_ENTRY_FAST), "probe", uid],
            capture_output=True,
            timeout=60,
            check=False,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap could not be tried ({err})"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        return "bubblewrap cannot start a sandbox here" + (f": {why[-1][:200]}" if why else "")
    return None


def isolation_support() -> dict[str, bool]:
    """Which isolation layers this host offers (tried in throwaway child processes)."""
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
    support["bubblewrap"] = sandbox_problem() is None
    support["seccomp"] = seccomp_filter() is not None
    return support


# ---------------------------------------------------------------------------------------------
# Parent side


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED}
    env.setdefault("PATH", os.defpath)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    scripts = str(Path(sys.executable).parent)
    if scripts not in env["PATH"].split(os.pathsep):
        env["PATH"] = scripts + os.pathsep + env["PATH"]
    env.update(extra or {})
    return env


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


def start_worker(job: SandboxJob, *, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the worker process for ``job`` (its own process group; output to ``log_path``)."""
    _export_answer_key(job)
    payload = json.dumps({**asdict(job), "limits": asdict(job.limits)})
    env = _clean_env()
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


# ---------------------------------------------------------------------------------------------
# Namespaces and mounts of the worker (Linux)


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
            Path("/proc/self/uid_map").write_text(f"{SANDBOX_UID} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{SANDBOX_UID} {gid} 1")
        except OSError:
            return False
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    _loopback_up()
    return True


def _loopback_up() -> None:
    import fcntl
    import socket

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(sock, siocgifflags, req))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _mount_tmpfs(target: str, mode: str = "1777") -> bool:
    libc = _libc()
    opts = f"mode={mode},size=64m".encode()
    return bool(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) == 0)


def _expose(paths: list[Path], isolated: list[str]) -> bool:
    """Make ``paths`` reachable for another account, hiding the folders above them.

    A Python installed under a private home (``/root/.pyenv``) cannot be read by the worker's
    own account. For each such path, a tmpfs covers (in the worker's mount namespace only) the
    first folder on the way that others cannot enter, and the path alone is bound back into it.
    Returns False when that fails.
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


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not drop to uid {uid}")


# ---------------------------------------------------------------------------------------------
# The kernel sandbox (bubblewrap) and its seccomp filter


# Syscalls a notebook never needs; denied with EPERM. Numbers per architecture (asm/unistd.h).
_DENIED_SYSCALLS = (
    "ptrace process_vm_readv process_vm_writev mount umount2 pivot_root chroot fsopen fsconfig "
    "fsmount fspick move_mount open_tree mount_setattr unshare setns keyctl add_key request_key "
    "bpf perf_event_open userfaultfd kexec_load kexec_file_load init_module finit_module "
    "delete_module reboot swapon swapoff acct quotactl name_to_handle_at open_by_handle_at "
    "io_uring_setup io_uring_enter io_uring_register"
).split()
_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        dict(
            ptrace=101,
            process_vm_readv=310,
            process_vm_writev=311,
            mount=165,
            umount2=166,
            pivot_root=155,
            chroot=161,
            unshare=272,
            setns=308,
            keyctl=250,
            add_key=248,
            request_key=249,
            bpf=321,
            perf_event_open=298,
            userfaultfd=323,
            kexec_load=246,
            kexec_file_load=320,
            init_module=175,
            finit_module=313,
            delete_module=176,
            reboot=169,
            swapon=167,
            swapoff=168,
            acct=163,
            quotactl=179,
            name_to_handle_at=303,
            open_by_handle_at=304,
            clone=56,
        ),
    ),
    "aarch64": (
        0xC00000B7,
        dict(
            ptrace=117,
            process_vm_readv=270,
            process_vm_writev=271,
            mount=40,
            umount2=39,
            pivot_root=41,
            chroot=51,
            unshare=97,
            setns=268,
            keyctl=219,
            add_key=217,
            request_key=218,
            bpf=280,
            perf_event_open=241,
            userfaultfd=282,
            kexec_load=104,
            kexec_file_load=294,
            init_module=105,
            finit_module=273,
            delete_module=106,
            reboot=142,
            swapon=224,
            swapoff=225,
            acct=89,
            quotactl=60,
            name_to_handle_at=264,
            open_by_handle_at=265,
            clone=220,
        ),
    ),
}
# Numbers shared by every architecture (the unified table since Linux 5.1).
_COMMON_SYSCALLS = dict(
    io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
    fsopen=430, fsconfig=431, fsmount=432, fspick=433, clone3=435, mount_setattr=442,
)  # fmt: skip
_CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A classic-BPF seccomp program (what ``bwrap --seccomp FD`` reads) for this machine.

    Denies (``EPERM``) the syscalls in ``_DENIED_SYSCALLS``, ``clone`` with any namespace flag,
    every syscall of another ABI (32-bit x86, x32) and ``clone3`` (``ENOSYS``, so that the C
    library falls back to ``clone``, whose flags the filter can see). ``None`` for an
    architecture without a table.
    """
    import platform

    arch = _SYSCALLS.get(machine or platform.machine())
    if arch is None:
        return None
    audit_arch, numbers = arch
    table = {**numbers, **_COMMON_SYSCALLS}
    ld_w_abs, jeq_k, jge_k, jset_k, ret_k = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog: list[tuple[int, int, int, int]] = [
        (ld_w_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq_k, 1, 0, audit_arch),
        (ret_k, 0, 0, eperm),
        (ld_w_abs, 0, 0, 0),  # seccomp_data.nr
    ]
    if audit_arch == 0xC000003E:
        prog += [(jge_k, 0, 1, 0x40000000), (ret_k, 0, 0, eperm)]  # x32 ABI
    prog += [(jeq_k, 0, 1, table["clone3"]), (ret_k, 0, 0, enosys)]
    # clone(flags, ...): flags in the low 32 bits of args[0] (offset 16, little-endian).
    prog += [
        (jeq_k, 0, 3, table["clone"]),
        (ld_w_abs, 0, 0, 16),
        (jset_k, 0, 1, _CLONE_NAMESPACES),
        (ret_k, 0, 0, eperm),
        (ld_w_abs, 0, 0, 0),
    ]
    for name in _DENIED_SYSCALLS:
        prog += [(jeq_k, 0, 1, table[name]), (ret_k, 0, 0, eperm)]
    prog.append((ret_k, 0, 0, allow))
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _system_binds() -> list[str]:
    """bwrap options for the system folders Python and torch need (``/usr`` and the ``/lib*``,
    ``/bin`` links or folders of this host) and a few files of ``/etc`` (no ``passwd``)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/lib", "/lib64", "/lib32", "/bin", "/sbin"):
        p = Path(name)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), name]
        elif p.is_dir():
            args += ["--ro-bind", name, name]
    etc = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "ssl", "fonts")
    for name in (f"/etc/{e}" for e in etc):
        if Path(name).exists():
            args += ["--ro-bind", name, name]
    return args


def _labkit_package() -> Path:
    """The installed ``labkit`` package folder (the one this file belongs to), never its parent."""
    return Path(__file__).resolve().parents[1]


def kernel_sandbox_argv(
    *,
    connection_fd: int,
    seccomp_fd: int | None,
    file_mb: int,
    env: dict[str, str],
    cache_files: dict[str, str],
    work_files: dict[str, str],
    command: list[str],
    bwrap: str = "bwrap",
    course_file: str | None = None,
    extra_binds: dict[str, str] | None = None,
) -> list[str]:
    """The bubblewrap command line that runs ``command`` (the kernel) in a minimal view.

    ``cache_files`` and ``work_files`` map host files to their path under the sandbox's cache
    and working folder (read-only binds into size-capped tmpfs folders); ``extra_binds`` maps
    host paths to absolute sandbox paths (read-only; the checker kernel's peer connection file
    and answer key). The network namespace is the caller's (the worker's private one),
    everything else is new.
    """
    size = str(file_mb * 1024 * 1024)
    python_paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix)}
    python_paths.add(Path(sys.executable).resolve().parent.parent)
    args = [
        bwrap,
        "--unshare-all",
        "--share-net",
        "--unshare-user",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        *_system_binds(),
    ]
    args += ["--proc", "/proc", "--dev", "/dev"]
    # The private tmpfs folders come first: Python or the course may live under /tmp (a CI clone),
    # and a bind made before them would be covered.
    for folder in ("/tmp", "/dev/shm", "/var/tmp", SANDBOX_HOME):
        args += ["--size", size, "--tmpfs", folder]
    for path in sorted(python_paths):
        args += ["--ro-bind", str(path), str(path)]
    package = _labkit_package()
    args += ["--ro-bind", str(package), str(package)]
    args += ["--dir", SANDBOX_WORK, "--dir", SANDBOX_HOME + "/.cache/labkit"]
    for src, rel in sorted(cache_files.items()):
        args += ["--ro-bind", src, f"{SANDBOX_HOME}/.cache/labkit/{rel}"]
    for src, rel in sorted(work_files.items()):
        args += ["--ro-bind", src, f"{SANDBOX_WORK}/{rel}"]
    if course_file:
        args += ["--ro-bind", course_file, SANDBOX_COURSE]
    for src, dest in sorted((extra_binds or {}).items()):
        args += ["--ro-bind", src, dest]
    data = env.get("LABKIT_DATA")
    if data and Path(data).is_dir():
        args += ["--ro-bind", data, data]
    args += ["--perms", "0444", "--file", str(connection_fd), SANDBOX_CONNECTION]
    args += ["--remount-ro", "/", "--chdir", SANDBOX_WORK, "--clearenv"]
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return [*args, "--", *command]


def _sandbox_env(worker_env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_HOME,
        "USER": "learner",
        "LOGNAME": "learner",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "LABKIT_CACHE": SANDBOX_HOME + "/.cache/labkit",
        "MPLBACKEND": "agg",
        "MPLCONFIGDIR": SANDBOX_HOME + "/.config/matplotlib",
        "IPYTHONDIR": SANDBOX_HOME + "/.ipython",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "LABKIT_COURSE": SANDBOX_COURSE,
    }
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LABKIT_PROFILE"):
        if key in worker_env:
            env[key] = worker_env[key]
    if "VIRTUAL_ENV" in worker_env:
        env["VIRTUAL_ENV"] = worker_env["VIRTUAL_ENV"]
    if "LABKIT_DATA" in worker_env:
        env["LABKIT_DATA"] = worker_env["LABKIT_DATA"]
    return env


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


def _set_limit(name: str, value: int) -> None:
    import resource

    res = getattr(resource, name)
    _, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(res, (value, value))


def _kernel_main(argv: list[str]) -> None:
    """The kernel spec's command (in the worker's account): set the limits, then exec bubblewrap
    with the kernel inside (or, trusting the submissions, the kernel itself)."""
    config = json.loads(Path(argv[0]).read_text())
    rest = argv[1:]
    connection = rest[rest.index("-f") + 1]
    _set_limit("RLIMIT_CPU", int(config["cpu_seconds"]))
    _set_limit("RLIMIT_AS", int(config["memory_mb"]) * 1024 * 1024)
    _set_limit("RLIMIT_FSIZE", int(config["file_mb"]) * 1024 * 1024)
    _set_limit("RLIMIT_CORE", 0)
    inner = [sys.executable, "-c", ";".join(_ENTRY_FAST), "kernel-inner", str(config["processes"])]
    # The trusted checker kernel reads the learner kernel's connection file (named by the worker
    # when it starts the checker) and, where the lesson has one, the answer key.
    extra_env: dict[str, str] = {}
    binds: dict[str, str] = {}
    if config.get("role") == "trusted":
        peer = os.environ.get("LABKIT_PEER_CONNECTION", "")
        if not peer or not Path(peer).is_file():
            raise SystemExit(
                "the trusted kernel needs LABKIT_PEER_CONNECTION (the learner kernel's connection file)"
            )
        extra_env["LABKIT_PEER_TIMEOUT"] = str(config.get("peer_timeout", 60))
        key = config.get("answer_key")
        if config.get("trust"):
            extra_env["LABKIT_PEER_CONNECTION"] = peer
            if key:
                extra_env["LABKIT_ANSWER_KEY_DIR"] = str(key)
        else:
            binds[peer] = SANDBOX_PEER
            extra_env["LABKIT_PEER_CONNECTION"] = SANDBOX_PEER
            if key:
                binds[str(key)] = SANDBOX_ANSWER_KEY
                extra_env["LABKIT_ANSWER_KEY_DIR"] = SANDBOX_ANSWER_KEY
    else:
        os.environ.pop("LABKIT_PEER_CONNECTION", None)
        os.environ.pop("LABKIT_ANSWER_KEY_DIR", None)
    if config.get("trust"):
        os.environ.update(extra_env)
        os.execv(sys.executable, [*inner, *rest])
    bwrap = str(config["bwrap"])
    conn_fd = os.open(connection, os.O_RDONLY | os.O_NOFOLLOW)
    seccomp = seccomp_filter()
    seccomp_fd = None
    if seccomp is not None:
        seccomp_fd = os.memfd_create("labkit-seccomp", 0)
        os.write(seccomp_fd, seccomp)
        os.lseek(seccomp_fd, 0, os.SEEK_SET)
    rest = [SANDBOX_CONNECTION if a == connection else a for a in rest]
    argv_bwrap = kernel_sandbox_argv(
        connection_fd=conn_fd,
        seccomp_fd=seccomp_fd,
        file_mb=int(config["file_mb"]),
        env={**_sandbox_env(os.environ), **extra_env},
        cache_files=dict(config.get("cache_files", {})),
        work_files=dict(config.get("work_files", {})),
        command=[*inner, *rest],
        bwrap=bwrap,
        course_file=config.get("course_file"),
        extra_binds=binds,
    )
    for fd in (conn_fd, seccomp_fd):
        if fd is not None:
            os.set_inheritable(fd, True)
    os.execv(bwrap, argv_bwrap)


def _kernel_inner(argv: list[str]) -> None:
    """Inside the sandbox: cap the processes, then start ipykernel."""
    processes = int(argv[0])
    rest = argv[1:]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead
    _set_limit("RLIMIT_NPROC", _count_own_processes() + processes)

    # A process forked by learner code (a fork bomb, a multiprocessing worker) must not talk on
    # the kernel's channels: replies from copies of the kernel would confuse the grader.
    def mute_forked_child() -> None:
        from jupyter_client.session import Session

        Session.send = lambda self, *args, **kwargs: None  # type: ignore[method-assign]

    os.register_at_fork(after_in_child=mute_forked_child)
    from ipykernel.kernelapp import launch_new_instance

    sys.argv = ["ipykernel_launcher", *rest]
    launch_new_instance()


def _probe(argv: list[str]) -> int:
    """Start a throwaway kernel sandbox (as ``argv[0]``'s uid when root) that runs Python."""
    uid = int(argv[0])
    if uid > 0 and os.geteuid() == 0:
        if not (_unshare(private_user=False) and _expose(_python_paths(), [])):
            print("could not give the worker's account its own view of Python", file=sys.stderr)
            return 1
        _drop_to(uid)
    bwrap = _bwrap()
    if bwrap is None:
        return 1
    r, w = os.pipe()
    os.write(w, b"{}")
    os.close(w)
    seccomp = seccomp_filter()
    sfd = None
    if seccomp is not None:
        sfd = os.memfd_create("labkit-seccomp", 0)
        os.write(sfd, seccomp)
        os.lseek(sfd, 0, os.SEEK_SET)
    argv_bwrap = kernel_sandbox_argv(
        connection_fd=r,
        seccomp_fd=sfd,
        file_mb=8,
        env=_sandbox_env({}),
        cache_files={},
        work_files={},
        command=[sys.executable, "-c", f"import json; json.load(open({SANDBOX_CONNECTION!r}))"],
        bwrap=bwrap,
    )
    fds = tuple(fd for fd in (r, sfd) if fd is not None)
    done = subprocess.run(argv_bwrap, pass_fds=fds, capture_output=True, timeout=60, check=False)
    sys.stderr.write(done.stderr.decode(errors="replace"))
    return done.returncode


def _python_paths() -> list[Path]:
    return [
        Path(sys.base_prefix),
        Path(sys.prefix),
        Path(sys.executable).resolve().parent,
        _labkit_package(),
    ]


def _count_own_processes() -> int:
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
    return count


# ---------------------------------------------------------------------------------------------
# Worker side


# How workers start (not ``-m``: the package already imports this module).
_ENTRY = "import sys; from labkit.course.sandbox import _main; sys.exit(_main(sys.argv[1:]))"
# How kernels start: this file alone, without importing labkit (and torch) in the launcher.
_ENTRY_FAST = [
    "import importlib.util as u, sys",
    f"s = u.spec_from_file_location('labkit_sandbox_launcher', {str(Path(__file__).resolve())!r})",
    "m = u.module_from_spec(s)",
    "sys.modules[s.name] = m",
    "s.loader.exec_module(m)",
    "sys.exit(m._main(sys.argv[1:]))",
]


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
        if not _unshare(private_user=False):
            raise OSError("could not enter a private network and mount namespace")
        isolated += ["namespaces", "no-network"]
        if job.uid > 0 and not _expose(_python_paths(), isolated):
            raise OSError("could not make Python reachable for the worker's account")
    elif _unshare(private_user=True):
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
        _drop_to(job.uid)
        isolated.append("worker-own-account")
    return base


def _grade(job: SandboxJob, isolated: list[str], base: Path) -> dict[str, Any]:
    """Grade inside the (already isolated, unprivileged) worker. Returns the result dictionary."""
    from nbgrader.api import Gradebook
    from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput

    from labkit.course.cellplan import plan_cells
    from labkit.course.manifest import load_course
    from labkit.course.nbgrader_setup import nbgrader_config
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
    course = load_course(course_root / "course.yml")
    lesson = course.lesson(job.lesson)
    target = course_root / "submitted" / job.student / lesson.slug / str(lesson.notebook)
    target.parent.mkdir(parents=True)
    shutil.move(str(submission), target)

    bwrap = None if job.trust else _bwrap()
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
        "work_files": _files_under(course_root / "lessons" / lesson.slug, skip_suffixes=(".ipynb",)),
    }
    kernel_config = base / "kernel.json"
    kernel_config.write_text(json.dumps({**kernel_settings, "role": "learner"}))
    # The trusted checker kernel: the same limits and view, plus the learner kernel's connection
    # file and the lesson's answer key (neither is ever in the learner kernel's sandbox).
    cell_seconds = int(limits.cell_seconds or course.profile(job.profile).cell_timeout)
    checker = {**kernel_settings, "role": "trusted", "peer_timeout": cell_seconds + 10}
    if job.answer_key_dir:
        checker["answer_key"] = job.answer_key_dir
        isolated.append("answer-key-checker-only")
    elif job.answer_key_problem:
        EVENTS.append(job.answer_key_problem)
    checker_config = base / "kernel-trusted.json"
    checker_config.write_text(json.dumps(checker))
    release = course_root / "lessons" / lesson.slug / str(lesson.notebook)
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

    cfg = nbgrader_config(course, root=course_root, db_path=course_root / "gradebook.db", profile=job.profile)
    if limits.cell_seconds is not None:
        cfg.Execute.timeout = limits.cell_seconds
    import nbformat

    # The plan reads the instructor's source (hidden tests included), never the submission.
    source = course_root / "solutions" / lesson.slug / str(lesson.notebook)
    plan = plan_cells(
        nbformat.read(source if source.is_file() else release, as_version=4), in_kernel=lesson.kernel_tests
    )
    if lesson.kernel_tests:
        isolated.append("kernel-scored-tests:" + "+".join(lesson.kernel_tests))
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
    done = api.autograde(lesson.slug, job.student, force=True)
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
    made = api.generate_feedback(lesson.slug, job.student, force=True)
    timings["feedback"] = time.perf_counter() - t0 - timings["setup"] - timings["autograde"]
    if made.get("success"):
        html = (
            course_root / "feedback" / job.student / lesson.slug / (Path(str(lesson.notebook)).stem + ".html")
        )
        with contextlib.suppress(OSError):
            feedback_html = _read_nofollow(html, 32 * 1024 * 1024)
        if not feedback_html:
            EVENTS.append("feedback could not be read")
    else:
        EVENTS.append("feedback could not be generated")
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
            ";".join(_ENTRY_FAST),
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
        _set_limit("RLIMIT_CORE", 0)
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


def _unzip_main(argv: list[str]) -> int:
    """Unpack the notebooks of a zip of submissions (run with limits, see ``submissions._extract``).

    Prints ``{"skipped": [[member, reason], ...]}`` or ``{"error": reason}`` as JSON.
    """
    import zipfile

    archive, dest = argv[0], Path(argv[1])
    member_cap, total_cap, ratio_cap = int(argv[2]), int(argv[3]), int(argv[4])
    _set_limit("RLIMIT_AS", 1024**3)
    _set_limit("RLIMIT_FSIZE", member_cap + 1)
    _set_limit("RLIMIT_CPU", 120)
    _set_limit("RLIMIT_CORE", 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    skipped: list[tuple[str, str]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                name = info.filename.replace("\\", "/")
                parts = Path(name).parts
                if name.startswith("/") or ".." in parts or any(":" in p for p in parts[:1]):
                    print(json.dumps({"error": f"unsafe path {info.filename!r} in the archive"}))
                    return 0
                if info.is_dir() or not name.endswith(".ipynb"):
                    continue  # only notebooks are graded
                if info.file_size > member_cap:
                    skipped.append((name, f"more than {member_cap >> 20} MiB once unpacked; not graded"))
                elif info.file_size > ratio_cap * max(info.compress_size, 1) and info.file_size > 1 << 20:
                    ratio = info.file_size // max(info.compress_size, 1)
                    skipped.append((name, f"compressed {ratio}:1 (an archive bomb?); not graded"))
                else:
                    members.append((name, info))
            if sum(info.file_size for _, info in members) > total_cap:
                print(json.dumps({"error": f"more than {total_cap >> 20} MiB of notebooks once unpacked"}))
                return 0
            for name, info in members:
                out = dest / name
                out.parent.mkdir(parents=True, exist_ok=True)
                written = 0
                with zf.open(info) as fh, open(out, "xb") as sink:
                    while chunk := fh.read(1 << 20):
                        written += len(chunk)
                        if written > min(info.file_size, member_cap):
                            raise ValueError(f"{name} unpacks to more than its stated size")
                        sink.write(chunk)
    except zipfile.BadZipFile as err:
        print(json.dumps({"error": f"not a zip archive ({err})"}))
        return 0
    except (OSError, ValueError, MemoryError, EOFError, zipfile.LargeZipFile) as err:
        print(json.dumps({"error": f"could not be unpacked ({type(err).__name__}: {err})"}))
        return 0
    print(json.dumps({"skipped": skipped}))
    return 0


def _main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit("expected 'worker', 'probe UID', 'unzip ...' or 'kernel CONFIG -f CONNECTION_FILE'")
    if argv[0] == "unzip":
        return _unzip_main(argv[1:])
    if argv[0] not in ("worker", "kernel", "kernel-inner", "probe"):
        raise SystemExit("expected 'worker', 'probe UID' or 'kernel CONFIG -f CONNECTION_FILE'")
    if argv[0] == "worker":
        return _worker_main()
    if argv[0] == "probe":
        return _probe(argv[1:])
    if argv[0] == "kernel-inner":
        _kernel_inner(argv[1:])
        return 0
    _kernel_main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
