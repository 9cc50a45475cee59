"""The attacks that adversarial training runs on every batch: lean, last iterate, same threat model.

:func:`pgd_train_attack` (Madry et al., arXiv:1706.06083), :func:`fgsm_rs_attack` (FGSM from a
random start, Wong, Rice and Kolter, arXiv:2001.03994) and :func:`trades_attack` (the KL inner
maximisation of TRADES, Zhang et al., arXiv:1901.08573) skip the per-call validation of
:mod:`labkit.attacks` (the training loop has checked the data once) and return the last
iterate, but project and clip through :mod:`labkit.attacks.threat` like every attack.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from labkit import speed as _speed
from labkit.attacks.threat import (
    Norm,
    apply_threat_model,
    bounds_of,
    check_eps,
    random_in_ball,
    steepest_direction,
)

# --------------------------------------------------------------------------------------------
# Training attacks: lean, last iterate, threat model from labkit.attacks.threat
# --------------------------------------------------------------------------------------------


def _grad_of(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def pgd_train_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 7,
    step_size: float | None = None,
    norm: Norm = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD for training loops: ``steps`` projected steps on the cross-entropy, last iterate.

    The same update and threat model as :func:`labkit.attacks.pgd` (default step
    :math:`2.5\\epsilon/\\text{steps}`), without validating its arguments or keeping the best
    point: the loop checked the data once and only needs a hard example, fast. The model runs
    in whatever mode the caller left it in; its parameters receive no ``.grad``. The speed
    features of the active profile (:mod:`labkit.speed`: mixed precision, pinned transfers)
    apply when they are on; no step waits on the host.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(8, 1, 2, 2)
    >>> x_adv = pgd_train_attack(model, x, model.predict(x), eps=0.1, steps=3)
    >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
    True
    """
    bounds = bounds_of(model)
    check_eps(eps, norm=norm, bounds=bounds)  # plain Python: no host synchronisation
    if eps == 0 or steps == 0:
        return x.detach().clone()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    fast = _speed.current()
    x = x.detach()
    x_adv = x
    if random_start:
        x_adv = apply_threat_model(
            x,
            x + random_in_ball(x, norm=norm, eps=eps, generator=generator, fast=fast),
            norm=norm,
            eps=eps,
            bounds=bounds,
        )
    with torch.enable_grad():
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            loss = F.cross_entropy(_speed.logits(model, x_adv, fast), y, reduction="sum")
            grad = _grad_of(loss, x_adv)
            x_adv = apply_threat_model(
                x, x_adv.detach() + alpha * steepest_direction(grad, norm), norm=norm, eps=eps, bounds=bounds
            )
    return x_adv.detach()


def fgsm_rs_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FGSM from a uniform random start in the L-inf ball, step ``step_size`` (default :math:`1.25\\epsilon`).

    .. math::

        \\delta_0 \\sim U[-\\epsilon, \\epsilon]^d, \\qquad
        x' = \\Pi_{B_\\infty(x, \\epsilon) \\cap [0,1]^d}\\big(x + \\delta_0 + \\alpha\\,
        \\mathrm{sign}\\, \\nabla_x L(f(x + \\delta_0), y)\\big)

    Wong et al. found :math:`\\alpha = 1.25\\epsilon` works and that larger steps (around
    :math:`2\\epsilon` on CIFAR-10) bring catastrophic overfitting.

    Reference: Wong, Rice and Kolter, "Fast is better than free: Revisiting adversarial
    training", ICLR 2020, arXiv:2001.03994.
    """
    alpha = step_size if step_size is not None else 1.25 * eps
    return pgd_train_attack(
        model, x, y, eps=eps, steps=1, step_size=alpha, random_start=random_start, generator=generator
    )


def trades_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 7,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on :math:`\\mathrm{KL}(f(x) \\,\\|\\, f(x'))`, labels unused.

    Starts at :math:`x + 0.001\\, \\mathcal{N}(0, I)` and takes ``steps`` signed steps (default
    size :math:`2.5\\epsilon/\\text{steps}`) in the L-inf ball.

    Reference: Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically Principled Trade-off
    between Robustness and Accuracy", ICML 2019, arXiv:1901.08573.
    """
    del y  # TRADES pushes away from the model's own clean prediction
    bounds = bounds_of(model)
    check_eps(eps, norm="linf", bounds=bounds)
    if eps == 0 or steps == 0:
        return x.detach().clone()
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    fast = _speed.current()
    x = x.detach()
    with torch.no_grad():
        p_clean = _speed.logits(model, x, fast).softmax(dim=1)
    device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    start = 0.001 * _speed.to_device(noise, x.device, fast)
    x_adv = apply_threat_model(x, x + start, norm="linf", eps=eps, bounds=bounds)
    with torch.enable_grad():
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            kl = F.kl_div(_speed.logits(model, x_adv, fast).log_softmax(dim=1), p_clean, reduction="sum")
            grad = _grad_of(kl, x_adv)
            x_adv = apply_threat_model(
                x, x_adv.detach() + alpha * grad.sign(), norm="linf", eps=eps, bounds=bounds
            )
    return x_adv.detach()
