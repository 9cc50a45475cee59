"""labkit.resilience: OOD abstention, review queue, fallback, circuit breaker and audit log."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import labkit as lk
from labkit.resilience import (
    CircuitBreaker,
    GuardedModel,
    ManualClock,
    ReviewQueue,
    energy_score,
    input_hash,
    msp_score,
    threshold_for_budget,
)


@pytest.fixture(scope="module")
def model() -> lk.LabModel:
    return lk.models.pretrained("digits-cnn", progress=False)


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    d = lk.data.load("digits", split="test")
    return {"cal": d.x[:180], "x": d.x[180:], "y": d.y[180:]}


@pytest.fixture(scope="module")
def ood() -> dict[str, torch.Tensor]:
    noise = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    signs = lk.data.load("signs", split="test", n=120).x.mean(1, keepdim=True)
    return {"noise": noise, "signs": F.interpolate(signs, size=(8, 8), mode="area")}


@pytest.fixture(scope="module")
def threshold(model: lk.LabModel, digits: dict[str, torch.Tensor]) -> float:
    return GuardedModel(model).calibrate(digits["cal"], review_budget=0.05)


def fallback_model() -> lk.LabModel:
    """A small, fixed fallback: a linear model (its answers matter less than who served them)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return lk.LabModel(net, input_shape=(1, 8, 8), num_classes=10).eval()


def test_guard_abstains_on_out_of_distribution_inputs_more_than_in_distribution(
    model: lk.LabModel, digits: dict[str, torch.Tensor], ood: dict[str, torch.Tensor], threshold: float
) -> None:
    rates = {}
    for name, x in [("cal", digits["cal"]), ("in", digits["x"]), *ood.items()]:
        guard = GuardedModel(model, threshold=threshold)  # a fresh breaker per stream
        rates[name] = guard(x).abstention_rate
    assert rates["cal"] <= 0.05  # the review budget holds on the calibration data
    assert rates["in"] <= 0.12  # and about holds on fresh in-distribution data
    assert rates["noise"] >= 0.9 and rates["signs"] >= 0.9
    assert min(rates["noise"], rates["signs"]) > 5 * rates["in"]


def test_msp_score_works_as_well(model: lk.LabModel, digits: dict[str, torch.Tensor], ood: dict) -> None:
    guard = GuardedModel(model, score="msp")
    guard.calibrate(digits["cal"], review_budget=0.1)
    assert guard(digits["x"]).abstention_rate < 0.2
    assert GuardedModel(model, score="msp", threshold=guard.threshold)(ood["noise"]).abstention_rate > 0.8


def test_review_queue_is_drained_by_a_simulated_human(
    model: lk.LabModel, digits: dict[str, torch.Tensor], ood: dict[str, torch.Tensor], threshold: float
) -> None:
    clock = ManualClock()
    guard = GuardedModel(model, threshold=threshold, clock=clock)
    out = guard(ood["noise"][:10])
    waiting = [rid for rid, d in zip(out.request_ids, out.decisions, strict=True) if d == "abstain"]
    assert len(guard.queue) == len(waiting) >= 9
    assert (out.predictions[out.abstained] == -1).all()
    clock.advance(30)
    decisions = guard.queue.drain(lambda item: 7, name="alice", limit=5)
    assert len(decisions) == 5 and len(guard.queue) == len(waiting) - 5
    record = guard.log[decisions[0].request_id]
    assert record.prediction == 7 and record.reviewer == "alice" and record.reviewed_at == 30
    text = guard.explain(decisions[0].request_id)
    assert "'alice' labelled it class 7" in text and "above the threshold" in text
    assert "still waiting" in guard.explain(guard.queue.pending[0].request_id)


def test_breaker_trips_on_a_drift_burst_fallback_serves_and_it_recovers(
    model: lk.LabModel, digits: dict[str, torch.Tensor], ood: dict[str, torch.Tensor], threshold: float
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        window=50, min_requests=20, anomaly_rate=0.5, cooldown=60, trial_requests=20, clock=clock
    )
    guard = GuardedModel(model, fallback=fallback_model(), threshold=threshold, breaker=breaker, clock=clock)
    guard(digits["x"][:30])
    assert breaker.state == "closed"
    guard(ood["noise"][:40])  # a burst of unusual inputs
    assert breaker.state == "open" and "drift burst" in breaker.reason

    served = guard(digits["x"][:10])
    assert served.paths == ["fallback"] * 10 and bool((served.predictions >= 0).all())
    assert all("circuit open" in r for r in served.reasons)
    assert "served by the fallback" in guard.explain(served.request_ids[0])

    clock.advance(59)
    assert breaker.state == "open"
    clock.advance(2)
    assert breaker.state == "half_open"
    trial = guard(digits["x"][:40])
    assert trial.paths.count("primary") >= 35
    assert breaker.state == "closed"
    assert [(t.before, t.after) for t in breaker.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_breaker_trips_on_errors_and_without_fallback_routes_to_humans(
    digits: dict[str, torch.Tensor],
) -> None:
    clock = ManualClock()
    healthy = {"up": False}
    model = lk.models.pretrained("digits-cnn", progress=False)

    def flaky(x: torch.Tensor) -> torch.Tensor:
        if not healthy["up"]:
            raise RuntimeError("model server unreachable")
        return model(x)

    breaker = CircuitBreaker(failure_threshold=3, cooldown=10, trial_requests=5, clock=clock)
    guard = GuardedModel(flaky, input_shape=(1, 8, 8), threshold=0.0, breaker=breaker, clock=clock)
    for _ in range(3):
        out = guard(digits["x"][:4])
        assert out.decisions == ["abstain"] * 4
        assert "primary failed (RuntimeError: model server unreachable)" in out.reasons[0]
        assert "no fallback model" in out.reasons[0]
    assert breaker.state == "open" and "error burst" in breaker.reason
    assert "did not serve it" in guard.explain(out.request_ids[0])
    healthy["up"] = True
    clock.advance(10)
    guard.set_threshold(1e9)  # everything in distribution now
    out = guard(digits["x"][:5])
    assert out.paths == ["primary"] * 5 and breaker.state == "closed"


def test_half_open_failure_reopens_and_persistent_drift_keeps_it_open() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        failure_threshold=1, cooldown=5, trial_requests=4, min_requests=4, window=10, clock=clock
    )
    breaker.record(error=True)
    assert breaker.state == "open" and not breaker.allow()
    breaker.record(error=True)  # ignored while open: the primary did not serve
    clock.advance(5)
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record(error=True)
    assert breaker.state == "open"
    clock.advance(5)
    for _ in range(4):
        breaker.record(anomalous=True)
    assert breaker.state == "open" and "still drifting" in breaker.reason
    breaker.reset()
    assert breaker.state == "closed" and breaker.snapshot()["requests"] == 0


def test_every_request_has_an_audit_record_that_explains_it(
    model: lk.LabModel, digits: dict[str, torch.Tensor], ood: dict[str, torch.Tensor], threshold: float
) -> None:
    guard = GuardedModel(model, threshold=threshold)
    batch = torch.cat([digits["x"][:6], ood["noise"][:2]])
    out = guard(batch)
    assert len(guard.log) == 8 and len(set(out.request_ids)) == 8
    for i, rid in enumerate(out.request_ids):
        record = guard.log[rid]
        assert record.input_hash == input_hash(batch[i])
        assert record.decision == out.decisions[i] and record.path == out.paths[i]
        assert math.isclose(record.score, float(out.scores[i]), rel_tol=1e-5)
        text = guard.explain(rid)
        assert rid in text and f"{record.score:.4g}" in text
        if record.decision == "predict":
            assert f"Served the primary's answer, class {record.prediction}" in text
            assert record.score <= threshold
        else:
            assert "routed it to human review" in text and record.score > threshold
    with pytest.raises(ValueError, match="outside"):
        guard(batch * 3)
    rejected = guard.log.records[-1]
    assert rejected.decision == "reject" and "rejected before any model ran" in guard.explain(
        rejected.request_id
    )
    assert guard.log.counts()["reject"] == 1
    assert "Audit log" in guard.log._repr_markdown_() and '"decision": "reject"' in guard.log.to_json()


def test_scores_and_threshold_helpers() -> None:
    confident, flat = torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([[0.1, 0.0, 0.0]])
    assert float(energy_score(flat)) > float(energy_score(confident))
    assert float(msp_score(flat)) > float(msp_score(confident))
    assert float(energy_score(confident)) == pytest.approx(-math.log(math.exp(9.0) + 2.0))
    scores = torch.arange(200.0)
    t = threshold_for_budget(scores, review_budget=0.05)
    assert int((scores > t).sum()) == 10


def test_bad_arguments_are_refused(model: lk.LabModel, digits: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="review_budget must be in"):
        threshold_for_budget(torch.arange(10.0), review_budget=0.0)
    with pytest.raises(ValueError, match="review_budget"):
        threshold_for_budget(torch.arange(10.0), review_budget=float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        threshold_for_budget(torch.tensor([1.0, float("nan")]), review_budget=0.1)
    with pytest.raises(ValueError, match="empty"):
        threshold_for_budget(torch.tensor([]), review_budget=0.1)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        GuardedModel(model, threshold=float("nan"))
    with pytest.raises(ValueError, match="score must be one of"):
        GuardedModel(model, score="mahalanobis")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        GuardedModel(model, temperature=0.0)
    with pytest.raises(RuntimeError, match="calibrate"):
        GuardedModel(model)(digits["x"][:2])
    with pytest.raises(ValueError, match="anomaly_rate"):
        CircuitBreaker(anomaly_rate=0.0)
    with pytest.raises(ValueError, match="min_requests"):
        CircuitBreaker(window=5, min_requests=10)
    with pytest.raises(ValueError, match="seconds"):
        ManualClock().advance(-1)
    with pytest.raises(KeyError, match="not waiting"):
        ReviewQueue().decide("r1", 3)
    with pytest.raises(KeyError, match="no request"):
        GuardedModel(model, threshold=0.0).explain("r999")


def test_a_calibrated_guard_rebuilds_with_its_review_budget(
    model: lk.LabModel, digits: dict[str, torch.Tensor]
) -> None:
    """The grader rebuilds a fresh guard from its constructor arguments: the budget its threshold
    was calibrated for is one of them, so the rebuilt guard reports it too."""
    guard = GuardedModel(model)
    guard.calibrate(digits["cal"], review_budget=0.1)
    state = guard._grading_state()
    assert state is not None and set(state) == set(GuardedModel._grading_fields)
    rebuilt = GuardedModel(**state)
    assert rebuilt.summary()["review_budget"] == 0.1 and rebuilt.threshold == guard.threshold
    with pytest.raises(ValueError, match="pass threshold too"):
        GuardedModel(model, review_budget=0.1)
    with pytest.raises(ValueError, match=r"review_budget must be in \(0, 1\)"):
        GuardedModel(model, threshold=1.0, review_budget=1.5)
