"""What :func:`labkit.eval.checklist` returns: one :class:`Check` per row and the
:class:`Checklist` that holds them, with a verdict and coloured tables.
:mod:`labkit.eval.checklist` re-exports these names.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Check", "Checklist", "Status"]

Status = Literal["green", "amber", "red", "skipped"]
_COLOURS = {"green": "#c8e6c9", "amber": "#ffe0b2", "red": "#ffcdd2", "skipped": "#eeeeee"}
_MARKS = {"green": "🟢", "amber": "🟠", "red": "🔴", "skipped": "⚪"}


@dataclass(frozen=True)
class Check:
    """One row of the checklist: a key, a title, a status, the numbers behind it and why."""

    key: str
    title: str
    status: Status
    evidence: dict[str, float]
    explanation: str

    def evidence_text(self) -> str:
        return ", ".join(f"{k} {_fmt(v)}" for k, v in self.evidence.items())


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, float) and 0 <= v <= 1 and v != int(v):
        return f"{v:.1%}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class Checklist:
    """The checklist's result: one :class:`Check` per row, a verdict, and coloured tables."""

    rows: list[Check]
    eps: float
    n: int
    seconds: float = 0.0
    model_name: str = "model"
    notes: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Check:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(f"no check {key!r}; checks: {', '.join(r.key for r in self.rows)}")

    def status(self, key: str) -> Status:
        """The status of one check, by key."""
        return self[key].status

    @property
    def verdict(self) -> Literal["suspect", "inconclusive", "pass"]:
        """``"suspect"`` if any row is red, ``"inconclusive"`` if any is amber, else ``"pass"``."""
        statuses = {r.status for r in self.rows}
        if "red" in statuses:
            return "suspect"
        if "amber" in statuses:
            return "inconclusive"
        return "pass"

    @property
    def suspect(self) -> bool:
        """Whether any row is red."""
        return self.verdict == "suspect"

    def _repr_markdown_(self) -> str:
        lines = [
            f"**Evaluation checklist for {self.model_name}**: {self.verdict} "
            f"(eps {self.eps:.4g}, {self.n} examples, {self.seconds:.1f} s)",
            "",
            "| | check | evidence | explanation |",
            "|---|---|---|---|",
        ]
        for r in self.rows:
            lines.append(
                f"| {_MARKS[r.status]} {r.status} | {r.title} | {r.evidence_text()} | {r.explanation} |"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        trs = []
        for r in self.rows:
            colour = _COLOURS[r.status]
            trs.append(
                f'<tr><td style="background:{colour};font-weight:bold">{r.status}</td>'
                f"<td>{html.escape(r.title)}</td><td>{html.escape(r.evidence_text())}</td>"
                f"<td>{html.escape(r.explanation)}</td></tr>"
            )
        caption = (
            f"Evaluation checklist for {html.escape(self.model_name)}: <b>{self.verdict}</b> "
            f"(eps {self.eps:.4g}, {self.n} examples, {self.seconds:.1f} s)"
        )
        return (
            f"<table><caption>{caption}</caption><thead><tr><th>status</th><th>check</th>"
            f"<th>evidence</th><th>explanation</th></tr></thead><tbody>{''.join(trs)}</tbody></table>"
        )

    def __repr__(self) -> str:
        marks = ", ".join(f"{r.key}={r.status}" for r in self.rows)
        return f"Checklist({self.verdict}: {marks})"
