"""Rules of engagement: which probes a campaign may run, on what budget, with what epsilon.

A red team works inside a written scope agreed with the system's owner. :class:`Scope` is that
agreement in code, and :class:`~labkit.redteam.Campaign` checks it before every probe and every
manual attempt: anything outside it raises :class:`ScopeError` (and is logged as refused).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from labkit import atlas

__all__ = ["PROBES", "ProbeInfo", "Scope", "ScopeError"]


class ScopeError(PermissionError):
    """A probe, setting or manual attempt outside the campaign's scope was refused."""


@dataclass(frozen=True)
class ProbeInfo:
    """One probe of the suite: its name, the ATLAS technique it tests, and what it needs.

    Attributes
    ----------
    name:
        The name used in :class:`Scope` and :meth:`~labkit.redteam.Campaign.run_probe`.
    technique:
        The MITRE ATLAS technique id of its findings.
    target:
        ``"vision"`` (a model behind a :class:`~labkit.serving.PredictionAPI`) or ``"assistant"``.
    lesson:
        The lesson that teaches the technique.
    description:
        One line on what the probe does.
    """

    name: str
    technique: str
    target: Literal["vision", "assistant"]
    lesson: str
    description: str


PROBES: dict[str, ProbeInfo] = {
    p.name: p
    for p in [
        ProbeInfo(
            "api_recon",
            "AML.T0029",
            "vision",
            "05",
            "a burst of queries: are there a rate limit and a budget, how much does one answer reveal",
        ),
        ProbeInfo(
            "white_box", "AML.T0043.000", "vision", "01", "PGD on the model's weights, checked on the API"
        ),
        ProbeInfo("score_black_box", "AML.T0043.001", "vision", "02", "Square Attack on the API's scores"),
        ProbeInfo("decision_black_box", "AML.T0043.001", "vision", "02", "HopSkipJump on the API's labels"),
        ProbeInfo("transfer", "AML.T0043.002", "vision", "02", "MI-FGSM on a surrogate the attacker trains"),
        ProbeInfo("patch", "AML.T0043.003", "vision", "02", "an adversarial sticker pasted at random places"),
        ProbeInfo("corruptions", "AML.T0031", "vision", "03", "common corruptions at severity 3"),
        ProbeInfo("extraction", "AML.T0024.002", "vision", "05", "train a copy on the API's answers"),
        ProbeInfo("membership", "AML.T0024.000", "vision", "06", "loss-threshold membership inference"),
        ProbeInfo(
            "prompt_injection", "AML.T0051", "assistant", "07", "direct, indirect and obfuscated injections"
        ),
        ProbeInfo("jailbreak", "AML.T0054", "assistant", "07", "role-play jailbreaks"),
    ]
}


def _covers(listed: str, technique: str) -> bool:
    """A listed ATLAS id covers itself and its sub-techniques (``AML.T0043`` covers ``.003``)."""
    return technique == listed or technique.startswith(listed + ".")


@dataclass(frozen=True)
class Scope:
    """What a campaign is allowed to do.

    Parameters
    ----------
    techniques:
        Probe names from :data:`PROBES` and/or ATLAS technique ids. An id allows every probe of
        that technique and of its sub-techniques (``"AML.T0043"`` allows all four evasion
        probes); it also allows manual attempts with that id.
    query_budget:
        Total queries the campaign may send to the target, probes and manual attempts together.
    max_eps:
        Largest L-inf perturbation (pixel units, ``[0, 1]`` images) the evasion probes may use.
    weights:
        Whether the owner hands over the model's weights (white-box testing).
    examples:
        Inputs per evasion probe by default.

    Examples
    --------
    >>> scope = Scope(techniques=("AML.T0043", "membership"), query_budget=5000, max_eps=0.1)
    >>> scope.probes
    ('white_box', 'score_black_box', 'decision_black_box', 'transfer', 'patch', 'membership')
    >>> scope.allows("extraction")
    False
    """

    techniques: tuple[str, ...]
    query_budget: int
    max_eps: float = 8 / 255
    weights: bool = False
    examples: int = 32

    def __post_init__(self) -> None:
        techniques = self.techniques
        if isinstance(techniques, str) or not isinstance(techniques, Sequence):
            raise TypeError(
                "techniques must be a list or tuple of probe names or ATLAS ids, e.g. "
                f"('transfer', 'AML.T0024.000'), got {techniques!r}"
            )
        if not techniques:
            raise ValueError("techniques is empty: a scope must allow at least one probe or technique")
        for t in techniques:
            if not isinstance(t, str) or (t not in PROBES and t not in atlas.TECHNIQUES):
                raise ValueError(
                    f"unknown technique {t!r} in the scope; expected probe names ({', '.join(PROBES)}) "
                    "or ATLAS technique ids from labkit.atlas.TECHNIQUES"
                )
        object.__setattr__(self, "techniques", tuple(dict.fromkeys(techniques)))
        budget = self.query_budget
        if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0:
            raise ValueError(f"query_budget must be a non-negative integer number of queries, got {budget!r}")
        object.__setattr__(self, "query_budget", int(budget))
        eps = self.max_eps
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps):
            raise TypeError(f"max_eps must be a number in (0, 1] (pixel units), got {eps!r}")
        if not 0 < eps <= 1:
            raise ValueError(f"max_eps must be in (0, 1] (pixel units), got {eps}")
        object.__setattr__(self, "max_eps", float(eps))
        if not isinstance(self.weights, bool):
            raise TypeError(f"weights must be True or False, got {self.weights!r}")
        n = self.examples
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"examples must be a positive integer, got {n!r}")
        object.__setattr__(self, "examples", int(n))

    @property
    def probes(self) -> tuple[str, ...]:
        """The probes this scope allows, in the order of :data:`PROBES`."""
        return tuple(name for name in PROBES if self.allows(name))

    def allows(self, probe: str) -> bool:
        """Whether the probe ``probe`` (a name from :data:`PROBES`) is in scope."""
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; expected one of {', '.join(PROBES)}")
        technique = PROBES[probe].technique
        return probe in self.techniques or any(_covers(t, technique) for t in self.techniques)

    def allows_technique(self, technique: str) -> bool:
        """Whether attempts of the ATLAS technique ``technique`` are in scope."""
        if technique not in atlas.TECHNIQUES:
            raise ValueError(f"unknown ATLAS technique {technique!r}; see labkit.atlas.TECHNIQUES")
        by_probe = any(PROBES[p].technique == technique for p in self.probes)
        return by_probe or any(_covers(t, technique) for t in self.techniques if t not in PROBES)

    def _repr_markdown_(self) -> str:
        rows = [
            ("probes allowed", ", ".join(self.probes) or "none"),
            ("query budget", f"{self.query_budget:,}"),
            ("largest L-inf eps", f"{self.max_eps:.4g} ({self.max_eps * 255:.3g}/255)"),
            ("weights (white-box)", "yes" if self.weights else "no"),
            ("inputs per evasion probe", str(self.examples)),
        ]
        return "\n".join(["**Scope**", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
