"""What a probe sees of its campaign, and what it hands back.

The probes (:mod:`labkit.redteam.probes`) and the campaign that runs them
(:mod:`labkit.redteam.campaign`) meet here: a probe works against any :class:`ProbeContext`
(the campaign is one) and returns :class:`Observation` objects, or raises
:class:`NotApplicable`. Neither module imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from labkit.contract import LabModel
from labkit.serving import PredictionAPI

if TYPE_CHECKING:  # pragma: no cover
    from labkit.redteam.scope import Scope

__all__ = ["NotApplicable", "Observation", "ProbeContext"]


class NotApplicable(Exception):
    """The probe cannot run against this target or without some input; the message says why."""


@dataclass
class Observation:
    """What a probe measured for one technique (becomes a finding when it clears ``threshold``)."""

    technique: str
    title: str
    success_rate: float
    trials: int
    cost: float
    threshold: float
    evidence: dict[str, Any]
    reproduction: tuple[str, ...]
    clean: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    prompts: tuple[str, ...] = field(default_factory=tuple)


class ProbeContext(Protocol):
    """The part of a campaign a probe may use: the target, the scope, and a query budget that
    every query the probe makes is paid from."""

    target: PredictionAPI | Callable[..., Any]
    scope: Scope
    model: LabModel | None
    seed: int

    @property
    def queries_left(self) -> int:
        """Queries the scope's budget still allows."""
        ...

    def reserve(self, n: int) -> None:
        """Refuse (``ScopeError``) a step that would need more than :attr:`queries_left` queries."""
        ...

    def spend(self, n: int) -> None:
        """Count ``n`` queries made outside :meth:`ask` against the budget."""
        ...

    def ask(self, x: torch.Tensor) -> Any:
        """One call to the target's API, paid for from the budget."""
        ...

    def need(self, name: str) -> Any:
        """The campaign's input ``name`` (``data``, ``scenario``, ...); :class:`NotApplicable`
        when it was not given."""
        ...

    def generator(self, offset: int = 0) -> torch.Generator:
        """A generator seeded from the campaign's seed (plus ``offset``)."""
        ...

    def surrogate(self) -> LabModel:
        """The attacker's own model, trained once on the surrogate data."""
        ...
