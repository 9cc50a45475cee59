"""The kernel sandbox: bubblewrap, namespaces, seccomp and limits around a learner's kernel.

This module uses the standard library only, because the kernel launcher loads this file alone
(:data:`LAUNCHER`), without importing ``labkit`` and PyTorch, every time a grading worker starts
a kernel: :func:`kernel_main` builds the bubblewrap command (:func:`kernel_sandbox_argv`, with
the :func:`seccomp_filter` on its file descriptor) and :func:`kernel_inner` sets the resource
limits inside the sandbox before the kernel runs. The limited unpacking of submitted zips
(:func:`unzip_main`) is a launcher command too. :mod:`labkit.course.sandbox` runs the jobs and
workers on top of it and says what each layer stops.

Two standard-library siblings hold the primitives: :mod:`labkit.course.namespaces` the worker's
own isolation (network namespace, private mounts, dropping root: :func:`unshare`,
:func:`expose`, :func:`drop_to`) and :mod:`labkit.course.seccomp` the syscall filter. Imported
as part of ``labkit`` this module imports them as usual; loaded alone by the launcher it loads
them by their paths, beside this file, so that the launcher still imports nothing outside the
standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or __package__:  # imported as labkit.course.jail (the worker, the tests, mypy)
    from labkit.course.namespaces import SANDBOX_UID, drop_to, expose, unshare
    from labkit.course.seccomp import seccomp_filter, seccomp_memfd
else:  # loaded alone by the launcher (LAUNCHER): the siblings by path, labkit is not imported
    import importlib.util

    def _load_sibling(name: str) -> Any:
        """The standard-library module ``name.py`` beside this file, loaded by its path."""
        path = Path(__file__).with_name(f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"labkit_jail_{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"the kernel launcher cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    _namespaces, _seccomp = _load_sibling("namespaces"), _load_sibling("seccomp")
    SANDBOX_UID, drop_to, expose, unshare = (
        _namespaces.SANDBOX_UID,
        _namespaces.drop_to,
        _namespaces.expose,
        _namespaces.unshare,
    )
    seccomp_filter, seccomp_memfd = _seccomp.seccomp_filter, _seccomp.seccomp_memfd

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
            "import sys; from labkit.course.namespaces import unshare; "
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
    writable_binds: dict[str, str] | None = None,
) -> list[str]:
    """The bubblewrap command line that runs ``command`` (the kernel) in a minimal view.

    ``cache_files`` and ``work_files`` map host files to their path under the sandbox's cache
    and working folder (read-only binds into size-capped tmpfs folders); ``extra_binds`` maps
    host paths to absolute sandbox paths (read-only; the checker kernel's peer connection file
    and answer key), ``writable_binds`` likewise but writable (the checker kernel's socket
    folder). The network namespace is the caller's (the worker's private one), everything else
    is new.
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
    for src, dest in sorted((writable_binds or {}).items()):
        args += ["--bind", src, dest]
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
    writable: dict[str, str] = {}
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
            # Its channels are Unix sockets in a folder of the worker's (see scoring.py): bound
            # writable at the same path, in this sandbox only.
            own = json.loads(Path(connection).read_text())
            if own.get("transport") == "ipc":
                writable[str(Path(own["ip"]).parent)] = str(Path(own["ip"]).parent)
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
    seccomp_fd = seccomp_memfd()
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
        writable_binds=writable,
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
    sfd = seccomp_memfd()
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
