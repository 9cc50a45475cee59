"""Adaptive-attack primitives: models that let a gradient attack see through gradient masking.

A defence that hides its gradient makes gradient attacks fail without making the model any
more robust (Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False Sense of
Security", arXiv:1802.00420). The remedy is to attack a *different differentiable model* that
makes the same decisions, then score the examples found on the real one. This module builds
those models; each is ``nn.Module -> nn.Module`` and keeps the base model's valid input range,
so any attack of :mod:`labkit.attacks` runs on it unchanged:

* :func:`straight_through`: BPDA with the identity on every piecewise-constant op (``round``,
  ``floor``, ``ceil``, ``trunc``, ``sign``, floor division) wherever it sits in the network;
* :func:`expectation`: EOT, the logits averaged over several forward passes of a randomized
  model (Athalye, Engstrom, Ilyas and Kwok, arXiv:1707.07397);
* :func:`rescaled`: the logits divided by their own spread, so the cross-entropy of a model
  with huge logits does not saturate;
* :func:`dlr_head`: logits whose cross-entropy rises with the DLR loss, so that APGD-CE runs
  as APGD-DLR (Croce and Hein, arXiv:2003.01690); :func:`apgd_dlr` is that attack.

:func:`margin_pgd` attacks the same weakness from the loss side: PGD on the Carlini-Wagner logit
margin, whose gradient does not pass through a softmax and so does not vanish when it saturates.

:class:`PiecewiseOpMode` is the recorder behind :func:`straight_through`; with
``replace=False`` it only records which piecewise-constant ops ran on input-dependent tensors
(:func:`labkit.eval.detect_masking` uses it that way). :class:`ModelWrapper`, :func:`wrap_like`
and :func:`logits_of` are the pieces for writing another such model.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
>>> class Rounded(nn.Module):
...     def forward(self, x): return net(torch.round(x * 3) / 3)
>>> x = torch.rand(4, 1, 1, 2, requires_grad=True)
>>> (dead,) = torch.autograd.grad(Rounded()(x).sum(), x)
>>> (seen,) = torch.autograd.grad(straight_through(Rounded())(x).sum(), x)
>>> bool(dead.abs().sum() == 0), bool(seen.abs().sum() > 0)
(True, True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from labkit.attacks.threat import (
    ProbabilityOutputWarning,
    apply_threat_model,
    attack_mode,
    bounds_of,
    per_example,
    random_in_ball,
)
from labkit.attacks.whitebox import apgd
from labkit.contract import LabModel

__all__ = [
    "PIECEWISE_CONSTANT",
    "Expectation",
    "ModelWrapper",
    "PiecewiseOpMode",
    "apgd_dlr",
    "dlr_head",
    "expectation",
    "logits_of",
    "margin_pgd",
    "rescaled",
    "straight_through",
    "wrap_like",
]

PIECEWISE_CONSTANT: dict[Callable[..., Any], str] = {
    torch.round: "round",
    torch.floor: "floor",
    torch.ceil: "ceil",
    torch.trunc: "trunc",
    torch.sign: "sign",
    torch.Tensor.round: "round",
    torch.Tensor.floor: "floor",
    torch.Tensor.ceil: "ceil",
    torch.Tensor.trunc: "trunc",
    torch.Tensor.sign: "sign",
    torch.floor_divide: "floor_divide",
    torch.Tensor.__floordiv__: "floor_divide",
}
"""The piecewise-constant torch functions :class:`PiecewiseOpMode` watches, by name."""


class PiecewiseOpMode(TorchFunctionMode):
    """Record the piecewise-constant ops that run on input-dependent tensors; optionally BPDA them.

    Inside ``with PiecewiseOpMode(replace=...) as mode:``, every op of
    :data:`PIECEWISE_CONSTANT` applied to a tensor that requires grad (and returning one of the
    same shape) is named in ``mode.seen``. With ``replace=True`` its floating-point output
    becomes straight-through: the value of the op, the gradient of the identity,
    :math:`\\hat g(t) = t + \\mathrm{stopgrad}(g(t) - t)`.
    """

    def __init__(self, *, replace: bool) -> None:
        super().__init__()
        self.replace = replace
        self.seen: set[str] = set()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = PIECEWISE_CONSTANT.get(func)
        if name is None or not args or not isinstance(args[0], torch.Tensor):
            return out
        x = args[0]
        if not (x.requires_grad and isinstance(out, torch.Tensor) and out.shape == x.shape):
            return out
        self.seen.add(name)
        if self.replace and out.is_floating_point():
            # Straight-through estimator: the value of the op, the gradient of the identity.
            return x + (out - x).detach()
        return out


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, without the input checks of a :class:`~labkit.LabModel` (the caller made them)."""
    if isinstance(model, LabModel):
        with model.unchecked():
            out: torch.Tensor = model(x)
            return out
    result: torch.Tensor = model(x)
    return result


class ModelWrapper(nn.Module):
    """A model in front of another one (``self.model``), keeping its valid input range for the attacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The wrapped model's valid input range (``(0, 1)`` for a plain module without one)."""
        if isinstance(self.model, LabModel):
            return self.model.value_range
        inner = getattr(self.model, "value_range", (0.0, 1.0))
        return None if inner is None else (float(inner[0]), float(inner[1]))


class _StraightThrough(ModelWrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with PiecewiseOpMode(replace=True):
            return logits_of(self.model, x)


class Expectation(ModelWrapper):
    """The logits of ``model`` averaged over ``samples`` forward passes, batched in one call (EOT)."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__(model)
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.repeat(self.samples, *([1] * (x.dim() - 1)))
        return logits_of(self.model, batch).view(self.samples, x.shape[0], -1).mean(dim=0)


class _Rescaled(ModelWrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = logits_of(self.model, x)
        spread = (z.amax(dim=1, keepdim=True) - z.amin(dim=1, keepdim=True)).detach()
        return 10.0 * z / spread.clamp_min(torch.finfo(z.dtype).tiny)


class _DLRHead(ModelWrapper):
    def __init__(self, model: nn.Module, y: torch.Tensor) -> None:
        super().__init__(model)
        self.y = y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = logits_of(self.model, x)
        ordered = z.sort(dim=1, descending=True).values
        is_y = torch.nn.functional.one_hot(self.y, z.shape[1]).bool()
        real = z.gather(1, self.y[:, None]).squeeze(1)
        other = z.masked_fill(is_y, float("-inf")).amax(dim=1)
        if z.shape[1] >= 3:
            spread = ordered[:, 0] - ordered[:, 2]
        else:  # two classes: the ratio is +-1, so only its numerator carries a gradient
            spread = (ordered[:, 0] - ordered[:, 1]).detach()
        dlr = -(real - other) / (spread + 1e-12)
        return torch.zeros_like(z).masked_scatter(is_y, -dlr)


def wrap_like(wrapper: ModelWrapper, model: nn.Module) -> nn.Module:
    """``wrapper`` in eval mode, as a :class:`~labkit.LabModel` with ``model``'s contract if it has one.

    Attacks read the valid input range through :func:`~labkit.attacks.threat.bounds_of`; the
    wrapper's inputs are not checked again (the attack checked them against ``model``).
    """
    if isinstance(model, LabModel):
        return LabModel(
            wrapper,
            input_shape=model.input_shape,
            num_classes=model.num_classes,
            value_range=model.value_range,
            check_inputs=False,
        ).eval()
    return wrapper.eval()


def straight_through(model: nn.Module) -> nn.Module:
    """BPDA with the identity on every piecewise-constant op inside ``model``.

    Runs ``model`` exactly, but wherever ``round``, ``floor``, ``ceil``, ``trunc``, ``sign`` or
    a floor division acts on a tensor that depends on the input, the backward pass uses the
    identity: :math:`\\hat g(t) = t + \\mathrm{stopgrad}(g(t) - t)`. That covers a bit-depth
    squeeze in front of the network and a rounding layer in the middle of it, without the
    defence having to say where it is (Athalye et al., arXiv:1802.00420, section 4.1).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    >>> rounding = lambda x: net(torch.round(x * 3) / 3)
    >>> class Rounded(nn.Module):
    ...     def forward(self, x): return rounding(x)
    >>> x = torch.rand(4, 1, 1, 2, requires_grad=True)
    >>> (g,) = torch.autograd.grad(straight_through(Rounded())(x).sum(), x)
    >>> bool(g.abs().sum() > 0)
    True
    """
    return wrap_like(_StraightThrough(model), model)


def expectation(model: nn.Module, samples: int) -> nn.Module:
    """EOT: the logits of ``model`` averaged over ``samples`` forward passes (one batched call).

    Reference: Athalye, Engstrom, Ilyas and Kwok, arXiv:1707.07397.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    return wrap_like(Expectation(model, samples), model)


def rescaled(model: nn.Module) -> nn.Module:
    """The logits of ``model`` divided by their spread (times 10): same decisions, unsaturated softmax.

    Huge logits (a distilled model deployed at temperature 1, logits times 1e6) round the
    softmax to one-hot, so the cross-entropy's gradient is exactly zero in float32; this
    rescaling undoes the saturation without changing any decision.
    """
    return wrap_like(_Rescaled(model), model)


def dlr_head(model: nn.Module, y: torch.Tensor) -> nn.Module:
    """Logits whose cross-entropy for ``y`` grows with the DLR loss: lets APGD-CE run APGD-DLR.

    With :math:`\\mathrm{DLR}(z, y) = -(z_y - \\max_{i \\ne y} z_i) / (z_{\\pi_1} - z_{\\pi_3})`
    the head returns :math:`w` with :math:`w_y = -\\mathrm{DLR}` and zeros elsewhere, so
    :math:`\\mathrm{CE}(w, y) = \\log(1 + (C - 1) e^{\\mathrm{DLR}})` rises with the DLR loss
    and :math:`\\arg\\max w \\ne y` exactly when the model is wrong. With two classes the
    denominator is :math:`|z_1 - z_2|` held constant (the ratio itself is :math:`\\pm 1`).
    The head is built for one batch: ``y`` holds its labels, one per row.

    Reference: Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks", arXiv:2003.01690.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        raise ValueError(f"y must be a 1-D tensor of labels, got {getattr(y, 'shape', type(y).__name__)}")
    return wrap_like(_DLRHead(model, y), model)


def apgd_dlr(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **settings: Any) -> torch.Tensor:
    """APGD on the DLR loss: :func:`~labkit.attacks.apgd` run on :func:`dlr_head` of ``model``.

    ``settings`` go to :func:`~labkit.attacks.apgd` (``eps``, ``steps``, ``generator``, ...).
    The DLR loss is invariant to shifting and rescaling the logits, so it does not saturate
    the way the cross-entropy does (Croce and Hein, arXiv:2003.01690).
    """
    target = dlr_head(model, y)
    with warnings.catch_warnings():
        # The head's rows can look like probabilities (a 1 and zeros); they are a loss, not a softmax.
        warnings.simplefilter("ignore", ProbabilityOutputWarning)
        return apgd(target, x, y, **settings)


def margin_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf PGD on the Carlini-Wagner logit margin instead of the cross-entropy.

    Maximises :math:`\\max_{i \\ne y} z_i(x') - z_y(x')` in the ball. The margin's gradient
    does not pass through a softmax, so it does not vanish when the softmax saturates
    (defensive distillation, huge logits). Returns per example the visited point with the
    largest margin.

    Reference: Carlini and Wagner, arXiv:1608.04644 (the loss); Madry et al., arXiv:1706.06083
    (PGD with it).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])
    >>> model.predict(margin_pgd(model, x, torch.tensor([1]), eps=0.1, steps=5))
    tensor([0])
    """
    bounds = bounds_of(model)
    with attack_mode(model, x, y, eps=eps, norm="linf", bounds=bounds, stacklevel=3) as clean:
        if eps == 0 or steps == 0:
            return x.clone()
        alpha = step_size if step_size is not None else 2.5 * eps / steps
        is_y = torch.nn.functional.one_hot(y, clean.shape[1]).bool()

        def margin(logits: torch.Tensor) -> torch.Tensor:
            real = logits.gather(1, y[:, None]).squeeze(1)
            other = logits.masked_fill(is_y, -math.inf).amax(dim=1)
            return other - real

        best_x, best_m = x.clone(), margin(clean)
        x_adv = x
        if random_start:
            x_adv = apply_threat_model(
                x,
                x + random_in_ball(x, norm="linf", eps=eps, generator=generator),
                norm="linf",
                eps=eps,
                bounds=bounds,
            )
        for k in range(steps + 1):
            x_adv = x_adv.detach().requires_grad_(k < steps)
            m = margin(model(x_adv))
            better = m.detach() > best_m
            best_x = torch.where(per_example(better, x), x_adv.detach(), best_x)
            best_m = torch.where(better, m.detach(), best_m)
            if k == steps:
                break
            (grad,) = torch.autograd.grad(m.sum(), x_adv)
            x_adv = apply_threat_model(
                x, x_adv.detach() + alpha * grad.sign(), norm="linf", eps=eps, bounds=bounds
            )
        return best_x.detach()
