"""Auto-PGD (APGD-CE): projected gradient descent that tunes its own step size.

The attack AutoAttack starts with: momentum, step-size halving at checkpoints and restarts from
the best point, so an evaluation has no step size to get wrong. It follows the contract of
:mod:`labkit.attacks.whitebox`, which re-exports it.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from labkit import speed as _speed
from labkit._checks import check_int
from labkit.attacks._common import Best, input_grad, objective, succeeded
from labkit.attacks.threat import (
    Norm,
    apply_threat_model,
    attack_mode,
    bounds_of,
    per_example,
    random_in_ball,
    steepest_direction,
)

__all__ = ["apgd"]


# --------------------------------------------------------------------------------------------
# APGD
# --------------------------------------------------------------------------------------------


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Auto-PGD with cross-entropy loss (APGD-CE): PGD without a step size to tune.

    Starting from a random point of the ball with step size :math:`\\eta = 2\\epsilon`, each
    step takes a projected gradient step and mixes it with the previous move (momentum
    :math:`\\alpha = 0.75`):

    .. math::

        z_{k+1} &= \\Pi\\big(x_k + \\eta_k\\, d_k\\big) \\\\
        x_{k+1} &= \\Pi\\big(x_k + \\alpha (z_{k+1} - x_k) + (1 - \\alpha)(x_k - x_{k-1})\\big)

    At checkpoints :math:`w_j = \\lceil p_j N \\rceil` with :math:`p_0 = 0`, :math:`p_1 = 0.22`,
    :math:`p_{j+1} = p_j + \\max(p_j - p_{j-1} - 0.03, 0.06)`, an example halves its
    :math:`\\eta` and restarts from its highest-loss point when the loss rose in fewer than a
    fraction ``rho`` of the steps since the last checkpoint, or when neither :math:`\\eta` nor the
    best loss changed at the last one. Per example it returns the best point visited (a success
    beats a failure, then the highest loss), over all steps and restarts.

    Reference: Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks", ICML 2020, arXiv:2003.01690.

    Parameters
    ----------
    model, x, y:
        As in :func:`~labkit.attacks.whitebox.fgsm`.
    eps:
        Radius of the ball in pixel units.
    norm:
        ``"linf"`` or ``"l2"``.
    steps:
        Iterations :math:`N` per restart (one forward and backward pass each, plus one for the
        starting point).
    restarts:
        Independent random starts.
    rho:
        Fraction of loss-increasing steps below which the step size is halved.
    targeted:
        Minimise the cross-entropy to the classes in ``y`` instead (APGD-CE, targeted).
    generator:
        Source of the random starts.

    Returns
    -------
    torch.Tensor
        ``x_adv`` with the shape, dtype and device of ``x``, inside the ball and the bounds.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = model.predict(x)
    >>> x_adv = apgd(model, x, y, eps=0.1, steps=20, generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    steps = check_int(steps, "steps", minimum=0)
    restarts = check_int(restarts, "restarts", minimum=1)
    if not (isinstance(rho, numbers.Real) and 0 < rho < 1):
        raise ValueError(f"rho must be a number in (0, 1), got {rho!r}")
    bounds = bounds_of(model)
    with attack_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean_logits:
        if eps == 0:
            return x.clone()
        best = Best(x, objective(clean_logits, y, targeted), succeeded(clean_logits, y, targeted))
        # Checkpoint spacing as in the reference implementation: 22% of the budget, shrinking by
        # 3% at each checkpoint down to 6%.
        first = max(int(0.22 * steps), 1)
        shrink = max(int(0.03 * steps), 1)
        shortest = max(int(0.06 * steps), 1)

        def step(point: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
            return apply_threat_model(x, point + move, norm=norm, eps=eps, bounds=bounds)

        fast = _speed.current()  # opt-in speed features a caller turned on (off by default)
        for _ in range(restarts):
            x_adv = step(x, random_in_ball(x, norm=norm, eps=eps, generator=generator, fast=fast))
            grad, loss, success = input_grad(model, x_adv, y, targeted, fast=fast)
            best.update(x_adv, loss, success)
            eta = torch.full_like(loss, 2 * eps)
            x_prev = x_adv
            loss_prev = loss
            top_x, top_grad, top_loss = x_adv, grad, loss  # highest-loss point, for step-size resets
            top_loss_at_check = top_loss
            halved_at_check = torch.ones_like(success)
            rises = torch.zeros_like(loss)
            period, since_check = first, 0
            for k in range(steps):
                momentum = 1.0 if k == 0 else 0.75
                z = step(x_adv, per_example(eta, x_adv) * steepest_direction(grad, norm))
                x_next = step(x_adv, momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev))
                x_prev, x_adv = x_adv, x_next
                grad, loss, success = input_grad(model, x_adv, y, targeted, fast=fast)
                best.update(x_adv, loss, success)
                rises = rises + (loss > loss_prev).to(loss.dtype)
                loss_prev = loss
                higher = loss > top_loss
                top_x = torch.where(per_example(higher, x_adv), x_adv, top_x)
                top_grad = torch.where(per_example(higher, grad), grad, top_grad)
                top_loss = torch.where(higher, loss, top_loss)
                since_check += 1
                if since_check == period:
                    oscillating = rises <= rho * period
                    stalled = ~halved_at_check & (top_loss_at_check >= top_loss)
                    halve = oscillating | stalled
                    eta = torch.where(halve, eta / 2, eta)
                    x_adv = torch.where(per_example(halve, x_adv), top_x, x_adv)
                    grad = torch.where(per_example(halve, grad), top_grad, grad)
                    halved_at_check, top_loss_at_check = halve, top_loss
                    rises = torch.zeros_like(rises)
                    period, since_check = max(period - shrink, shortest), 0
        return best.adv
