"""The seccomp filter of the kernel sandbox, as the classic-BPF program bubblewrap loads.

:func:`seccomp_filter` assembles the program for this machine's architecture (syscall numbers
per architecture from ``asm/unistd.h``): it denies the syscalls a notebook never needs (ptrace,
mount, keyctl, bpf, unshare, ...), ``clone`` with a namespace flag and every syscall of another
ABI. :func:`seccomp_memfd` puts it in a memory file for ``bwrap --seccomp FD``.

Standard library only: :mod:`labkit.course.jail` loads this file by its path when the kernel
launcher runs without ``labkit``.
"""

from __future__ import annotations

import os
import struct

__all__ = ["seccomp_filter", "seccomp_memfd"]


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


def seccomp_memfd() -> int | None:
    """A memory file holding :func:`seccomp_filter` for bubblewrap's ``--seccomp``, or None
    where this machine has no filter."""
    seccomp = seccomp_filter()
    if seccomp is None:
        return None
    fd = os.memfd_create("labkit-seccomp", 0)
    os.write(fd, seccomp)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
