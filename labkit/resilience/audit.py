"""The audit log: one record per request, enough to explain every decision afterwards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from labkit.tables import html_table, markdown_table

__all__ = ["AuditLog", "AuditRecord", "input_hash"]

Decision = Literal["predict", "abstain", "reject"]
Path = Literal["primary", "fallback", "review", "none"]


def input_hash(x: object) -> str:
    """SHA-256 (first 16 hex digits) of an input's dtype, shape and bytes, or of its ``repr``.

    Identical inputs get identical hashes, so a log can be matched to traffic without storing
    the inputs themselves.

    Examples
    --------
    >>> input_hash(torch.zeros(2)) == input_hash(torch.zeros(2))
    True
    >>> input_hash(torch.zeros(2)) == input_hash(torch.zeros(3))
    False
    """
    h = hashlib.sha256()
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    else:
        h.update(type(x).__name__.encode())
        h.update(repr(x)[:10_000].encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class AuditRecord:
    """What happened to one request.

    Attributes
    ----------
    request_id:
        Unique id, ``r000001`` and so on.
    time:
        When it was served, on the guard's clock.
    input_hash:
        :func:`input_hash` of the input.
    decision:
        ``predict`` (an answer was served), ``abstain`` (routed to human review) or ``reject``
        (invalid input, refused with an error).
    path:
        Who served it: ``primary``, ``fallback``, ``review`` (a human) or ``none``.
    prediction:
        The class served, if any; after a human decides, their label.
    score, threshold, score_method:
        The anomaly score, the threshold it was compared with and how it was computed.
    breaker_state:
        The circuit breaker's state when the request arrived.
    reason:
        Why this decision, in words.
    model_prediction:
        What the primary model said, even when it was not served.
    reviewer, reviewed_at:
        Who decided an abstained request, and when.
    """

    request_id: str
    time: float
    input_hash: str
    decision: Decision
    path: Path
    prediction: int | None
    score: float
    threshold: float | None
    score_method: str
    breaker_state: str
    reason: str
    model_prediction: int | None = None
    reviewer: str | None = None
    reviewed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """Append-only list of :class:`AuditRecord`, looked up by request id.

    Examples
    --------
    >>> log = AuditLog()
    >>> log.append(AuditRecord("r1", 0.0, "ab", "predict", "primary", 3, -7.0, -5.0, "energy",
    ...                        "closed", "score below threshold"))
    >>> log["r1"].prediction, len(log)
    (3, 1)
    """

    def __init__(self) -> None:
        self._records: dict[str, AuditRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self._records.values())

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._records

    def __getitem__(self, request_id: str) -> AuditRecord:
        try:
            return self._records[request_id]
        except KeyError:
            raise KeyError(f"no request {request_id!r} in the audit log ({len(self)} records)") from None

    @property
    def records(self) -> list[AuditRecord]:
        return list(self._records.values())

    def append(self, record: AuditRecord) -> None:
        """Add a record; ids are unique."""
        if not isinstance(record, AuditRecord):
            raise TypeError(f"record must be an AuditRecord, got {type(record).__name__}")
        if record.request_id in self._records:
            raise ValueError(f"request {record.request_id!r} is already in the audit log")
        self._records[record.request_id] = record

    def amend(self, request_id: str, **changes: Any) -> AuditRecord:
        """Replace fields of a record (used when a human decides); returns the new record."""
        record = replace(self[request_id], **changes)
        self._records[request_id] = record
        return record

    def counts(self, key: str = "decision") -> dict[str, int]:
        """How many records have each value of ``key`` (``decision``, ``path``, ``breaker_state``)."""
        out: dict[str, int] = {}
        for r in self:
            value = str(getattr(r, key))
            out[value] = out.get(value, 0) + 1
        return out

    def to_json(self) -> str:
        """The whole log as JSON lines, one record per line."""
        return "\n".join(json.dumps(r.to_dict(), default=str) for r in self)

    def _rows(self, last: int) -> list[list[object]]:
        return [
            [
                r.request_id,
                r.time,
                r.input_hash[:8],
                r.decision,
                r.path,
                r.prediction,
                r.score,
                r.breaker_state,
                r.reason,
            ]
            for r in self.records[-last:]
        ]

    _HEADERS = ("request", "time", "input", "decision", "path", "prediction", "score", "breaker", "reason")

    def _repr_markdown_(self) -> str:
        head = f"**Audit log**: {len(self)} records, " + ", ".join(
            f"{k}: {v}" for k, v in self.counts().items()
        )
        return head + "\n\n" + markdown_table(list(self._HEADERS), self._rows(20))

    def _repr_html_(self) -> str:
        caption = f"Audit log: {len(self)} records (last 20 shown)"
        return html_table(list(self._HEADERS), self._rows(20), caption=caption)

    def __repr__(self) -> str:
        return f"AuditLog({len(self)} records: {self.counts()})"
