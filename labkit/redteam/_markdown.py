"""Findings as Markdown: the text shared by a finding's own display and the campaign report."""

from __future__ import annotations

import html
import math
import re
from typing import TYPE_CHECKING, Any

from labkit import atlas

if TYPE_CHECKING:
    from labkit.redteam.findings import Finding

__all__ = ["cost", "finding_markdown", "fmt", "md", "mitigations"]

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def md(text: object) -> str:
    """``text`` as inert Markdown: one line, syntax backslash-escaped, HTML entities escaped."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def fmt(value: Any) -> str:
    """A piece of evidence as short text (floats to 3 digits, infinity as ``never``)."""
    if isinstance(value, float):
        if math.isinf(value):
            return "never"
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def cost(cost: float) -> str:
    """Queries per success, in words."""
    if math.isinf(cost):
        return "never succeeded"
    if cost == 0:
        return "offline (0 queries)"
    return "1 query per success" if cost == 1 else f"{cost:.3g} queries per success"


def mitigations(f: Finding) -> list[str]:
    """The recommended mitigations of ``f``, each as ``"AML.M0003 Model Hardening"``."""
    return [atlas.describe(m) for m in f.mitigations]


def finding_markdown(f: Finding, number: int | None = None) -> str:
    """One finding as a Markdown section (text evidence; images are in the HTML report)."""
    head = f"### {'' if number is None else f'{number}. '}[{f.severity.upper()}] {md(f.title)}"
    lines = [
        head,
        "",
        f"*{f.technique} {md(f.technique_name)}* · success rate **{f.success_rate:.0%}** over {f.trials} "
        f"trials (evidence floor {f.threshold:.0%}) · cost: {cost(f.cost)} · found by {md(f.probe)}",
        "",
        "| evidence | |",
        "|---|---|",
        *(f"| {md(k)} | {md(fmt(v))} |" for k, v in f.evidence.items()),
    ]
    if f.prompts:
        lines += ["", "Prompts that worked:", ""] + [f"> {md(p)}" for p in f.prompts]
    if f.adversarial is not None:
        lines += ["", f"*{len(f.adversarial)} example images in the HTML report.*"]
    if f.reproduction:
        lines += ["", "To reproduce:", ""] + [f"{i}. {md(step)}" for i, step in enumerate(f.reproduction, 1)]
    mit = "; ".join(md(m) for m in mitigations(f)) or "none catalogued"
    lines += ["", f"Recommended mitigations: {mit}" + (f" ({md(f.advice)})" if f.advice else "")]
    return "\n".join(lines)
