"""What a black-box attack returns (:class:`BlackBoxResult`) and queries (:data:`QueryModel`).

:func:`as_attack` binds an attack's settings and keeps only ``x_adv``, so that a black-box
attack plugs in wherever a ``(model, x, y) -> x_adv`` is expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit.attacks.contract import AttackResult
from labkit.attacks.whitebox import Attack

__all__ = ["BlackBoxResult", "QueryBudgetWarning", "QueryModel", "as_attack"]

QueryModel = nn.Module | Callable[[torch.Tensor], torch.Tensor]
"""What a black-box attack queries: a module or any function returning scores ``(N, classes)``."""


class QueryBudgetWarning(UserWarning):
    """Some examples used their whole query budget without the attack succeeding."""


@dataclass(frozen=True, kw_only=True)
class BlackBoxResult(AttackResult):
    """What a black-box attack found, and what it cost.

    Attributes
    ----------
    x_adv:
        Adversarial inputs, shape, dtype and device of ``x``, inside the ball and the bounds.
        Where the attack failed this is its best attempt (or ``x``).
    queries:
        ``int64`` tensor ``(N,)``: the queries each example used, the clean input included.
    success:
        ``bool`` tensor ``(N,)``: the attack's own verdict from its queries, that the model
        misclassifies ``x_adv`` (targeted: predicts the target). :func:`hopskipjump` with an
        ``eps`` counts only points it found within ``eps``.
    exhausted:
        ``bool`` tensor ``(N,)``: the example stopped because its budget could not pay for
        another query.
    max_queries:
        The budget per example the attack ran with.
    """

    queries: torch.Tensor
    exhausted: torch.Tensor
    max_queries: int

    @property
    def success_rate(self) -> float:
        """Fraction of examples the attack succeeded on, in ``[0, 1]``."""
        return float(self.success.float().mean())

    def median_queries(self) -> float:
        """Median queries over the successful examples (``nan`` when there are none)."""
        used = self.queries[self.success]
        return float(used.float().median()) if used.numel() else math.nan

    def success_curve(self, budgets: list[int] | None = None) -> tuple[list[int], list[float]]:
        """Success rate had the budget been each of ``budgets`` (default: 20 steps up to the budget)."""
        if budgets is None:
            budgets = sorted({max(1, round(self.max_queries * k / 20)) for k in range(1, 21)})
        rates = [float((self.success & (self.queries <= b)).float().mean()) for b in budgets]
        return budgets, rates

    def _repr_markdown_(self) -> str:
        n = int(self.success.numel())
        return (
            "| examples | success rate | median queries (successes) | exhausted | max_queries |\n"
            "|---|---|---|---|---|\n"
            f"| {n} | {self.success_rate:.1%} | {self.median_queries():.0f} | "
            f"{int(self.exhausted.sum())} | {self.max_queries} |"
        )

    def plot(self, ax: Any = None, *, label: str = "attack") -> Any:
        """Success rate against the number of queries allowed."""
        from labkit.plot import curves

        budgets, rates = self.success_curve()
        return curves(
            budgets, {label: rates}, xlabel="queries per example", ylabel="success rate", ax=ax, marker="."
        )


def as_attack(attack: Callable[..., BlackBoxResult], **settings: Any) -> Attack:
    """Bind a black-box attack's settings and keep only ``x_adv``: a ``(model, x, y) -> x_adv``.

    For :func:`~labkit.attacks.robust_accuracy` and the other tools that take a plain attack.

    Examples
    --------
    >>> from labkit.attacks.blackbox import square
    >>> attack = as_attack(square, eps=0.1, max_queries=50)
    >>> callable(attack)
    True
    """
    if not callable(attack):
        raise TypeError(f"attack must be a black-box attack function, got {type(attack).__name__}")

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(model, x, y, **settings).x_adv

    return run
