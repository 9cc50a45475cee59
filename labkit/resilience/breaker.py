"""A circuit breaker that trips on error bursts and drift bursts, with an injectable clock.

States (Nygard, *Release It!*, 2007; the pattern behind Hystrix and resilience4j):

* ``closed``: the primary model serves; outcomes are kept in a sliding window.
* ``open``: tripped; requests skip the primary (the fallback serves) until ``cooldown``
  seconds have passed on the clock.
* ``half_open``: after the cool-down the primary serves again on probation; an error opens
  the breaker again at once, and after ``trial_requests`` outcomes it closes if the share of
  anomalous inputs is back below ``anomaly_rate``, else it re-opens.

Examples
--------
>>> clock = ManualClock()
>>> breaker = CircuitBreaker(failure_threshold=2, cooldown=10, trial_requests=1, clock=clock)
>>> breaker.record(error=True); breaker.record(error=True); breaker.state
'open'
>>> clock.advance(10); breaker.state
'half_open'
>>> breaker.record(); breaker.state
'closed'
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from labkit.tables import html_table, markdown_table

__all__ = ["CircuitBreaker", "ManualClock", "Transition"]

State = Literal["closed", "open", "half_open"]


class ManualClock:
    """A clock that moves only when told to: inject it to test cool-downs without sleeping.

    Examples
    --------
    >>> clock = ManualClock(start=5.0)
    >>> clock.advance(2.5)
    >>> clock()
    7.5
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (non-negative)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite non-negative number, got {seconds!r}")
        self.now += float(seconds)

    def __repr__(self) -> str:
        return f"ManualClock(now={self.now})"


@dataclass(frozen=True)
class Transition:
    """One change of state, with the time on the breaker's clock and why."""

    time: float
    before: State
    after: State
    reason: str


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class CircuitBreaker:
    """Trip on bursts of errors or of anomalous inputs; recover after a cool-down.

    Parameters
    ----------
    failure_threshold:
        Trip when this many errors are among the last ``window`` outcomes.
    window:
        Number of recent outcomes remembered while closed.
    anomaly_rate:
        Trip when at least this share of the last ``window`` outcomes were anomalous (a
        drift burst), once ``min_requests`` outcomes are in the window. In ``(0, 1]``.
    min_requests:
        Outcomes needed before the anomaly rate is judged.
    cooldown:
        Seconds on ``clock`` between tripping and the half-open trial.
    trial_requests:
        Outcomes the half-open trial waits for before closing.
    clock:
        A function returning the time in seconds (default :func:`time.monotonic`; pass a
        :class:`ManualClock` in tests and lessons).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        window: int = 100,
        anomaly_rate: float = 0.5,
        min_requests: int = 20,
        cooldown: float = 30.0,
        trial_requests: int = 20,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.failure_threshold = _positive_int(failure_threshold, "failure_threshold")
        self.window = _positive_int(window, "window")
        self.min_requests = _positive_int(min_requests, "min_requests")
        self.trial_requests = _positive_int(trial_requests, "trial_requests")
        if self.min_requests > self.window:
            raise ValueError(f"min_requests ({min_requests}) cannot exceed window ({window})")
        if isinstance(anomaly_rate, bool) or not isinstance(anomaly_rate, int | float):
            raise ValueError(f"anomaly_rate must be a number in (0, 1], got {anomaly_rate!r}")
        if not (math.isfinite(anomaly_rate) and 0 < anomaly_rate <= 1):
            raise ValueError(f"anomaly_rate must be in (0, 1], got {anomaly_rate!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float):
            raise ValueError(f"cooldown must be a non-negative number of seconds, got {cooldown!r}")
        if not (math.isfinite(cooldown) and cooldown >= 0):
            raise ValueError(f"cooldown must be a non-negative number of seconds, got {cooldown!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
        self.anomaly_rate = float(anomaly_rate)
        self.cooldown = float(cooldown)
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._state: State = "closed"
        self._events: deque[tuple[bool, bool]] = deque(maxlen=self.window)
        self._trial: list[tuple[bool, bool]] = []
        self.opened_at: float | None = None
        self.reason = ""
        self.transitions: list[Transition] = []

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> State:
        """The current state; an open breaker whose cool-down has passed becomes half-open."""
        if self._state == "open" and self.opened_at is not None:
            if self.clock() - self.opened_at >= self.cooldown:
                self._move("half_open", f"cool-down of {self.cooldown:g} s over; trying the primary again")
                self._trial = []
        return self._state

    def allow(self) -> bool:
        """Whether the primary may serve the next request (closed or half-open)."""
        return self.state != "open"

    def _move(self, after: State, reason: str) -> None:
        before = self._state
        self._state = after
        self.reason = reason
        self.transitions.append(Transition(self.clock(), before, after, reason))

    def trip(self, reason: str) -> None:
        """Open the breaker now."""
        self.opened_at = self.clock()
        self._move("open", reason)
        self._events.clear()
        self._trial = []

    def reset(self) -> None:
        """Close the breaker and forget the window (an operator's manual reset)."""
        self._events.clear()
        self._trial = []
        self.opened_at = None
        self._move("closed", "manual reset")

    # ----------------------------------------------------------------- outcomes
    def record(self, *, error: bool = False, anomalous: bool = False) -> None:
        """Record the outcome of one request served by the primary."""
        state = self.state
        if state == "open":
            return  # the primary did not serve; nothing to learn
        if state == "half_open":
            if error:
                self.trip("the primary failed during the half-open trial")
                return
            self._trial.append((error, anomalous))
            if len(self._trial) >= self.trial_requests:
                rate = sum(a for _, a in self._trial) / len(self._trial)
                if rate >= self.anomaly_rate:
                    self.trip(
                        f"still drifting in the trial: {rate:.0%} of {len(self._trial)} requests anomalous"
                    )
                else:
                    self._events.clear()
                    self.opened_at = None
                    self._move("closed", f"trial passed: {len(self._trial)} requests, {rate:.0%} anomalous")
            return
        self._events.append((error, anomalous))
        errors = sum(e for e, _ in self._events)
        if errors >= self.failure_threshold:
            self.trip(f"error burst: {errors} errors in the last {len(self._events)} requests")
            return
        if len(self._events) >= self.min_requests:
            rate = sum(a for _, a in self._events) / len(self._events)
            if rate >= self.anomaly_rate:
                self.trip(f"drift burst: {rate:.0%} of the last {len(self._events)} requests anomalous")

    def snapshot(self) -> dict[str, Any]:
        """The state, the window's error and anomaly counts, and the last reason."""
        state = self.state
        events = self._trial if state == "half_open" else list(self._events)
        return {
            "state": state,
            "requests": len(events),
            "errors": sum(e for e, _ in events),
            "anomalous": sum(a for _, a in events),
            "reason": self.reason,
            "opened_at": self.opened_at,
        }

    # ----------------------------------------------------------------- display
    def _repr_markdown_(self) -> str:
        rows = [[t.time, t.before, t.after, t.reason] for t in self.transitions]
        head = f"**Circuit breaker**: {self.state}" + (f" ({self.reason})" if self.reason else "")
        return head + ("\n\n" + markdown_table(["time", "from", "to", "reason"], rows) if rows else "")

    def _repr_html_(self) -> str:
        rows = [[t.time, t.before, t.after, t.reason] for t in self.transitions]
        return html_table(["time", "from", "to", "reason"], rows, caption=f"Circuit breaker: {self.state}")

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, reason={self.reason!r})"
