"""Transfer attacks: craft on a surrogate you own, then send the result to the black box.

An attacker who cannot query a model enough for :mod:`labkit.attacks.blackbox` can train a
*surrogate* (another architecture, another seed, labels bought from the target), run a white-box
attack on it, and hope the adversarial examples *transfer*. The transfer rate from a source
model :math:`f_s` to a target :math:`f_t` is, over the examples both classify correctly,

.. math::

    \\mathrm{rate}(s \\to t) = \\Pr\\big[f_t(A(f_s, x, y)) \\ne y \\;\\big|\\;
        f_s(x) = y,\\ f_t(x) = y\\big],

and for ``s = t`` it is the white-box success rate. Two classic boosters make examples transfer
better by fitting the surrogate less: momentum (:func:`mi_fgsm`) keeps the step direction stable
across iterations, input diversity (:func:`di_fgsm`) averages the gradient over random resizes
and shifts of the input.

* :func:`train_surrogate` (in :mod:`labkit.attacks.surrogate`) trains a CNN or an MLP with its
  own seed, optionally on labels read from the target (Papernot et al.'s black-box setting).
* :func:`transfer_rate` and :func:`transfer_matrix` (in :mod:`labkit.attacks.transferability`)
  measure transfer between models.

All five are importable from here.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.nn import functional as F

from labkit._checks import check_int, check_positive
from labkit.attacks._common import objective
from labkit.attacks.surrogate import train_surrogate
from labkit.attacks.threat import apply_threat_model, attack_mode, bounds_of, per_example
from labkit.attacks.transferability import TransferMatrix, transfer_matrix, transfer_rate

__all__ = ["TransferMatrix", "di_fgsm", "mi_fgsm", "train_surrogate", "transfer_matrix", "transfer_rate"]


# --------------------------------------------------------------------------------------------
# Boosters: momentum and input diversity
# --------------------------------------------------------------------------------------------


def _diverse(
    x: torch.Tensor, *, prob: float, resize_rate: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Input diversity: with probability ``prob`` per example, shrink the image by a random factor in
    ``[resize_rate, 1]`` and place it at a random position, zeros around it (differentiable)."""
    n = x.shape[0]
    device = generator.device if generator is not None else x.device
    u = torch.rand(n, 4, generator=generator, device=device, dtype=x.dtype).to(x.device)
    apply = u[:, 0] < prob
    scale = torch.where(apply, resize_rate + (1 - resize_rate) * u[:, 1], torch.ones_like(u[:, 1]))
    room = 1 - scale  # in normalised coordinates the image spans [-1, 1]
    shift_x = torch.where(apply, room * (2 * u[:, 2] - 1), torch.zeros_like(scale))
    shift_y = torch.where(apply, room * (2 * u[:, 3] - 1), torch.zeros_like(scale))
    # output pixel p samples input (p - shift) / scale
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, 0, 2] = -shift_x / scale
    theta[:, 1, 2] = -shift_y / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _iterative_transfer(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float | None,
    decay: float,
    diversity_prob: float,
    resize_rate: float,
    targeted: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The (M-)(DI)-FGSM family: iterative L-inf steps on an accumulated, normalised gradient."""
    steps = check_int(steps, "steps", minimum=1)
    alpha = None if step_size is None else check_positive(step_size, "step_size")
    if not (isinstance(decay, numbers.Real) and 0 <= decay):
        raise ValueError(f"decay must be a non-negative number, got {decay!r}")
    if not (isinstance(diversity_prob, numbers.Real) and 0 <= diversity_prob <= 1):
        raise ValueError(f"diversity_prob must be a probability in [0, 1], got {diversity_prob!r}")
    if not (isinstance(resize_rate, numbers.Real) and 0 < resize_rate <= 1):
        raise ValueError(f"resize_rate must be a number in (0, 1], got {resize_rate!r}")
    bounds = bounds_of(model)
    with attack_mode(model, x, y, eps=eps, norm="linf", bounds=bounds, stacklevel=4):
        if eps == 0:
            return x.clone()
        if diversity_prob > 0 and x.dim() != 4:
            raise ValueError(f"input diversity needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        if alpha is None:
            alpha = eps / steps
        x_adv = x.clone()
        g = torch.zeros_like(x)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            seen = x_adv
            if diversity_prob > 0:
                seen = _diverse(x_adv, prob=diversity_prob, resize_rate=resize_rate, generator=generator)
            loss = objective(model(seen), y, targeted)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
            g = decay * g + grad / per_example(l1, grad)
            x_adv = apply_threat_model(
                x, x_adv.detach() + alpha * g.sign(), norm="linf", eps=eps, bounds=bounds
            )
        return x_adv.detach()


def mi_fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    decay: float = 1.0,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Momentum Iterative FGSM (MI-FGSM): iterative FGSM on an accumulated gradient.

    From :math:`x_0 = x` and :math:`g_0 = 0`, for ``steps`` iterations

    .. math::

        g_{k+1} = \\mu\\, g_k + \\frac{\\nabla_x L(f(x_k), y)}{\\lVert \\nabla_x L(f(x_k), y)\\rVert_1},
        \\qquad x_{k+1} = \\Pi_{B_\\infty(x, \\epsilon) \\cap [0, 1]^d}\\big(x_k + \\alpha\\,
        \\mathrm{sign}(g_{k+1})\\big),

    with :math:`\\alpha = \\epsilon / T` so the last step may reach the edge of the ball. The
    momentum :math:`\\mu` (``decay``) stabilises the direction, which overfits the source model
    less and transfers better than PGD. Returns the last iterate (the point meant for another
    model), not the best one for the source.

    Reference: Dong, Liao, Pang, Su, Zhu, Hu and Li, "Boosting Adversarial Attacks with
    Momentum", CVPR 2018, arXiv:1710.06081.

    Parameters
    ----------
    model, x, y:
        The surrogate (white-box) model, clean inputs in its valid range, ``int64`` labels
        (the targets when ``targeted``).
    eps:
        L-inf budget in pixel units.
    steps:
        Iterations :math:`T` (one forward and backward pass each).
    step_size:
        :math:`\\alpha`; default ``eps / steps``.
    decay:
        Momentum :math:`\\mu \\ge 0`; ``0`` gives I-FGSM (the basic iterative method).
    targeted:
        Push towards the classes in ``y``.
    generator:
        Unused (deterministic); accepted for a uniform signature.

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
    >>> x_adv = mi_fgsm(model, x, torch.tensor([1]), eps=0.1, steps=5)
    >>> model.predict(x_adv), round(float((x_adv - x).abs().max()), 3)
    (tensor([0]), 0.1)
    """
    del generator  # deterministic
    return _iterative_transfer(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        step_size=step_size,
        decay=decay,
        diversity_prob=0.0,
        resize_rate=1.0,
        targeted=targeted,
        generator=None,
    )


def di_fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    decay: float = 0.0,
    diversity_prob: float = 0.5,
    resize_rate: float = 0.9,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Diverse Inputs iterative FGSM (DI²-FGSM, with ``decay > 0`` M-DI²-FGSM).

    The step of :func:`mi_fgsm`, but each gradient is taken through a random transformation
    :math:`T` of the current point, applied with probability :math:`p`:

    .. math::

        g_{k+1} = \\mu\\, g_k + \\frac{\\nabla_x L(f(T(x_k)), y)}{\\lVert \\nabla_x L(f(T(x_k)), y)\\rVert_1},
        \\qquad x_{k+1} = \\Pi\\big(x_k + \\alpha\\, \\mathrm{sign}(g_{k+1})\\big).

    :math:`T` shrinks the image by a random factor in ``[resize_rate, 1]`` and puts it at a
    random position of the frame, zeros around it: the paper's random resize and padding,
    done with one differentiable resampling so that it also works on 8x8 images. Fitting many
    slightly different inputs at once overfits the source less, so the examples transfer
    better. The perturbation still lives in the untransformed input's L-inf ball.

    Reference: Xie, Zhang, Zhou, Bai, Wang, Ren and Yuille, "Improving Transferability of
    Adversarial Examples with Input Diversity", CVPR 2019, arXiv:1803.06978.

    Parameters
    ----------
    model, x, y:
        The surrogate model, clean images ``(N, C, H, W)`` in its valid range, ``int64``
        labels (the targets when ``targeted``).
    eps:
        L-inf budget in pixel units.
    steps:
        Iterations (one forward and backward pass each).
    step_size:
        :math:`\\alpha`; default ``eps / steps``.
    decay:
        Momentum :math:`\\mu`; ``0`` (default) is DI²-FGSM, ``1.0`` M-DI²-FGSM.
    diversity_prob:
        :math:`p`, the probability of transforming the input at each step (the paper's 0.5).
    resize_rate:
        Smallest scale factor of the random resize.
    targeted:
        Push towards the classes in ``y``.
    generator:
        Source of the random transformations.

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
    >>> x = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> x_adv = di_fgsm(model, x, model.predict(x), eps=0.1, generator=torch.Generator().manual_seed(0))
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    return _iterative_transfer(
        model,
        x,
        y,
        eps=eps,
        steps=steps,
        step_size=step_size,
        decay=decay,
        diversity_prob=diversity_prob,
        resize_rate=resize_rate,
        targeted=targeted,
        generator=generator,
    )
