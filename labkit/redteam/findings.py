"""Attempts, findings, the severity rule and the mitigations a finding recommends.

Every probe run (and every manual attempt) is an :class:`Attempt` in the campaign's log. An
attempt becomes a :class:`Finding` only when its evidence clears the probe's *evidence floor*
(``threshold``): a success rate that noise or luck would not explain. The severity of a finding
comes from a rule of two numbers, how often the attack works and what it costs the attacker
(:func:`default_severity`); a campaign can be re-triaged with any other rule.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from labkit import atlas
from labkit.redteam._markdown import cost, fmt, md

__all__ = [
    "RECOMMENDATIONS",
    "SEVERITIES",
    "Attempt",
    "Finding",
    "SeverityRule",
    "default_severity",
    "finding_markdown",
    "mitigations",
]

#: Severity levels, most severe first.
SEVERITIES = ("critical", "high", "medium", "low", "info")

SeverityRule = Callable[[float, float], str]

_EVASION = (
    ("AML.M0003", "AML.M0006", "AML.M0015"),
    "adversarial training (lesson 08), ensembles (lesson 10)",
)

#: For each technique: the ATLAS mitigations to recommend, and where the course teaches them.
RECOMMENDATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "AML.T0015": _EVASION,
    "AML.T0043": _EVASION,
    "AML.T0043.000": _EVASION,
    "AML.T0043.001": (
        ("AML.M0003", "AML.M0002", "AML.M0004"),
        "adversarial training; return labels only, rounded scores; query budgets and rate limits (lesson 05)",
    ),
    "AML.T0043.002": (
        ("AML.M0003", "AML.M0006"),
        "adversarial training and ensembles of diverse models (lessons 08, 10)",
    ),
    "AML.T0043.003": (
        ("AML.M0003", "AML.M0015"),
        "training with patches and occlusions, input checks, a human in the loop (lessons 08, 14)",
    ),
    "AML.T0043.004": (("AML.M0003", "AML.M0006"), "data provenance and backdoor detection (lesson 04)"),
    "AML.T0020": (("AML.M0008",), "sanitise and validate training data (lesson 04)"),
    "AML.T0031": (
        ("AML.M0003", "AML.M0008"),
        "augment with corruptions, validate under shift, monitor drift (lessons 03, 14, 15)",
    ),
    "AML.T0024": (("AML.M0002", "AML.M0004"), "coarsen outputs: top-1 label or rounded scores (lesson 05)"),
    "AML.T0024.000": (
        ("AML.M0002", "AML.M0004"),
        "label-only outputs, regularisation or DP-SGD training (lesson 06)",
    ),
    "AML.T0024.001": (("AML.M0002", "AML.M0004"), "label-only outputs, regularisation (lesson 06)"),
    "AML.T0024.002": (
        ("AML.M0002", "AML.M0004"),
        "coarsen outputs, query budgets, PRADA-style query monitoring (lesson 05)",
    ),
    "AML.T0029": (("AML.M0004",), "rate limits and per-account query budgets (lessons 05, 13)"),
    "AML.T0051": (
        ("AML.M0020", "AML.M0021"),
        "spotlighting, instruction hierarchy, output filters, least privilege (lesson 07)",
    ),
    "AML.T0054": (("AML.M0020", "AML.M0021"), "guardrails on input and output, refusal training (lesson 07)"),
}


def _check_rate(success_rate: object, name: str = "success_rate") -> float:
    if isinstance(success_rate, bool) or not isinstance(success_rate, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {success_rate!r}")
    rate = float(success_rate)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {success_rate}")
    return rate


def _check_cost(cost: object) -> float:
    if isinstance(cost, bool) or not isinstance(cost, numbers.Real):
        raise TypeError(f"cost must be a number of queries, got {cost!r}")
    value = float(cost)
    if math.isnan(value) or value < 0:
        raise ValueError(f"cost must be a non-negative number of queries (inf: never worked), got {cost}")
    return value


def default_severity(success_rate: float, cost: float) -> str:
    """The course's severity rule: how often an attack works and what one success costs.

    ``cost`` is the number of queries to the target the attacker spends per success, not
    counting the lab's verification queries (0 for attacks crafted offline, on weights or on a
    surrogate).

    ============  =====================================================================
    severity      rule (first match wins)
    ============  =====================================================================
    ``info``      ``success_rate < 0.05``: nothing demonstrated
    ``critical``  ``success_rate >= 0.5`` and ``cost <= 100``
    ``high``      ``success_rate >= 0.5``, or ``success_rate >= 0.2`` and ``cost <= 1000``
    ``medium``    ``success_rate >= 0.2``, or ``cost <= 100``
    ``low``       anything else
    ============  =====================================================================

    Examples
    --------
    >>> default_severity(0.9, 0), default_severity(0.3, 500), default_severity(0.1, 5000)
    ('critical', 'high', 'low')
    """
    rate, cost = _check_rate(success_rate), _check_cost(cost)
    if rate < 0.05:
        return "info"
    if rate >= 0.5 and cost <= 100:
        return "critical"
    if rate >= 0.5 or (rate >= 0.2 and cost <= 1000):
        return "high"
    if rate >= 0.2 or cost <= 100:
        return "medium"
    return "low"


@dataclass(frozen=True)
class Attempt:
    """One line of the campaign's log: a probe run, a refusal, or a manual attempt.

    Attributes
    ----------
    index:
        Position in the log (from 1).
    probe:
        The probe's name, or ``"manual"``.
    technique:
        The ATLAS technique id attempted.
    outcome:
        ``"finding"``, ``"no finding"``, ``"blocked"`` (the target's own defenses refused
        queries), ``"not applicable"``, ``"refused"`` (out of scope) or ``"error"``.
    success_rate:
        The measured rate (``None`` when nothing was measured).
    trials:
        How many inputs, records or prompts the rate is over.
    queries:
        Queries sent to the target.
    seconds:
        Wall-clock time.
    settings:
        The probe's settings.
    note:
        A sentence on what happened.
    """

    index: int
    probe: str
    technique: str
    outcome: str
    success_rate: float | None
    trials: int
    queries: int
    seconds: float
    settings: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def manual(self) -> bool:
        return self.probe == "manual"


@dataclass(frozen=True)
class Finding:
    """A weakness the evidence supports, with what a reader of the report needs to act on it.

    Attributes
    ----------
    title:
        One line a manager can read.
    technique:
        The MITRE ATLAS technique id.
    severity:
        One of :data:`SEVERITIES`, from the campaign's severity rule.
    success_rate, trials:
        The measured success rate and what it is over.
    cost:
        Target queries per success (0 for attacks crafted offline).
    threshold:
        The evidence floor: the finding is :attr:`supported` when ``success_rate >= threshold``.
    evidence:
        Numbers and text behind the claim (``{"clean accuracy": 0.97, ...}``).
    reproduction:
        Steps (code lines) that reproduce it.
    mitigations:
        Recommended ATLAS mitigation ids.
    probe:
        The probe that found it, or ``"manual"``.
    attempt:
        Index of the attempt in the campaign's log.
    clean, adversarial:
        Optional image evidence: inputs before and after the attack ``(k, C, H, W)``.
    prompts:
        Optional text evidence: prompts that worked.
    """

    title: str
    technique: str
    severity: str
    success_rate: float
    trials: int
    cost: float
    threshold: float
    evidence: Mapping[str, Any]
    reproduction: tuple[str, ...]
    mitigations: tuple[str, ...]
    probe: str
    attempt: int
    clean: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.technique not in atlas.TECHNIQUES:
            raise ValueError(f"unknown ATLAS technique {self.technique!r}; see labkit.atlas.TECHNIQUES")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        for m in self.mitigations:
            if m not in atlas.MITIGATIONS:
                raise ValueError(f"unknown ATLAS mitigation {m!r}; see labkit.atlas.MITIGATIONS")

    @property
    def supported(self) -> bool:
        """Whether the evidence clears the floor: some trials, and a rate at least ``threshold``."""
        return self.trials > 0 and self.success_rate >= self.threshold

    @property
    def technique_name(self) -> str:
        return atlas.TECHNIQUES[self.technique].name

    @property
    def advice(self) -> str:
        """The catalogue's advice for this finding's technique (empty when there is none)."""
        return RECOMMENDATIONS.get(self.technique, ((), ""))[1]

    def _repr_markdown_(self) -> str:
        return finding_markdown(self)


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
