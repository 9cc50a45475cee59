"""A human review queue: abstained requests wait here until a person (or a simulation) decides."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from labkit.tables import html_table, markdown_table

__all__ = ["ReviewDecision", "ReviewItem", "ReviewQueue"]


@dataclass(frozen=True)
class ReviewItem:
    """One request waiting for a human.

    Attributes
    ----------
    request_id:
        The id in the audit log.
    x:
        The input (a detached CPU copy).
    suggestion:
        The model's tentative answer, if it gave one (shown to the reviewer, who may ignore it).
    score:
        The anomaly score that sent it here (NaN if no model scored it).
    reason:
        Why it was routed to review.
    enqueued_at:
        Time on the queue's clock.
    """

    request_id: str
    x: torch.Tensor
    suggestion: int | None
    score: float
    reason: str
    enqueued_at: float


@dataclass(frozen=True)
class ReviewDecision:
    """What a reviewer decided for one request."""

    request_id: str
    label: int
    reviewer: str
    decided_at: float
    note: str = ""


class ReviewQueue:
    """First-in, first-out queue of requests for human review, with every decision kept.

    Parameters
    ----------
    clock:
        Returns the time in seconds (default :func:`time.monotonic`).

    Examples
    --------
    >>> queue = ReviewQueue()
    >>> queue.put(ReviewItem("r1", torch.zeros(3), 2, 0.9, "unusual input", 0.0))
    >>> decisions = queue.drain(lambda item: item.suggestion, name="sim")
    >>> (len(queue), decisions[0].label, decisions[0].reviewer)
    (0, 2, 'sim')
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._pending: OrderedDict[str, ReviewItem] = OrderedDict()
        self.decisions: list[ReviewDecision] = []
        self.listeners: list[Callable[[ReviewDecision], None]] = []

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending(self) -> list[ReviewItem]:
        """The waiting items, oldest first."""
        return list(self._pending.values())

    def put(self, item: ReviewItem) -> None:
        """Add an item; a request id can wait only once."""
        if not isinstance(item, ReviewItem):
            raise TypeError(f"item must be a ReviewItem, got {type(item).__name__}")
        if item.request_id in self._pending:
            raise ValueError(f"request {item.request_id!r} is already waiting for review")
        self._pending[item.request_id] = item

    def decide(
        self, request_id: str, label: int, *, reviewer: str = "human", note: str = ""
    ) -> ReviewDecision:
        """Record a reviewer's label for a waiting request and remove it from the queue."""
        if request_id not in self._pending:
            raise KeyError(f"request {request_id!r} is not waiting for review")
        if isinstance(label, bool) or not isinstance(label, int):
            raise TypeError(f"label must be an integer class index, got {type(label).__name__}")
        self._pending.pop(request_id)
        decision = ReviewDecision(request_id, int(label), str(reviewer), self.clock(), note)
        self.decisions.append(decision)
        for listener in self.listeners:
            listener(decision)
        return decision

    def drain(
        self,
        reviewer: Callable[[ReviewItem], int | None],
        *,
        limit: int | None = None,
        name: str | None = None,
        note: str = "",
    ) -> list[ReviewDecision]:
        """Let ``reviewer`` decide waiting items, oldest first.

        Parameters
        ----------
        reviewer:
            ``item -> label``; returning ``None`` skips the item (it stays in the queue).
        limit:
            Review at most this many items (a reviewer's shift); default all.
        name:
            Reviewer name recorded with each decision (default: the callable's name).
        note:
            Recorded with each decision.
        """
        if not callable(reviewer):
            raise TypeError(f"reviewer must be a callable item -> label, got {type(reviewer).__name__}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
        who = name or getattr(reviewer, "__name__", None) or "human"
        out: list[ReviewDecision] = []
        for item in self.pending:
            if limit is not None and len(out) >= limit:
                break
            label = reviewer(item)
            if label is None:
                continue
            out.append(self.decide(item.request_id, int(label), reviewer=who, note=note))
        return out

    def _rows(self) -> list[list[object]]:
        return [[i.request_id, i.suggestion, i.score, i.reason] for i in self.pending]

    def _repr_markdown_(self) -> str:
        head = f"**Review queue**: {len(self)} waiting, {len(self.decisions)} decided"
        rows = self._rows()
        return head + (
            "\n\n" + markdown_table(["request", "suggestion", "score", "reason"], rows) if rows else ""
        )

    def _repr_html_(self) -> str:
        caption = f"Review queue: {len(self)} waiting, {len(self.decisions)} decided"
        return html_table(["request", "suggestion", "score", "reason"], self._rows(), caption=caption)

    def __repr__(self) -> str:
        return f"ReviewQueue(waiting={len(self)}, decided={len(self.decisions)})"
