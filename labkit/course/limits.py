"""What one graded submission may use: :class:`Limits`, checked when it is made, and
:data:`SLOW_START`, how a result begins when a kernel did not start in time.

Standard library only; :mod:`labkit.course.sandbox` applies the limits.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SLOW_START", "Limits"]


#: How the reason of a submission whose kernel did not start in time begins: the class grader
#: grades such a submission once more before it reports the error.
SLOW_START = "a kernel did not start in time"


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
    startup_seconds:
        Time a kernel (the learner's or the checker) may take to start, or to start again after
        a restart, and answer; nbclient's own 60 s is too short on a busy two-core machine.
    """

    cpu_seconds: int = 600
    memory_mb: int = 6144
    wall_seconds: int = 900
    cell_seconds: int | None = None
    processes: int = 64
    output_kb: int = 512
    file_mb: int = 64
    startup_seconds: int = 240

    def __post_init__(self) -> None:
        names = (
            "cpu_seconds",
            "memory_mb",
            "wall_seconds",
            "processes",
            "output_kb",
            "file_mb",
            "startup_seconds",
        )
        for name in names:
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
