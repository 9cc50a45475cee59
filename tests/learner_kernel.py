"""A real learner kernel for tests of the interface between the grader's two kernels.

:func:`learner_kernel` starts a plain ipykernel, runs the learner's code in it and makes this
process its checker: the checker's namespace is ``ns`` and its peer is that kernel. Whatever the
checker module held before is put back on exit, and the kernel is shut down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from labkit.course import checker_side, remote


@contextmanager
def learner_kernel(code: str, ns: dict[str, Any], *, timeout: float = 60) -> Iterator[None]:
    """Run ``code`` in a fresh learner kernel and check from this process with namespace ``ns``
    (``timeout``: the peer's wait for each answer, in seconds)."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    saved = (checker_side.user_ns, list(checker_side._PEER), dict(checker_side._SHARED))
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(code, timeout=120, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok", "the learner kernel's code failed"
        checker_side.user_ns = lambda: ns
        checker_side._PEER[:] = [remote.Peer(km.connection_file, timeout)]
        yield
    finally:
        checker_side.user_ns, checker_side._PEER[:] = saved[0], saved[1]
        checker_side._SHARED.clear()
        checker_side._SHARED.update(saved[2])
        kc.stop_channels()
        km.shutdown_kernel(now=True)
