"""Objects the checker hands to learner code while it grades: which go by reference to the
learner kernel's object of the same name, and which stay the checker's own.

A trusted cell runs in both kernels, so its objects (a zoo model, a fake clock) go to learner
code by reference. A test cell may bind one of those names to another object
(``for m in (backdoored, clean_model)``, ``clock = ManualClock()``): that object is not the
learner kernel's, and must not be sent as if it were.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from labkit.course import remote
from labkit.resilience import ManualClock

LEARNER = """
from labkit.resilience import ManualClock
clock = ManualClock(start=1.0)
def now(c):
    return c()
def is_shared_clock(c):
    return c is clock
def forge(c):
    c.now = 99.0
    return c()
"""


@pytest.fixture
def checker() -> Iterator[dict[str, Any]]:
    """This process as the checker, a plain ipykernel as the learner's kernel; both ran the
    trusted cell ``clock = ManualClock(start=1.0)``."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    saved = (remote._user_ns, list(remote._PEER), dict(remote._SHARED))
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(LEARNER, timeout=120, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok"
        ns: dict[str, Any] = {"clock": ManualClock(start=1.0)}
        remote._user_ns = lambda: ns
        remote._PEER[:] = [remote.Peer(km.connection_file, 30)]
        assert remote.bind(["now", "is_shared_clock", "forge"], ["clock", "not_in_the_checker"]) == ""
        yield ns
    finally:
        remote._user_ns, remote._PEER[:] = saved[0], saved[1]
        remote._SHARED.clear()
        remote._SHARED.update(saved[2])
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_shared_object_goes_by_reference(checker: dict[str, Any]) -> None:
    assert checker["is_shared_clock"](checker["clock"]) is True
    assert checker["now"](checker["clock"]) == 1.0
    assert "not_in_the_checker" not in remote._SHARED


def test_a_name_the_test_rebinds_does_not_send_its_new_object_by_reference(checker: dict[str, Any]) -> None:
    shared = checker["clock"]
    checker["clock"] = ManualClock(start=7.0)  # the test cell's own clock under the shared name
    assert checker["is_shared_clock"](checker["clock"]) is False
    assert checker["now"](checker["clock"]) == 7.0, "the learner read the trusted cell's clock instead"
    checker["clock"].advance(3.0)
    assert checker["now"](checker["clock"]) == 10.0
    assert checker["is_shared_clock"](shared) is True, "the trusted cell's object still goes by reference"


def test_learner_code_cannot_set_the_checkers_object(checker: dict[str, Any]) -> None:
    mine = ManualClock(start=2.0)
    with pytest.raises(AttributeError):
        checker["forge"](mine)
    assert mine() == 2.0
