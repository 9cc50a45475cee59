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
import torch

from labkit.course import checker_side, codec, remote
from labkit.monitoring import DriftMonitor
from labkit.resilience import GuardedModel, ManualClock
from labkit.serving import PredictionAPI

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
import torch
from labkit.resilience import GuardedModel
def build_guard(clock):
    def doubled(x):
        return 2 * x
    return GuardedModel(doubled, input_shape=(2,), value_range=None, score="msp", threshold=0.7, clock=clock)
def served_guard(clock):
    guard = build_guard(clock)
    guard(torch.zeros(1, 2))
    return guard
class LookAlike:
    _grading_fields = ("primary",)
    def _grading_state(self):
        return {"primary": print}
LookAlike.__module__, LookAlike.__qualname__ = "labkit.resilience.guard", "GuardedModel"
def look_alike():
    return LookAlike()
from labkit.monitoring import DriftMonitor
def build_monitor(reference, *, window):
    return DriftMonitor(reference, window=window, psi_threshold=0.2)
"""


@pytest.fixture(scope="module")
def checker() -> Iterator[dict[str, Any]]:
    """This process as the checker, a plain ipykernel as the learner's kernel; both ran the
    trusted cell ``clock = ManualClock(start=1.0)``."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    saved = (checker_side.user_ns, list(checker_side._PEER), dict(checker_side._SHARED))
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(LEARNER, timeout=120, output_hook=lambda m: None)
        assert reply["content"]["status"] == "ok"
        ns: dict[str, Any] = {"clock": ManualClock(start=1.0)}
        checker_side.user_ns = lambda: ns
        checker_side._PEER[:] = [remote.Peer(km.connection_file, 30)]
        learner = [
            "now",
            "is_shared_clock",
            "forge",
            "build_guard",
            "served_guard",
            "look_alike",
            "build_monitor",
        ]
        assert remote.bind(learner, ["clock", "not_in_the_checker"]) == ""
        yield ns
    finally:
        checker_side.user_ns, checker_side._PEER[:] = saved[0], saved[1]
        checker_side._SHARED.clear()
        checker_side._SHARED.update(saved[2])
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_shared_object_goes_by_reference(checker: dict[str, Any]) -> None:
    assert checker["is_shared_clock"](checker["clock"]) is True
    assert checker["now"](checker["clock"]) == 1.0
    assert "not_in_the_checker" not in checker_side._SHARED


def test_a_name_the_test_rebinds_does_not_send_its_new_object_by_reference(checker: dict[str, Any]) -> None:
    shared = checker["clock"]
    checker["clock"] = ManualClock(start=7.0)  # the test cell's own clock under the shared name
    try:
        assert checker["is_shared_clock"](checker["clock"]) is False
        assert checker["now"](checker["clock"]) == 7.0, "the learner read the trusted cell's clock instead"
        checker["clock"].advance(3.0)
        assert checker["now"](checker["clock"]) == 10.0
        assert checker["is_shared_clock"](shared) is True, "the trusted cell's object still goes by reference"
    finally:
        checker["clock"] = shared


def test_learner_code_cannot_set_the_checkers_object(checker: dict[str, Any]) -> None:
    mine = ManualClock(start=2.0)
    with pytest.raises(AttributeError):
        checker["forge"](mine)
    assert mine() == 2.0


# --------------------------------------------------------------------------------------------
# labkit objects with behaviour that describe their state: rebuilt by the checker's own class


def test_a_fresh_guard_is_rebuilt_by_the_checkers_class(checker: dict[str, Any]) -> None:
    clock = ManualClock(start=5.0)
    guard = checker["build_guard"](clock)
    assert type(guard) is GuardedModel, "the guard should be the checker's own class"
    assert guard.clock is clock, "the clock the checker passed comes back as itself"
    assert (guard.score, guard.threshold, guard.input_shape, guard.value_range) == ("msp", 0.7, (2,), None)
    assert isinstance(guard.primary, remote.RemoteFunction), "the learner's model stays a call proxy"
    out = guard(torch.tensor([[0.0, 3.0], [1.0, 1.0]]))  # the checker's code serves; the model runs remotely
    assert out.abstained.tolist() == [False, False] and out.predictions.tolist() == [1, 0]
    with pytest.raises(ValueError, match="NaN"):
        guard(torch.tensor([[float("nan"), 0.0]]))  # validated by the checker's code, not the learner's


def test_a_guard_that_has_served_stays_a_remote_object(checker: dict[str, Any]) -> None:
    guard = checker["served_guard"](ManualClock())
    assert type(guard) is remote.RemoteFunction, "its log, queue and breaker are not in the description"


def test_a_look_alike_class_does_not_cross_as_the_labkit_class(checker: dict[str, Any]) -> None:
    assert isinstance(checker["look_alike"](), remote.RemoteObject)


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ({"$state": "labkit.resilience.breaker:ManualClock", "fields": {}}, "does not describe its state"),
        ({"$state": "labkit.course.checker_side:Peer", "fields": {}}, "may cross"),
        ({"$state": "builtins:dict", "fields": {}}, "may cross"),
        ({"$state": "labkit.resilience.guard:_private", "fields": {}}, "public"),
        ({"$state": "labkit.resilience.guard:GuardedModel", "fields": []}, "not an object"),
        (
            {"$state": "labkit.resilience.guard:GuardedModel", "fields": {"primary": 1, "breaker": 2}},
            "fields it does not describe",
        ),
        ({"$state": "labkit.resilience.guard:GuardedModel", "fields": {"primary": 1}}, "constructor refuses"),
        (
            {"$state": "labkit.resilience.guard:GuardedModel", "fields": {"primary": 1, "score": "bogus"}},
            "constructor refuses",
        ),
    ],
)
def test_forged_state_is_refused(tag: dict[str, Any], why: str) -> None:
    with pytest.raises(codec.CodecError, match=why):
        codec.rebuild_state(tag, lambda v: codec.decode(v, None))


def test_grading_state_describes_only_a_fresh_guard_of_the_real_class() -> None:
    def model(x: torch.Tensor) -> torch.Tensor:
        return x

    guard = GuardedModel(model, input_shape=(2,), value_range=None, threshold=0.5)
    described = codec.grading_state(guard)
    assert described is not None and described[0] == "labkit.resilience.guard:GuardedModel"
    assert described[1]["primary"] is model and described[1]["clock"] is None
    rebuilt = codec.rebuild_state({"$state": described[0], "fields": described[1]}, lambda v: v)
    assert type(rebuilt) is GuardedModel and rebuilt.threshold == 0.5 and rebuilt.primary is model
    guard.queue.listeners.clear()
    guard.breaker.record(error=True)
    guard.breaker.record(error=True)
    guard.breaker.record(error=True)
    assert guard.breaker.state != "closed" and codec.grading_state(guard) is None, (
        "a tripped breaker is state"
    )
    assert (
        codec.grading_state(GuardedModel(model, input_shape=(2,), value_range=None, queue=guard.queue))
        is None
    )


def test_a_fresh_monitor_is_rebuilt_by_the_checkers_class(checker: dict[str, Any]) -> None:
    reference = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    monitor = checker["build_monitor"](reference, window=50)
    assert type(monitor) is DriftMonitor, "the monitor should be the checker's own class"
    assert torch.equal(monitor.reference, reference) and monitor.window == 50
    assert monitor.thresholds["psi_max"] == 0.2 and monitor.model is None
    drifted = monitor.update(reference[:100] + 3.0)  # the checker's code computes the statistics
    assert drifted.alerts, "a shift of three standard deviations should alert"


def test_grading_state_describes_only_a_monitor_that_has_seen_nothing() -> None:
    reference = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    monitor = DriftMonitor(reference, window=40, ks_alpha=0.05, patience=2)
    described = codec.grading_state(monitor)
    assert described is not None and described[0] == "labkit.monitoring.monitor:DriftMonitor"
    rebuilt = codec.rebuild_state({"$state": described[0], "fields": described[1]}, lambda v: v)
    assert (rebuilt.window, rebuilt.patience, rebuilt.thresholds) == (40, 2, monitor.thresholds)
    assert rebuilt.feature_names == monitor.feature_names
    monitor.update(reference[:20])
    assert codec.grading_state(monitor) is None, "its history is state the description does not hold"
    seeded = DriftMonitor(reference, generator=torch.Generator().manual_seed(0))
    assert codec.grading_state(seeded) is None, "a generator's state is not described"
    with pytest.raises(codec.CodecError, match="constructor refuses"):
        codec.rebuild_state({"$state": described[0], "fields": {**described[1], "window": 1}}, lambda v: v)


def test_grading_state_describes_only_an_api_that_has_answered_nothing() -> None:
    import labkit as lk

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=3).eval()
    clock = ManualClock()
    api = PredictionAPI(model, output="label", rate_limit=1.0, burst=10, query_budget=50, clock=clock)
    described = codec.grading_state(api)
    assert described is not None and described[0] == "labkit.serving.api:PredictionAPI"
    rebuilt = codec.rebuild_state({"$state": described[0], "fields": described[1]}, lambda v: v)
    assert type(rebuilt) is PredictionAPI and rebuilt.clock is clock and rebuilt.model is model
    settings = ("output", "rate_limit", "burst", "query_budget", "queries_left")
    assert [getattr(rebuilt, a) for a in settings] == [getattr(api, a) for a in settings]
    x = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    answer = rebuilt(x)
    assert isinstance(answer, torch.Tensor) and torch.equal(answer, model.predict(x))
    with pytest.raises(lk.serving.RateLimitExceeded):
        rebuilt(x[:1])  # the rebuilt bucket holds the same burst, spent by the call above
    assert codec.grading_state(rebuilt) is None, "its counters and log are not described"
    unlimited = codec.grading_state(PredictionAPI(model))
    assert unlimited is not None and unlimited[1]["burst"] is None and unlimited[1]["clock"] is None
    forged = {**described[1], "rate_limit": None}  # a burst without a rate limit
    with pytest.raises(codec.CodecError, match="constructor refuses"):
        codec.rebuild_state({"$state": described[0], "fields": forged}, lambda v: v)
    with pytest.raises(codec.CodecError, match="constructor refuses"):  # not a LabModel: no contract
        codec.rebuild_state({"$state": described[0], "fields": {**described[1], "model": net}}, lambda v: v)


def test_state_fields_count_against_the_codecs_depth_and_item_caps() -> None:
    """A ``$state`` tag's fields are decoded at the tag's depth with the running item count, so
    nesting tags inside fields cannot reset the caps."""
    nested: Any = 1
    for _ in range(codec.MAX_DEPTH + 2):
        nested = {"$state": "labkit.resilience.guard:GuardedModel", "fields": {"primary": nested}}
    with pytest.raises(codec.CodecError, match="nested deeper"):
        codec.decode(nested, None)
    many = {
        "$state": "labkit.resilience.guard:GuardedModel",
        "fields": {"primary": [0] * (codec.MAX_ITEMS + 1)},
    }
    with pytest.raises(codec.CodecError, match="items|values"):
        codec.decode({"$tuple": [many]}, None)
