"""The campaign report: executive summary, findings with evidence, and the full attempt log.

Everything that comes from a probe or a person (titles, prompts, notes) is escaped, in the HTML
with :func:`html.escape` and in the Markdown by backslash-escaping its syntax and HTML, so a
prompt that contains markup shows as text and never renders.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from labkit.redteam._markdown import cost, fmt, md
from labkit.redteam.findings import SEVERITIES, Attempt, Finding, finding_markdown, mitigations

if TYPE_CHECKING:  # pragma: no cover
    from labkit.redteam.scope import Scope

__all__ = ["Report", "finding_markdown"]

SEVERITY_COLOURS = {
    "critical": "#9d0208",
    "high": "#e85d04",
    "medium": "#f4a261",
    "low": "#e9c46a",
    "info": "#8ecae6",
}


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _images_html(f: Finding) -> str:
    """The before/after images of a finding as an inline PNG."""
    if f.adversarial is None or f.clean is None or len(f.adversarial) == 0:
        return ""
    from matplotlib.figure import Figure

    n = min(len(f.clean), len(f.adversarial), 6)
    fig = Figure(figsize=(1.1 * n, 2.3))
    for row, (images, label) in enumerate(((f.clean, "before"), (f.adversarial, "after"))):
        for i in range(n):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            img = images[i].detach().float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<p><img alt="before and after" src="data:image/png;base64,{data}"/></p>'


class Report:
    """A red-team report: what was in scope, what was found, and everything that was tried.

    Renders itself in a notebook (``_repr_markdown_``, ``_repr_html_``) and exports with
    :meth:`to_markdown` and :meth:`to_html`; all content from probes and people is escaped.
    """

    def __init__(
        self,
        *,
        title: str,
        target: str,
        scope: Scope,
        findings: Sequence[Finding],
        attempts: Sequence[Attempt],
        queries_used: int,
        summary: str | None = None,
    ) -> None:
        if summary is not None and not isinstance(summary, str):
            raise TypeError(f"summary must be text, got {type(summary).__name__}")
        self.title = title
        self.target = target
        self.scope = scope
        self.findings = list(findings)
        self.attempts = list(attempts)
        self.queries_used = int(queries_used)
        self.summary = summary

    def counts(self) -> dict[str, int]:
        """Number of findings per severity, most severe first."""
        c = Counter(f.severity for f in self.findings)
        return {s: c.get(s, 0) for s in SEVERITIES}

    def _auto_summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n) or "none"
        techniques = ", ".join(sorted({f.technique for f in self.findings})) or "none"
        return (
            f"{len(self.findings)} findings ({counts}) from {len(self.attempts)} attempts and "
            f"{self.queries_used:,} of {self.scope.query_budget:,} queries. Techniques: {techniques}."
        )

    def _attempt_rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for a in self.attempts:
            rate = "-" if a.success_rate is None else f"{a.success_rate:.0%}"
            rows.append((str(a.index), a.probe, a.technique, a.outcome, rate, str(a.queries), a.note))
        return rows

    _ATTEMPT_HEAD = ("#", "probe", "technique", "outcome", "success", "queries", "note")

    def to_markdown(self) -> str:
        """The report as Markdown."""
        lines = [
            f"## {md(self.title)}",
            "",
            f"**Target:** {md(self.target)}. **Scope:** {md(', '.join(self.scope.probes))}; "
            f"eps ≤ {self.scope.max_eps:.3g}; weights {'in' if self.scope.weights else 'out of'} scope; "
            f"{self.queries_used:,} of {self.scope.query_budget:,} queries used.",
            "",
            "### Executive summary",
            "",
            md(self.summary) if self.summary else md(self._auto_summary()),
            "",
            "### Findings",
            "",
        ]
        if self.findings:
            lines += [
                "| # | severity | ATLAS | finding | success | cost | mitigations |",
                "|---|---|---|---|---:|---|---|",
            ]
            for i, f in enumerate(self.findings, 1):
                lines.append(
                    f"| {i} | {f.severity} | {f.technique} | {md(f.title)} | {f.success_rate:.0%} | "
                    f"{cost(f.cost)} | {', '.join(f.mitigations)} |"
                )
            for i, f in enumerate(self.findings, 1):
                lines += ["", finding_markdown(f, i)]
        else:
            lines.append("*No finding: no probe's evidence cleared its floor.*")
        lines += ["", "### Attempt log", "", "| " + " | ".join(self._ATTEMPT_HEAD) + " |"]
        lines.append("|" + "---|" * len(self._ATTEMPT_HEAD))
        lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in self._attempt_rows()]
        return "\n".join(lines)

    def to_html(self) -> str:
        """The report as a self-contained HTML fragment (images inline)."""
        parts = [
            f"<h2>{_h(self.title)}</h2>",
            f"<p><b>Target:</b> {_h(self.target)}. <b>Scope:</b> {_h(', '.join(self.scope.probes))}; "
            f"eps &le; {self.scope.max_eps:.3g}; weights {'in' if self.scope.weights else 'out of'} scope; "
            f"{self.queries_used:,} of {self.scope.query_budget:,} queries used.</p>",
            "<h3>Executive summary</h3>",
            f"<p>{_h(self.summary or self._auto_summary())}</p>",
            "<h3>Findings</h3>",
        ]
        if not self.findings:
            parts.append("<p><i>No finding: no probe's evidence cleared its floor.</i></p>")
        for i, f in enumerate(self.findings, 1):
            colour = SEVERITY_COLOURS[f.severity]
            evidence = "".join(
                f"<tr><td>{_h(k)}</td><td>{_h(fmt(v))}</td></tr>" for k, v in f.evidence.items()
            )
            parts += [
                f'<h4>{i}. <span style="background:{colour};color:white;padding:1px 6px;border-radius:3px">'
                f"{_h(f.severity.upper())}</span> {_h(f.title)}</h4>",
                f"<p><i>{_h(f.technique)} {_h(f.technique_name)}</i> &middot; success rate "
                f"<b>{f.success_rate:.0%}</b> over {f.trials} trials (evidence floor {f.threshold:.0%}) "
                f"&middot; cost: {_h(cost(f.cost))} &middot; found by <code>{_h(f.probe)}</code></p>",
                f"<table><tr><th>evidence</th><th></th></tr>{evidence}</table>",
            ]
            if f.prompts:
                parts.append("<p>Prompts that worked:</p>")
                parts += [f"<blockquote><pre>{_h(p)}</pre></blockquote>" for p in f.prompts]
            parts.append(_images_html(f))
            if f.reproduction:
                steps = "".join(f"<li><code>{_h(s)}</code></li>" for s in f.reproduction)
                parts.append(f"<p>To reproduce:</p><ol>{steps}</ol>")
            mit = "; ".join(_h(m) for m in mitigations(f)) or "none catalogued"
            advice = f" ({_h(f.advice)})" if f.advice else ""
            parts.append(f"<p>Recommended mitigations: {mit}{advice}</p>")
        head = "".join(f"<th>{_h(c)}</th>" for c in self._ATTEMPT_HEAD)
        body = "".join(
            "<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in self._attempt_rows()
        )
        parts += ["<h3>Attempt log</h3>", f"<table><tr>{head}</tr>{body}</table>"]
        return "\n".join(p for p in parts if p)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def _repr_html_(self) -> str:
        return self.to_html()

    def plot(self, ax: Any = None) -> Any:
        """A bar per measured attempt: its success rate, coloured by the severity of its finding."""
        import matplotlib.pyplot as plt

        measured = [a for a in self.attempts if a.success_rate is not None]
        if not measured:
            raise ValueError("nothing measured yet: run some probes first")
        by_attempt = {f.attempt: f for f in self.findings}
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 0.38 * len(measured) + 1.2))
        labels, colours = [], []
        for a in measured:
            f = by_attempt.get(a.index)
            labels.append(f"{a.probe} · {a.technique}")
            colours.append(SEVERITY_COLOURS[f.severity] if f else "#bbbbbb")
        ypos = list(range(len(measured)))
        rates = [float(a.success_rate or 0.0) for a in measured]
        ax.barh(ypos, rates, color=colours)
        for y, a, rate in zip(ypos, measured, rates, strict=True):  # the severity in words, not colour alone
            f = by_attempt.get(a.index)
            ax.text(min(rate, 0.78) + 0.01, y, f.severity if f else "no finding", va="center", fontsize=9)
        ax.set_yticks(ypos, labels, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("success rate (membership: advantage; extraction: fidelity)")
        handles = [plt.Rectangle((0, 0), 1, 1, fc=SEVERITY_COLOURS[s]) for s in SEVERITIES]
        handles.append(plt.Rectangle((0, 0), 1, 1, fc="#bbbbbb"))
        ax.legend(handles, [*SEVERITIES, "no finding"], fontsize=9, loc="lower right")
        ax.set_title(self.title)
        return ax
