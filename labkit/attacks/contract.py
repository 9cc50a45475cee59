"""The attack contract: what every attack takes and what it gives back.

Every attack is a function ``attack(model, x, y, *, eps, ...) -> x_adv``
(:class:`BudgetAttack`): the model first, then the inputs and their labels (the targets when
``targeted=True``), then keyword-only settings, the budget ``eps`` among them. It returns
``x_adv`` with the shape, dtype and device of ``x``, inside the threat model of
:mod:`labkit.attacks.threat`, and leaves ``x`` and the model's gradients alone. With its budget
bound (``functools.partial(pgd, eps=8/255)``) it is an :class:`Attack`, which is what
evaluation, adversarial training and the benchmarks take.

Attacks that report more than their points (queries spent, their own verdict of success, the
occluded square) return an :class:`AttackResult` instead: its ``x_adv`` and ``success`` mean
the same everywhere, and :func:`adversarial_points` reads ``x_adv`` from either kind.

>>> from functools import partial
>>> from labkit.attacks import fgsm
>>> attack: Attack = partial(fgsm, eps=0.1)
>>> budgeted: BudgetAttack = fgsm
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Attack", "AttackResult", "BudgetAttack", "adversarial_points", "takes_budget"]


@runtime_checkable
class Attack(Protocol):
    """An attack with its budget bound: ``attack(model, x, y) -> x_adv``."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, /) -> torch.Tensor: ...


class BudgetAttack(Protocol):
    """An attack function: ``attack(model, x, y, *, eps, ...) -> x_adv`` (:func:`~labkit.attacks.pgd`)."""

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, /, *, eps: float
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class AttackResult:
    """What an attack returns when it reports more than ``x_adv``.

    Attributes
    ----------
    x_adv:
        Adversarial inputs with the shape, dtype and device of ``x``; where the attack failed,
        its best attempt (or ``x``).
    success:
        ``bool`` tensor ``(N,)``: the attack's own verdict that the model misclassifies
        ``x_adv`` (targeted: predicts the target).

    Subclasses add what their attacks measure: :class:`~labkit.attacks.BlackBoxResult` the
    queries spent, :class:`~labkit.attacks.OcclusionResult` the sensitivity map.
    """

    x_adv: torch.Tensor
    success: torch.Tensor


def adversarial_points(out: object) -> torch.Tensor:
    """``x_adv`` of an attack's output: a tensor, an :class:`AttackResult`, or another result
    that carries its points as a tensor ``x_adv`` (:class:`~labkit.attacks.PatchResult`,
    :class:`~labkit.eval.EnsembleResult`). The one place where attack outputs are reconciled.

    >>> x = torch.zeros(2, 1, 2, 2)
    >>> adversarial_points(AttackResult(x_adv=x, success=torch.zeros(2, dtype=torch.bool))) is x
    True
    >>> adversarial_points("x")
    Traceback (most recent call last):
    ...
    TypeError: an attack must return a tensor or an AttackResult (a result with a tensor x_adv), got str
    """
    if isinstance(out, torch.Tensor):
        return out
    x_adv = out.x_adv if isinstance(out, AttackResult) else getattr(out, "x_adv", None)
    if isinstance(x_adv, torch.Tensor):
        return x_adv
    raise TypeError(
        "an attack must return a tensor or an AttackResult (a result with a tensor x_adv), "
        f"got {type(out).__name__}"
    )


def takes_budget(attack: Callable[..., Any]) -> bool:
    """Whether ``attack`` is a :class:`BudgetAttack` (it takes ``eps``) rather than an :class:`Attack`.

    Read from its signature: a parameter named ``eps`` or a ``**kwargs`` makes it a
    :class:`BudgetAttack`. A callable whose signature cannot be read (some builtins) is taken to
    be one.

    >>> from functools import partial
    >>> from labkit.attacks import fgsm
    >>> takes_budget(fgsm), takes_budget(partial(fgsm, eps=0.1)), takes_budget(lambda m, x, y: x)
    (True, True, False)
    """
    try:
        params = inspect.signature(attack).parameters
    except (TypeError, ValueError):  # builtins and some C callables: assume it does
        return True
    return "eps" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
