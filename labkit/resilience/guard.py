"""GuardedModel: validation, OOD abstention, human review, fallback, circuit breaker, audit log."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from labkit.classifier import Classifier, batched_logits, check_model
from labkit.contract import LabModel
from labkit.resilience.audit import AuditLog, AuditRecord, input_hash
from labkit.resilience.breaker import CircuitBreaker
from labkit.resilience.review import ReviewDecision, ReviewItem, ReviewQueue
from labkit.resilience.scores import SCORES, ScoreName, check_review_budget, threshold_for_budget
from labkit.tables import html_table, markdown_table
from labkit.utils import check_images

__all__ = ["GuardedModel", "GuardedPrediction"]


@dataclass(frozen=True)
class GuardedPrediction:
    """The answer to one batch: one entry per input.

    Attributes
    ----------
    request_ids:
        Ids of the requests in the audit log.
    predictions:
        Served class per input, ``-1`` where the guard abstained (routed to review).
    scores:
        Anomaly scores (NaN where no model scored the input).
    decisions, paths, reasons:
        Per input, as in the audit log.
    """

    request_ids: list[str]
    predictions: torch.Tensor
    scores: torch.Tensor
    decisions: list[str]
    paths: list[str]
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.request_ids)

    @property
    def abstained(self) -> torch.Tensor:
        """Boolean mask of the inputs routed to human review."""
        return torch.tensor([d == "abstain" for d in self.decisions], dtype=torch.bool)

    @property
    def abstention_rate(self) -> float:
        return sum(d == "abstain" for d in self.decisions) / len(self) if len(self) else 0.0

    def _rows(self) -> list[list[object]]:
        return [
            [rid, int(p), float(s), d, path, why]
            for rid, p, s, d, path, why in zip(
                self.request_ids,
                self.predictions.tolist(),
                self.scores.tolist(),
                self.decisions,
                self.paths,
                self.reasons,
                strict=True,
            )
        ]

    _HEADERS = ("request", "prediction", "score", "decision", "path", "reason")

    def _repr_markdown_(self) -> str:
        head = f"**{len(self)} requests**, {self.abstention_rate:.1%} routed to review"
        return head + "\n\n" + markdown_table(list(self._HEADERS), self._rows()[:50])

    def _repr_html_(self) -> str:
        caption = f"{len(self)} requests, {self.abstention_rate:.1%} routed to review"
        return html_table(list(self._HEADERS), self._rows()[:50], caption=caption)


class GuardedModel:
    """Serve a classifier behind input validation, OOD abstention, a breaker and an audit log.

    For each batch the guard

    1. **validates** it (shape, dtype, finiteness, value range); invalid batches are logged
       as ``reject`` and the ``ValueError``/``TypeError`` is raised to the caller;
    2. asks the **circuit breaker** whether the primary may serve; if it is open the
       **fallback** serves (or, without one, every input goes to human review);
    3. runs the **primary** and scores each input with the **energy score** (or MSP);
       inputs scoring above the **threshold** abstain and wait in the **review queue**; if the
       primary raises or returns non-finite logits, the breaker records an error and the
       fallback serves the batch;
    4. tells the breaker each outcome (errors and anomalous inputs), so that an error burst
       or a drift burst (many anomalous inputs) opens it, and it recovers through a
       half-open trial after its cool-down;
    5. writes one :class:`~labkit.resilience.AuditRecord` per input, which
       :meth:`explain` turns into a sentence.

    Why the energy score: see :mod:`labkit.resilience.scores`. In short, it uses only the
    logits (so it guards any model without refitting anything), tracks the input density
    better than the maximum softmax probability, which saturates near 1 for confident but
    wrong inputs, and beats MSP on OOD benchmarks (Liu et al., NeurIPS 2020,
    arXiv:2010.03759); Mahalanobis scores need per-layer class-conditional Gaussians.

    Parameters
    ----------
    primary:
        The model to protect: a module or callable mapping a batch to logits. Exceptions it
        raises count as outages.
    fallback:
        A simpler, trusted model used while the breaker is open or when the primary fails.
        It is not gated by the anomaly threshold (which was calibrated for the primary).
    input_shape, value_range:
        The input contract; taken from ``primary`` when it is a :class:`~labkit.LabModel`.
        ``value_range=None`` checks only finiteness (tabular features).
    score:
        ``"energy"`` (default) or ``"msp"``.
    temperature:
        Temperature of the score.
    threshold:
        Inputs with a score above it abstain. Set it with :meth:`calibrate` for a review
        budget, or pass one.
    review_budget:
        The share of in-distribution traffic ``threshold`` was calibrated to send to review,
        when it was (:meth:`calibrate` sets both); reported by :meth:`summary`.
    breaker:
        A :class:`CircuitBreaker` (default: one on the same clock).
    queue:
        A :class:`ReviewQueue` (default: a new one on the same clock).
    clock:
        Time source for the log, the breaker and the queue (default :func:`time.monotonic`).
    batch_size:
        Inputs per forward pass.

    Examples
    --------
    >>> import labkit as lk
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> guard = GuardedModel(model)
    >>> _ = guard.calibrate(torch.rand(200, 1, 2, 2, generator=torch.Generator().manual_seed(0)),
    ...                     review_budget=0.05)
    >>> out = guard(torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(1)))
    >>> len(out), out.paths[0]
    (4, 'primary')
    >>> guard.explain(out.request_ids[0]).startswith("Request r000001")
    True
    """

    def __init__(
        self,
        primary: Classifier,
        *,
        fallback: Classifier | None = None,
        input_shape: Sequence[int] | None = None,
        value_range: tuple[float, float] | str | None = "auto",
        score: ScoreName = "energy",
        temperature: float = 1.0,
        threshold: float | None = None,
        review_budget: float | None = None,
        breaker: CircuitBreaker | None = None,
        queue: ReviewQueue | None = None,
        clock: Callable[[], float] | None = None,
        batch_size: int = 512,
    ) -> None:
        self.primary = check_model(primary, "primary")
        self.fallback = check_model(fallback, "fallback") if fallback is not None else None
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        SCORES[score](torch.zeros(1, 2), temperature=temperature)  # validates the temperature
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        if queue is not None and not isinstance(queue, ReviewQueue):
            raise TypeError(f"queue must be a ReviewQueue, got {type(queue).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        if input_shape is None and isinstance(primary, LabModel):
            input_shape = primary.input_shape
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        if value_range == "auto":
            value_range = primary.value_range if isinstance(primary, LabModel) else (0.0, 1.0)
        if isinstance(value_range, str):
            raise ValueError(f"value_range must be (low, high), None or 'auto', got {value_range!r}")
        self.value_range: tuple[float, float] | None = value_range
        self.score = score
        self.temperature = float(temperature)
        self.threshold: float | None = None
        if threshold is not None:
            self.set_threshold(threshold)
        self.review_budget: float | None = None
        if review_budget is not None:
            if threshold is None:
                raise ValueError("review_budget describes a calibrated threshold: pass threshold too")
            self.review_budget = check_review_budget(review_budget)
        self.breaker = breaker if breaker is not None else CircuitBreaker(clock=self.clock)
        self.queue = queue if queue is not None else ReviewQueue(clock=self.clock)
        self.queue.listeners.append(self._on_review)
        self.log = AuditLog()
        self.batch_size = batch_size
        self._next = 0
        # the breaker and queue when the guard made them itself (see _grading_state)
        self._made = (self.breaker, self.queue) if breaker is None and queue is None else None

    # ----------------------------------------------------------------- grading
    # A guard that has served nothing yet crosses from a learner's kernel to the grader as these
    # constructor arguments, which the grader's own class validates.
    _grading_fields: ClassVar[tuple[str, ...]] = (
        "primary",
        "fallback",
        "input_shape",
        "value_range",
        "score",
        "temperature",
        "threshold",
        "review_budget",
        "clock",
        "batch_size",
    )

    def _grading_state(self) -> dict[str, Any] | None:
        """The constructor arguments that rebuild this guard, or ``None`` once it has served,
        logged or queued anything or was given its own breaker or queue (state they do not hold)."""
        fresh = (
            self._next == 0
            and len(self.log) == 0
            and self._made is not None
            and self.breaker is self._made[0]
            and self.queue is self._made[1]
            and len(self.queue) == 0
            and self.breaker.state == "closed"
            and not self.breaker.transitions
        )
        if not fresh:
            return None
        return {
            "primary": self.primary,
            "fallback": self.fallback,
            "input_shape": self.input_shape,
            "value_range": self.value_range,
            "score": self.score,
            "temperature": self.temperature,
            "threshold": self.threshold,
            "review_budget": self.review_budget,
            "clock": None if self.clock is time.monotonic else self.clock,
            "batch_size": self.batch_size,
        }

    # ----------------------------------------------------------------- threshold
    def set_threshold(self, threshold: float) -> None:
        """Use a fixed threshold (inputs scoring above it abstain)."""
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
        ):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        self.threshold = float(threshold)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The primary's anomaly scores for a valid batch (no logging, no breaker)."""
        self._validate(x)
        logits = batched_logits(self.primary, x, batch_size=self.batch_size)
        return SCORES[self.score](logits, temperature=self.temperature).cpu()

    def calibrate(self, x: torch.Tensor, *, review_budget: float = 0.05) -> float:
        """Set the threshold so that at most ``review_budget`` of in-distribution traffic abstains.

        ``x`` should be held-out in-distribution inputs (not the training set, whose scores
        are optimistic). Returns the threshold.
        """
        self.threshold = threshold_for_budget(self.scores(x), review_budget=review_budget)
        self.review_budget = float(review_budget)
        return self.threshold

    # ----------------------------------------------------------------- serving
    def _validate(self, x: object) -> torch.Tensor:
        x = check_images(x, shape=self.input_shape, value_range=self.value_range)
        if x.dim() < 2:
            raise ValueError(f"x must be a batch (N, ...), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch; send at least one input")
        return x

    def _new_id(self) -> str:
        self._next += 1
        return f"r{self._next:06d}"

    def _logits(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        logits = batched_logits(model, x, batch_size=self.batch_size)
        if logits.shape[0] != x.shape[0]:
            raise RuntimeError(f"the model returned {logits.shape[0]} rows for {x.shape[0]} inputs")
        if not bool(torch.isfinite(logits).all()):
            raise RuntimeError("the model returned NaN or infinite logits")
        return logits.detach().cpu()

    def __call__(self, x: torch.Tensor) -> GuardedPrediction:
        """Serve a batch; see the class docstring for the steps."""
        return self.predict(x)

    def predict(self, x: torch.Tensor) -> GuardedPrediction:
        """Serve a batch; see the class docstring for the steps."""
        now = self.clock()
        state = self.breaker.state
        try:
            x = self._validate(x)
        except (TypeError, ValueError) as err:
            self.log.append(
                AuditRecord(
                    request_id=self._new_id(),
                    time=now,
                    input_hash=input_hash(x),
                    decision="reject",
                    path="none",
                    prediction=None,
                    score=float("nan"),
                    threshold=self.threshold,
                    score_method=self.score,
                    breaker_state=state,
                    reason=f"invalid input, refused: {type(err).__name__}: {err}",
                )
            )
            raise
        if self.threshold is None:
            raise RuntimeError(
                "GuardedModel has no threshold: call guard.calibrate(x_in, review_budget=...) on "
                "held-out in-distribution data, or pass threshold="
            )
        n = x.shape[0]
        ids = [self._new_id() for _ in range(n)]
        hashes = [input_hash(x[i]) for i in range(n)]
        nan = float("nan")
        preds = [-1] * n
        scores = [nan] * n
        model_preds: list[int | None] = [None] * n
        decisions, paths, reasons = ["abstain"] * n, ["review"] * n, [""] * n

        use_fallback_because: str | None = None
        if state == "open":
            use_fallback_because = f"circuit open ({self.breaker.reason})"
        else:
            try:
                logits = self._logits(self.primary, x)
            except Exception as err:
                self.breaker.record(error=True)
                use_fallback_because = f"primary failed ({type(err).__name__}: {err})"
            else:
                s = SCORES[self.score](logits, temperature=self.temperature)
                guess = logits.argmax(1)
                for i in range(n):
                    scores[i] = float(s[i])
                    model_preds[i] = int(guess[i])
                    anomalous = scores[i] > self.threshold
                    self.breaker.record(anomalous=anomalous)
                    if anomalous:
                        reasons[i] = (
                            f"{self.score} score {scores[i]:.4g} above threshold {self.threshold:.4g}: "
                            "input unlike the training data, routed to human review"
                        )
                    else:
                        preds[i], decisions[i], paths[i] = int(guess[i]), "predict", "primary"
                        reasons[i] = (
                            f"{self.score} score {scores[i]:.4g} within threshold {self.threshold:.4g}"
                        )
        if use_fallback_because is not None:
            fallback_logits: torch.Tensor | None = None
            why = use_fallback_because
            if self.fallback is not None:
                try:
                    fallback_logits = self._logits(self.fallback, x)
                except Exception as err:
                    why += f"; fallback failed too ({type(err).__name__}: {err})"
            else:
                why += "; no fallback model"
            for i in range(n):
                if fallback_logits is not None:
                    preds[i] = int(fallback_logits[i].argmax())
                    scores[i] = float(
                        SCORES[self.score](fallback_logits[i : i + 1], temperature=self.temperature)
                    )
                    decisions[i], paths[i] = "predict", "fallback"
                    reasons[i] = f"{why}: served by the fallback model"
                else:
                    reasons[i] = f"{why}: routed to human review"
        for i in range(n):
            self.log.append(
                AuditRecord(
                    request_id=ids[i],
                    time=now,
                    input_hash=hashes[i],
                    decision=decisions[i],  # type: ignore[arg-type]
                    path=paths[i],  # type: ignore[arg-type]
                    prediction=preds[i] if decisions[i] == "predict" else None,
                    score=scores[i],
                    threshold=self.threshold,
                    score_method=self.score,
                    breaker_state=state,
                    reason=reasons[i],
                    model_prediction=model_preds[i],
                )
            )
            if decisions[i] == "abstain":
                self.queue.put(
                    ReviewItem(
                        ids[i], x[i].detach().cpu().clone(), model_preds[i], scores[i], reasons[i], now
                    )
                )
        return GuardedPrediction(
            request_ids=ids,
            predictions=torch.tensor(preds, dtype=torch.long),
            scores=torch.tensor(scores, dtype=torch.float32),
            decisions=decisions,
            paths=paths,
            reasons=reasons,
        )

    def _on_review(self, decision: ReviewDecision) -> None:
        if decision.request_id in self.log:
            self.log.amend(
                decision.request_id,
                prediction=decision.label,
                reviewer=decision.reviewer,
                reviewed_at=decision.decided_at,
            )

    # ----------------------------------------------------------------- explanations
    def explain(self, request_id: str) -> str:
        """Explain one decision in words, from its audit record alone."""
        r = self.log[request_id]
        parts = [
            f"Request {r.request_id} (input {r.input_hash}) at t={r.time:.6g}, breaker {r.breaker_state}:"
        ]
        if r.decision == "reject":
            parts.append(f"rejected before any model ran. Reason: {r.reason}.")
            return " ".join(parts)
        if r.path == "fallback" or (r.decision == "abstain" and r.model_prediction is None):
            parts.append(f"the primary model did not serve it: {r.reason}.")
        else:
            threshold = "none" if r.threshold is None else f"{r.threshold:.4g}"
            side = "above" if r.decision == "abstain" else "not above"
            parts.append(
                f"the primary predicted class {r.model_prediction} with {r.score_method} score "
                f"{r.score:.4g}, {side} the threshold {threshold}."
            )
            if r.decision == "predict":
                parts.append(f"Served the primary's answer, class {r.prediction}.")
            else:
                parts.append("The guard abstained and routed it to human review.")
        if r.decision == "abstain":
            if r.reviewer is not None:
                parts.append(
                    f"Reviewer {r.reviewer!r} labelled it class {r.prediction} at t={r.reviewed_at:.6g}."
                )
            else:
                parts.append("It is still waiting for a reviewer.")
        return " ".join(parts)

    def summary(self) -> dict[str, Any]:
        """Counts of decisions and paths, the breaker state and the queue length."""
        return {
            "requests": len(self.log),
            "decisions": self.log.counts("decision"),
            "paths": self.log.counts("path"),
            "breaker": self.breaker.state,
            "waiting_for_review": len(self.queue),
            "threshold": self.threshold,
            "review_budget": self.review_budget,
        }

    def _repr_markdown_(self) -> str:
        s = self.summary()
        lines = [
            f"**GuardedModel** ({self.score} score, threshold {_num(self.threshold)}, review budget "
            f"{_num(self.review_budget)}), breaker {s['breaker']}",
            "",
            f"{s['requests']} requests: {s['decisions']}, served by {s['paths']}; "
            f"{s['waiting_for_review']} waiting for review",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"GuardedModel(score={self.score!r}, threshold={self.threshold}, breaker={self.breaker.state!r}, "
            f"requests={len(self.log)})"
        )


def _num(v: float | None) -> str:
    return "unset" if v is None else f"{v:.4g}"
