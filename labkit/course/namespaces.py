"""The grading worker's own isolation: Linux namespaces, private mounts, another account.

:func:`unshare` puts the worker in new network and mount namespaces (and a user namespace when
it is not root), :func:`expose` makes the Python installation reachable for the worker's
account while hiding the folders above it, and :func:`drop_to` gives up root for the job's
account. The kernel sandbox (:mod:`labkit.course.jail`) adds bubblewrap and seccomp inside.

Standard library only: :mod:`labkit.course.jail` loads this file by its path when the kernel
launcher runs without ``labkit``.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path
from typing import Any

__all__ = ["SANDBOX_UID", "drop_to", "expose", "unshare"]


# Flags of unshare(2) and mount(2) (<sched.h>, <sys/mount.h>).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# The learner's user id inside the sandboxes (the worker's user namespace and the kernel's).
SANDBOX_UID = 1000


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
