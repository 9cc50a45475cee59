"""The kernel sandbox: bubblewrap, namespaces, seccomp and limits around a learner's kernel.

This module uses the standard library only, because the kernel launcher loads this file alone
(:data:`LAUNCHER`), without importing ``labkit`` and PyTorch, every time a grading worker starts
a kernel: :func:`kernel_main` builds the bubblewrap command (:func:`kernel_sandbox_argv`, with
the :func:`seccomp_filter` on its file descriptor) and :func:`kernel_inner` sets the resource
limits inside the sandbox before the kernel runs. The worker's own isolation (network namespace,
private mounts, dropping root: :func:`unshare`, :func:`expose`, :func:`drop_to`) and the limited
unpacking of submitted zips (:func:`unzip_main`) live here too. :mod:`labkit.course.sandbox`
runs the jobs and workers on top of it and says what each layer stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCHER",
    "isolation_support",
    "job_uid",
    "kernel_main",
    "kernel_sandbox_argv",
    "main",
    "sandbox_problem",
    "seccomp_filter",
    "unzip_main",
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


def job_uid() -> int:
    """A user id for one job's worker: random in a range no distribution hands out, so that two
    grading runs (or two jobs) on one host never share an account."""
    return 0x40000000 + secrets.randbelow(0x3FFF0000)


def bwrap_path() -> str | None:
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
    if bwrap_path() is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    uid = str(job_uid() if os.geteuid() == 0 else -1)
    try:
        done = subprocess.run(
            [sys.executable, "-c", ";".join(LAUNCHER), "probe", uid],
            capture_output=True,
            timeout=60,
            check=False,
            env=clean_env(),
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
            "import sys; from labkit.course.jail import unshare; "
            "sys.exit(0 if unshare(private_user=not __import__('os').geteuid() == 0) else 1)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
        support["namespaces"] = done.returncode == 0
    support["separate_account"] = support["root"]
    support["bubblewrap"] = sandbox_problem() is None
    support["seccomp"] = seccomp_filter() is not None
    return support


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED}
    env.setdefault("PATH", os.defpath)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    scripts = str(Path(sys.executable).parent)
    if scripts not in env["PATH"].split(os.pathsep):
        env["PATH"] = scripts + os.pathsep + env["PATH"]
    env.update(extra or {})
    return env


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def unshare(*, private_user: bool) -> bool:
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


def expose(paths: list[Path], isolated: list[str]) -> bool:
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


def drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"could not drop to uid {uid}")


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


def set_limit(name: str, value: int) -> None:
    import resource

    res = getattr(resource, name)
    _, hard = resource.getrlimit(res)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(res, (value, value))


def _seccomp_fd() -> int | None:
    """A memory file holding :func:`seccomp_filter` for bubblewrap's ``--seccomp``, or None
    where this machine has no filter."""
    seccomp = seccomp_filter()
    if seccomp is None:
        return None
    fd = os.memfd_create("labkit-seccomp", 0)
    os.write(fd, seccomp)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def kernel_main(argv: list[str]) -> None:
    """The kernel spec's command (in the worker's account): set the limits, then exec bubblewrap
    with the kernel inside (or, trusting the submissions, the kernel itself)."""
    config = json.loads(Path(argv[0]).read_text())
    rest = argv[1:]
    connection = rest[rest.index("-f") + 1]
    set_limit("RLIMIT_CPU", int(config["cpu_seconds"]))
    set_limit("RLIMIT_AS", int(config["memory_mb"]) * 1024 * 1024)
    set_limit("RLIMIT_FSIZE", int(config["file_mb"]) * 1024 * 1024)
    set_limit("RLIMIT_CORE", 0)
    inner = [sys.executable, "-c", ";".join(LAUNCHER), "kernel-inner", str(config["processes"])]
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
    seccomp_fd = _seccomp_fd()
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


def kernel_inner(argv: list[str]) -> None:
    """Inside the sandbox: cap the processes, then start ipykernel."""
    processes = int(argv[0])
    rest = argv[1:]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG instead
    set_limit("RLIMIT_NPROC", _count_own_processes() + processes)

    # A process forked by learner code (a fork bomb, a multiprocessing worker) must not talk on
    # the kernel's channels: replies from copies of the kernel would confuse the grader.
    def mute_forked_child() -> None:
        from jupyter_client.session import Session

        Session.send = lambda self, *args, **kwargs: None  # type: ignore[method-assign]

    os.register_at_fork(after_in_child=mute_forked_child)
    from ipykernel.kernelapp import launch_new_instance

    sys.argv = ["ipykernel_launcher", *rest]
    launch_new_instance()


def probe(argv: list[str]) -> int:
    """Start a throwaway kernel sandbox (as ``argv[0]``'s uid when root) that runs Python."""
    uid = int(argv[0])
    if uid > 0 and os.geteuid() == 0:
        if not (unshare(private_user=False) and expose(python_paths(), [])):
            print("could not give the worker's account its own view of Python", file=sys.stderr)
            return 1
        drop_to(uid)
    bwrap = bwrap_path()
    if bwrap is None:
        return 1
    r, w = os.pipe()
    os.write(w, b"{}")
    os.close(w)
    sfd = _seccomp_fd()
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


def python_paths() -> list[Path]:
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


# How kernels start: this file alone, without importing labkit (and torch) in the launcher.
LAUNCHER = [
    "import importlib.util as u, sys",
    f"s = u.spec_from_file_location('labkit_jail_launcher', {str(Path(__file__).resolve())!r})",
    "m = u.module_from_spec(s)",
    "sys.modules[s.name] = m",
    "s.loader.exec_module(m)",
    "sys.exit(m.main(sys.argv[1:]))",
]


def unzip_main(argv: list[str]) -> int:
    """Unpack the notebooks of a zip of submissions (run with limits, see ``submissions._extract``).

    Prints ``{"skipped": [[member, reason], ...]}`` or ``{"error": reason}`` as JSON.
    """
    import zipfile

    archive, dest = argv[0], Path(argv[1])
    member_cap, total_cap, ratio_cap = int(argv[2]), int(argv[3]), int(argv[4])
    set_limit("RLIMIT_AS", 1024**3)
    set_limit("RLIMIT_FSIZE", member_cap + 1)
    set_limit("RLIMIT_CPU", 120)
    set_limit("RLIMIT_CORE", 0)
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


def main(argv: list[str]) -> int:
    """The launcher's commands: ``kernel CONFIG -f CONNECTION_FILE``, ``kernel-inner``,
    ``probe UID`` and ``unzip ARCHIVE DEST``."""
    if not argv or argv[0] not in ("kernel", "kernel-inner", "probe", "unzip"):
        raise SystemExit("expected 'probe UID', 'unzip ...' or 'kernel CONFIG -f CONNECTION_FILE'")
    if argv[0] == "unzip":
        return unzip_main(argv[1:])
    if argv[0] == "probe":
        return probe(argv[1:])
    if argv[0] == "kernel-inner":
        kernel_inner(argv[1:])
        return 0
    kernel_main(argv[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
