"""Shared internals of the attacks: the objective, success, one gradient step's forward and
backward pass, and the best point per example. Used by :mod:`~labkit.attacks.whitebox`,
:mod:`~labkit.attacks.blackbox`, :mod:`~labkit.attacks.physical` and
:mod:`~labkit.attacks.transfer` only."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from labkit import speed as _speed
from labkit.attacks.threat import check_logits, per_example

__all__ = ["Best", "BestSuccess", "evaluate", "gradient", "input_grad", "objective", "succeeded"]

_OFF = _speed.SpeedConfig()


def objective(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example loss the attack *maximises*: CE to the label, or minus CE to the target."""
    loss = F.cross_entropy(logits, y, reduction="none")
    return -loss if targeted else loss


def succeeded(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def _loss_and_grad(
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targeted: bool,
    check: bool,
    fast: _speed.SpeedConfig | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_adv = x_adv.detach().requires_grad_(True)
    logits = _speed.logits(model, x_adv, fast or _OFF)
    if check:
        check_logits(logits, y, stacklevel=4)
    loss = objective(logits, y, targeted)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return grad, loss.detach(), logits.detach()


def input_grad(
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targeted: bool,
    *,
    check: bool = False,
    fast: _speed.SpeedConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward pass: gradient w.r.t. the input, per-example loss, success.

    ``check=True`` validates the logits first (:func:`~labkit.attacks.threat.check_logits`), for
    attacks that skip the clean forward pass. ``fast`` (default: off) runs the forward pass
    under the speed features of :mod:`labkit.speed`, mixed precision included.
    """
    grad, loss, logits = _loss_and_grad(model, x_adv, y, targeted, check, fast)
    return grad, loss, succeeded(logits, y, targeted)


def gradient(
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targeted: bool,
    *,
    check: bool = False,
    fast: _speed.SpeedConfig | None = None,
) -> torch.Tensor:
    """:func:`input_grad`'s gradient alone, for attacks that score nothing (FGSM)."""
    return _loss_and_grad(model, x_adv, y, targeted, check, fast)[0]


class Best:
    """The best point found so far per example: a success beats a failure, then higher loss wins."""

    def __init__(self, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        self.adv = x.detach().clone()
        self.loss = loss.detach().clone()
        self.success = success.detach().clone()

    @classmethod
    def merge(cls, best: Best | None, x_adv: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> Best:
        """``best`` updated with a new point, or a fresh record when ``best`` is ``None``."""
        if best is None:
            return cls(x_adv, loss, success)
        best.update(x_adv, loss, success)
        return best

    def update(self, x_adv: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        better = (success & ~self.success) | ((success == self.success) & (loss > self.loss))
        self.adv = torch.where(per_example(better, x_adv), x_adv.detach(), self.adv)
        self.loss = torch.where(better, loss, self.loss)
        self.success = self.success | success


class BestSuccess:
    """The highest-loss successful point per example, for a single run that falls back to its
    last iterate where nothing succeeded: :class:`Best` without the ranking of failures, which
    that fallback never reads (five tensor operations per step instead of eleven)."""

    def __init__(self, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        self.adv = x.detach().clone()
        self.loss = torch.where(success, loss.detach(), float("-inf"))

    @classmethod
    def merge(
        cls, best: BestSuccess | None, x_adv: torch.Tensor, loss: torch.Tensor, success: torch.Tensor
    ) -> BestSuccess:
        """``best`` updated with a new point, or a fresh record when ``best`` is ``None``."""
        if best is None:
            return cls(x_adv, loss, success)
        better = success & (loss > best.loss)
        best.adv = torch.where(per_example(better, x_adv), x_adv.detach(), best.adv)
        best.loss = torch.where(better, loss, best.loss)
        return best

    def pick(self, last: torch.Tensor) -> torch.Tensor:
        """The best success per example, else ``last``."""
        return torch.where(per_example(self.loss > float("-inf"), last), self.adv, last)


def evaluate(
    model: nn.Module,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targeted: bool,
    fast: _speed.SpeedConfig | None = None,
    *,
    check: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass without gradients: per-example loss and success (``check`` as in
    :func:`input_grad`)."""
    with torch.no_grad():
        logits = _speed.logits(model, x_adv, fast or _OFF)
    if check:
        check_logits(logits, y, stacklevel=3)
    return objective(logits, y, targeted), succeeded(logits, y, targeted)
