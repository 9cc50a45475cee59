"""Carlini-Wagner L2: the smallest perturbation that changes the decision.

An optimisation attack: instead of the strongest point inside a given ball it looks for the
nearest adversarial example, which measures how far the decision boundary is. It follows the
contract of :mod:`labkit.attacks.whitebox`, which re-exports it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from labkit._checks import check_int, check_positive
from labkit.attacks._common import succeeded
from labkit.attacks.threat import (
    apply_threat_model,
    attack_mode,
    bounds_of,
    check_eps,
    clip_to_bounds,
    per_example,
)

__all__ = ["cw"]


# --------------------------------------------------------------------------------------------
# Carlini-Wagner L2
# --------------------------------------------------------------------------------------------


def cw(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | None = None,
    confidence: float = 0.0,
    steps: int = 100,
    search_steps: int = 5,
    initial_c: float = 1.0,
    lr: float = 0.1,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Carlini-Wagner L2: the smallest perturbation that changes the decision, found by Adam.

    With the change of variables :math:`x' = \\tfrac{1}{2}(\\tanh w + 1)` (scaled to the
    model's valid range, so every iterate is a valid input) it minimises, per example,

    .. math::

        \\lVert x' - x \\rVert_2^2 + c \\cdot \\max\\big(Z(x')_y - \\max_{i \\ne y} Z(x')_i,\\; -\\kappa\\big)

    on the logits :math:`Z` (targeted: :math:`\\max_{i \\ne t} Z_i - Z_t`), with
    :math:`\\kappa` = ``confidence``. A binary search over :math:`c` runs ``search_steps``
    rounds of ``steps`` Adam steps: after a round that succeeded :math:`c` moves down towards the
    largest failing value, else up (times 10 until a success bounds it). Per example the result
    is the successful point with the smallest L2 distance found in any round, or ``x`` itself
    where no round succeeded.

    The attack is unbounded by default (``eps=None``): it reports *how far* the nearest
    adversarial example is. With ``eps`` given, the result is projected onto the L2 ball of that
    radius, like every other attack, and examples whose smallest perturbation was larger may no
    longer be adversarial. Carlini and Wagner's early abort is left out, so no step waits on the
    host.

    Reference: Carlini and Wagner, "Towards Evaluating the Robustness of Neural Networks",
    IEEE S&P 2017, arXiv:1608.04644.

    Parameters
    ----------
    model, x, y:
        As in :func:`~labkit.attacks.whitebox.fgsm`. The model must have a bounded input range.
    eps:
        Optional L2 budget; ``None`` (default) for the unbounded minimum-norm attack.
    confidence:
        :math:`\\kappa \\ge 0`, the logit margin the adversarial example must reach.
    steps:
        Adam steps per value of :math:`c` (one forward and backward pass each).
    search_steps:
        Rounds of the binary search over :math:`c`.
    initial_c:
        Starting trade-off :math:`c` for every example.
    lr:
        Adam learning rate on :math:`w`. Carlini and Wagner used 0.01 with up to 10,000 steps;
        with the short budgets of a course (100 steps per round) 0.1 finds smaller perturbations
        (digits-cnn: median L2 0.58 against 0.72, every example broken against 90%).
    targeted:
        Reach the classes in ``y`` instead of leaving them.
    generator:
        Unused (the attack is deterministic); accepted for a uniform signature.

    Returns
    -------
    torch.Tensor
        ``x_adv`` with the shape, dtype and device of ``x``, inside the valid range.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])      # class 1, by a margin of 0.2
    >>> x_adv = cw(model, x, torch.tensor([1]), steps=50)
    >>> model.predict(x_adv), round(float((x_adv - x).norm()), 2)   # optimum: 0.1
    (tensor([0]), 0.1)
    """
    del generator  # deterministic
    steps = check_int(steps, "steps", minimum=0)
    search_steps = check_int(search_steps, "search_steps", minimum=1)
    kappa = check_eps(confidence, name="confidence")
    c_start = check_positive(initial_c, "initial_c")
    lr = check_positive(lr, "lr")
    bounds = bounds_of(model)
    if bounds is None:
        raise ValueError("cw needs a model with a bounded input range (value_range), got None")
    with attack_mode(model, x, y, eps=eps, norm="l2", bounds=bounds) as clean_logits:
        if eps == 0 or steps == 0:
            return x.clone()
        low, high = bounds
        half = (high - low) / 2
        # Start at x itself (shrunk a hair inside the box so atanh stays finite).
        w_start = torch.atanh(((x - low) / half - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach()
        is_y = F.one_hot(y, clean_logits.shape[1]).bool()
        already = succeeded(clean_logits, y, targeted)
        best_l2 = torch.where(already, 0.0, math.inf).to(x.dtype)
        best_adv = x.detach().clone()
        c = torch.full_like(best_l2, c_start)
        c_low = torch.zeros_like(c)
        c_high = torch.full_like(c, math.inf)
        beta1, beta2 = 0.9, 0.999
        for _ in range(search_steps):
            w = w_start.clone()
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            won = torch.zeros_like(already)
            for t in range(1, steps + 2):
                w.requires_grad_(True)
                x_adv = low + half * (torch.tanh(w) + 1)
                logits = model(x_adv)
                real = logits.gather(1, y[:, None]).squeeze(1)
                other = logits.masked_fill(is_y, -math.inf).amax(dim=1)
                margin = other - real if targeted else real - other
                dist2 = (x_adv - x).flatten(1).pow(2).sum(dim=1)
                loss = dist2 + c * margin.clamp_min(-kappa)
                g = torch.autograd.grad(loss.sum(), w)[0] if t <= steps else None
                with torch.no_grad():
                    hit = margin.detach() < -kappa if kappa > 0 else succeeded(logits, y, targeted)
                    dist = dist2.detach().sqrt()
                    closer = hit & (dist < best_l2)
                    best_l2 = torch.where(closer, dist, best_l2)
                    best_adv = torch.where(per_example(closer, x), x_adv.detach(), best_adv)
                    won = won | hit
                    if g is None:  # the last iterate is only scored, not stepped from
                        break
                    m = beta1 * m + (1 - beta1) * g
                    v = beta2 * v + (1 - beta2) * g * g
                    m_hat = m / (1 - beta1**t)
                    v_hat = v / (1 - beta2**t)
                    w = w.detach() - lr * m_hat / (v_hat.sqrt() + 1e-8)
            # Binary search on c, per example, without leaving the device.
            c_high = torch.where(won, torch.minimum(c_high, c), c_high)
            c_low = torch.where(won, c_low, torch.maximum(c_low, c))
            c = torch.where(torch.isfinite(c_high), (c_low + c_high) / 2, c * 10)
        x_out = clip_to_bounds(best_adv, bounds)
        if eps is not None:
            x_out = apply_threat_model(x, x_out, norm="l2", eps=eps, bounds=bounds)
        return x_out.detach()
