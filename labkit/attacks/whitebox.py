"""White-box attacks: they read the model's gradients with respect to its input.

Every attack is a function ``(model, x, y, *, eps, ..., targeted=False, generator=None)``
returning ``x_adv`` with the shape, dtype and device of ``x``. ``x`` is never modified, the
model's parameters never receive a ``.grad`` (gradients come from ``torch.autograd.grad`` with
respect to the input only), and the model runs in eval mode whatever mode the caller left it
in. With ``targeted=True``, ``y`` holds the *target* classes instead of the true ones.

The objective of an untargeted attack with cross-entropy loss :math:`L` is

.. math::

    \\max_{\\lVert \\delta \\rVert_p \\le \\epsilon,\\; x + \\delta \\in [0, 1]^d} L(f(x + \\delta), y),

and a targeted one minimises :math:`L(f(x + \\delta), t)` instead. :mod:`labkit.attacks.threat`
does the projection and clipping for all of them.
"""

from __future__ import annotations

import torch
from torch import nn

from labkit import speed as _speed
from labkit._checks import check_int, check_positive
from labkit.attacks._common import Best, BestSuccess, evaluate, gradient, input_grad, succeeded
from labkit.attacks.autopgd import apgd
from labkit.attacks.carlini_wagner import cw
from labkit.attacks.contract import Attack
from labkit.attacks.threat import (
    Norm,
    apply_threat_model,
    attack_mode_unscored,
    bounds_of,
    check_attack_inputs,
    linf_box,
    random_in_ball,
    steepest_direction,
)
from labkit.utils import eval_mode

__all__ = ["Attack", "apgd", "attack_success", "cw", "fgsm", "pgd", "robust_accuracy"]


# --------------------------------------------------------------------------------------------
# FGSM
# --------------------------------------------------------------------------------------------


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fast Gradient Sign Method: one signed-gradient step of size ``eps`` (L-inf).

    .. math::

        x' = \\mathrm{clip}_{[0, 1]}\\big(x + \\epsilon \\,\\mathrm{sign}(\\nabla_x L(f(x), y))\\big)

    untargeted, and :math:`x - \\epsilon\\,\\mathrm{sign}(\\nabla_x L(f(x), t))` targeted, so
    :math:`\\lVert x' - x\\rVert_\\infty \\le \\epsilon`.

    Reference: Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial
    Examples", ICLR 2015, arXiv:1412.6572.

    Parameters
    ----------
    model:
        A classifier returning logits, e.g. a :class:`~labkit.LabModel`.
    x:
        Clean inputs of shape ``(N, ...)`` in the model's valid range (``[0, 1]`` for images).
    y:
        ``int64`` labels of shape ``(N,)``: the true classes, or the targets when ``targeted``.
    eps:
        L-inf budget in pixel units, e.g. ``8/255``.
    targeted:
        Step towards the classes in ``y`` instead of away from them.
    generator:
        Unused (FGSM is deterministic); accepted so every attack has the same signature.

    Returns
    -------
    torch.Tensor
        ``x_adv`` with the shape, dtype and device of ``x``.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])      # class 1, by a margin of 0.2
    >>> x_adv = fgsm(model, x, torch.tensor([1]), eps=0.1)
    >>> x_adv
    tensor([[[[0.5000, 0.5000],
              [0.6000, 0.6000]]]])
    >>> model.predict(x_adv)
    tensor([0])
    """
    del generator  # deterministic
    bounds = bounds_of(model)
    with attack_mode_unscored(model, x, y, eps=eps, norm="linf", bounds=bounds):
        if eps == 0:
            return x.clone()
        grad = gradient(model, x, y, targeted, check=True, fast=_speed.current())
        # x + eps * sign(grad) lies in the ball already: only the bounds can cut it.
        x_adv = torch.add(x.detach(), grad.sign_(), alpha=eps)  # the objective is signed
        return x_adv if bounds is None else x_adv.clamp_(bounds[0], bounds[1])


# --------------------------------------------------------------------------------------------
# PGD
# --------------------------------------------------------------------------------------------


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected Gradient Descent (ascent on the loss) in an L-inf or L2 ball.

    From a random start :math:`x_0 \\sim U(B_p(x, \\epsilon))` repeat ``steps`` times

    .. math::

        x_{k+1} = \\Pi_{B_p(x, \\epsilon) \\cap [0, 1]^d}\\big(x_k + \\alpha\\, d_k\\big),
        \\qquad d_k = \\mathrm{sign}(g_k) \\;(p=\\infty), \\quad d_k = g_k / \\lVert g_k\\rVert_2 \\;(p=2),

    with :math:`g_k = \\nabla_x L(f(x_k), y)` (minus the target's loss when ``targeted``) and
    :math:`\\Pi` the map of :mod:`labkit.attacks.threat` onto the allowed set. Each iterate's
    logits come for free with the gradient the next step computes, so the attack keeps, per
    example, the best point it scored: any misclassified (or, targeted, on-target) point beats
    every other, and among equals the one with the highest loss. An example no scored point
    broke gets the last iterate, which no pass scores (exactly ``steps`` forward and backward
    passes in all; with ``restarts > 1`` one more forward pass per restart scores the last
    iterate, so that restarts compare). An example therefore counts as broken if any visited
    point broke it.

    Reference: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR 2018, arXiv:1706.06083.

    Parameters
    ----------
    model, x, y:
        As in :func:`fgsm`.
    eps:
        Radius of the ball in pixel units (per-pixel for ``"linf"``, whole image for ``"l2"``).
    norm:
        ``"linf"`` or ``"l2"``.
    steps:
        Gradient steps per restart (one forward and one backward pass each).
    step_size:
        :math:`\\alpha`; default ``2.5 * eps / steps``, the Madry et al. rule that lets the
        iterates cross the whole ball.
    random_start:
        Start each restart at a uniform random point of the ball (else at ``x``).
    restarts:
        Independent random starts; needs ``random_start=True`` when above 1.
    targeted:
        Push towards the classes in ``y``.
    generator:
        Source of the random starts, for reproducible attacks.

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
    >>> x_adv = pgd(model, x, y, eps=0.1, steps=10, generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6), x_adv.shape
    (True, torch.Size([64, 1, 2, 2]))
    >>> float((model.predict(x_adv) == y).float().mean()) < 0.5
    True
    """
    steps = check_int(steps, "steps", minimum=0)
    restarts = check_int(restarts, "restarts", minimum=1)
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} would repeat the same run: set random_start=True")
    alpha = None if step_size is None else check_positive(step_size, "step_size")
    bounds = bounds_of(model)
    with attack_mode_unscored(model, x, y, eps=eps, norm=norm, bounds=bounds):
        if eps == 0:
            return x.clone()
        if alpha is None:
            alpha = 2.5 * eps / max(steps, 1)
        fast = _speed.current()  # opt-in speed features a caller turned on (off by default)
        # The clean point is not scored: with a random start it is never visited, and without
        # one it is the first iterate. The first forward pass validates the logits instead.
        best: Best | None = None
        x = x.detach()
        box = linf_box(x, eps, bounds) if norm == "linf" else None

        def allowed(candidate: torch.Tensor) -> torch.Tensor:
            # L-inf: one clamp to the box that is ball and bounds together; L2: project, then clip.
            if box is not None:
                return candidate.clamp_(*box)
            return apply_threat_model(x, candidate, norm=norm, eps=eps, bounds=bounds)

        def step(x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
            direction = grad.sign_() if norm == "linf" else steepest_direction(grad, norm)
            return allowed(torch.add(x_adv, direction, alpha=alpha))

        def start() -> torch.Tensor:
            if not random_start:
                return x
            return allowed(x + random_in_ball(x, norm=norm, eps=eps, generator=generator, fast=fast))

        if restarts == 1 and steps > 0:
            # One run: the last iterate stands for every example no scored point broke, so only
            # successes need ranking.
            x_adv = start()
            found: BestSuccess | None = None
            for _ in range(steps):
                grad, loss, success = input_grad(model, x_adv, y, targeted, check=found is None, fast=fast)
                found = BestSuccess.merge(found, x_adv, loss, success)
                x_adv = step(x_adv, grad)
            assert found is not None  # steps > 0
            return found.pick(x_adv)
        for _ in range(restarts):
            x_adv = start()
            for _ in range(steps):
                grad, loss, success = input_grad(model, x_adv, y, targeted, check=best is None, fast=fast)
                best = Best.merge(best, x_adv, loss, success)
                x_adv = step(x_adv, grad)
            # Restarts compare their last iterates too; with steps == 0 this is the first
            # forward pass, so it validates the logits.
            scored = evaluate(model, x_adv, y, targeted, fast, check=best is None)
            best = Best.merge(best, x_adv, *scored)
        assert best is not None  # restarts >= 1
        return best.adv


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def attack_success(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, *, targeted: bool = False
) -> torch.Tensor:
    """Per-example success of an attack, a boolean tensor of shape ``(N,)``.

    Untargeted: the model no longer predicts ``y``; targeted: it predicts the target ``y``.
    Runs in eval mode without gradients and restores the model's mode.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = nn.Sequential(net).eval()
    >>> attack_success(model, torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1])).shape
    torch.Size([3])
    """
    logits = check_attack_inputs(model, x_adv, y, eps=None, norm="linf", bounds=bounds_of(model))
    return succeeded(logits, y, targeted)


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int | None = None,
) -> float:
    """Fraction of examples classified correctly both clean and after ``attack``, in ``[0, 1]``.

    ``attack`` is any ``(model, x, y) -> x_adv`` callable, e.g.
    ``functools.partial(labkit.attacks.pgd, eps=8/255, steps=20)``. It is applied batch by
    batch; an example counts as robust only if the model gets it right on ``x`` and on
    ``x_adv``. ``batch_size`` defaults to 256, or to the ``batch_size`` of the active speed
    features (:mod:`labkit.speed`, the ``gpu`` profile) on a GPU.

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(32, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = model.predict(x)
    >>> robust_accuracy(model, x, y, partial(fgsm, eps=0.0))
    1.0
    """
    if not callable(attack):
        raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if batch_size is None:
        batch_size = _speed.batch_size(256, x.device)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    bounds = bounds_of(model)
    robust = torch.zeros((), dtype=torch.long, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        # Validates the batch and gives the clean predictions in the same forward pass.
        clean_logits = check_attack_inputs(model, xb, yb, eps=None, norm="linf", bounds=bounds)
        x_adv = attack(model, xb, yb)
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != xb.shape:
            got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
            raise ValueError(f"attack returned {got}, expected a tensor of shape {tuple(xb.shape)}")
        with torch.no_grad(), eval_mode(model):
            adv_pred = model(x_adv).argmax(dim=1)
        robust += ((clean_logits.argmax(dim=1) == yb) & (adv_pred == yb)).sum()
    return int(robust) / x.shape[0]
