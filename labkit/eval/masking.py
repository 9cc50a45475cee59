"""Signs of gradient masking, measured on the model rather than declared by the defence.

A defence that hides its gradient makes gradient attacks fail without making the model any
more robust (Athalye, Carlini and Wagner, "Obfuscated Gradients Give a False Sense of
Security", ICML 2018, arXiv:1802.00420; Carlini et al., "On Evaluating Adversarial
Robustness", arXiv:1902.06705). :func:`detect_masking` probes a model on a small batch for the
usual symptoms:

* **shattered gradients**: a piecewise-constant operation (``round``, ``floor``, ``ceil``,
  ``trunc``, ``sign``) runs on a tensor that depends on the input, or the input gradient is
  zero, vanishing or not finite for many examples;
* **stochastic gradients**: two forward passes on the same input differ;
* **saturated softmax**: the logits are so large (defensive distillation, logits times 1e6)
  that the cross-entropy's gradient underflows.

It also builds the models the attacks should aim at instead: :func:`straight_through` (BPDA
with the identity on every piecewise-constant operation, wherever it sits in the network),
:func:`expectation` (EOT: logits averaged over draws) and :func:`rescaled` (logits divided by
their own spread, so the cross-entropy does not saturate). The examples found on them are
scored on the real model.

These wrappers are attack primitives; they live here until ``labkit.attacks`` grows a place
for BPDA and EOT.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from labkit.contract import LabModel
from labkit.utils import eval_mode

__all__ = ["MaskingReport", "detect_masking", "expectation", "rescaled", "straight_through"]

_PIECEWISE_CONSTANT: dict[Callable[..., Any], str] = {
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

LOGIT_SCALE_LIMIT = 1e3
"""Logit spread (max minus min, median over the probe) above which the softmax saturates."""

VANISHING = 1e-12
"""Input-gradient L1 norm per example below which it counts as vanished."""


class _PiecewiseMode(TorchFunctionMode):
    """Records piecewise-constant ops on input-dependent tensors; can make them straight-through."""

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
        name = _PIECEWISE_CONSTANT.get(func)
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


def _call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, LabModel):
        with model.unchecked():
            out: torch.Tensor = model(x)
            return out
    result: torch.Tensor = model(x)
    return result


class _Wrapper(nn.Module):
    """A model in front of another one, keeping its valid input range for the attacks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def value_range(self) -> tuple[float, float] | None:
        if isinstance(self.model, LabModel):
            return self.model.value_range
        inner = getattr(self.model, "value_range", (0.0, 1.0))
        return None if inner is None else (float(inner[0]), float(inner[1]))


class _StraightThrough(_Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _PiecewiseMode(replace=True):
            return _call(self.model, x)


class _Expectation(_Wrapper):
    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__(model)
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.repeat(self.samples, *([1] * (x.dim() - 1)))
        return _call(self.model, batch).view(self.samples, x.shape[0], -1).mean(dim=0)


class _Rescaled(_Wrapper):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _call(self.model, x)
        spread = (z.amax(dim=1, keepdim=True) - z.amin(dim=1, keepdim=True)).detach()
        return 10.0 * z / spread.clamp_min(torch.finfo(z.dtype).tiny)


def _as_lab(wrapper: _Wrapper, model: nn.Module) -> nn.Module:
    """Give the wrapper the base model's input range (attacks read it through ``bounds_of``)."""
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
    return _as_lab(_StraightThrough(model), model)


def expectation(model: nn.Module, samples: int) -> nn.Module:
    """EOT: the logits of ``model`` averaged over ``samples`` forward passes (one batched call).

    Reference: Athalye, Engstrom, Ilyas and Kwok, arXiv:1707.07397.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    return _as_lab(_Expectation(model, samples), model)


def rescaled(model: nn.Module) -> nn.Module:
    """The logits of ``model`` divided by their spread (times 10): same decisions, unsaturated softmax.

    Huge logits (a distilled model deployed at temperature 1, logits times 1e6) round the
    softmax to one-hot, so the cross-entropy's gradient is exactly zero in float32; this
    rescaling undoes the saturation without changing any decision.
    """
    return _as_lab(_Rescaled(model), model)


@dataclass
class MaskingReport:
    """What :func:`detect_masking` saw on its probe batch.

    Attributes
    ----------
    piecewise_ops:
        Piecewise-constant ops run on input-dependent tensors (``round``, ``sign``, ...).
    dead_gradients:
        Fraction of probe examples whose input gradient of the cross-entropy is zero, vanishing
        (L1 norm below :data:`VANISHING`) or not finite.
    randomized:
        Two forward passes on the same input gave different logits.
    logit_scale:
        Median spread of the logits (max minus min) over the probe.
    blackbox_beats_whitebox:
        Set by the ensemble when a score-based attack broke examples the gradient attacks
        could not.
    """

    piecewise_ops: tuple[str, ...] = ()
    dead_gradients: float = 0.0
    randomized: bool = False
    logit_scale: float = 0.0
    blackbox_beats_whitebox: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def shattered(self) -> bool:
        """Gradients are shattered: a piecewise-constant op, or many dead input gradients."""
        return bool(self.piecewise_ops) or self.dead_gradients > 0.25

    @property
    def saturated(self) -> bool:
        """The logits are large enough to saturate the softmax."""
        return self.logit_scale > LOGIT_SCALE_LIMIT

    @property
    def masked(self) -> bool:
        """Any sign of gradient masking."""
        return self.shattered or self.randomized or self.saturated or self.blackbox_beats_whitebox

    def reasons(self) -> list[str]:
        """The signs seen, in words."""
        out = []
        if self.piecewise_ops:
            out.append(f"piecewise-constant ops in the forward pass: {', '.join(self.piecewise_ops)}")
        if self.dead_gradients > 0:
            out.append(f"{self.dead_gradients:.0%} of probe examples have zero or non-finite input gradients")
        if self.randomized:
            out.append("two forward passes on the same input differ (randomized model)")
        if self.saturated:
            out.append(f"logit spread {self.logit_scale:.3g} saturates the softmax")
        if self.blackbox_beats_whitebox:
            out.append("a black-box attack broke examples the gradient attacks could not")
        return out + self.notes

    def _repr_markdown_(self) -> str:
        reasons = self.reasons()
        if not reasons:
            return "**No sign of gradient masking** on the probe batch."
        return "**Signs of gradient masking**\n\n" + "\n".join(f"* {html.escape(r)}" for r in reasons)


def detect_masking(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> MaskingReport:
    """Probe ``model`` on a batch for the symptoms of gradient masking.

    Two forward passes without gradients (are they equal?), one with input gradients under a
    recorder of piecewise-constant ops (which ran, how many gradients are dead, how large the
    logits are). The model's mode and its weights' ``.grad`` are left as they were.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=3).eval()
    >>> x, y = torch.rand(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)
    >>> detect_masking(model, x, y).masked
    False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with eval_mode(model):
        with torch.no_grad():
            first, second = _call(model, x), _call(model, x)
        randomized = not torch.equal(first, second)
        probe = x.detach().clone().requires_grad_(True)
        recorder = _PiecewiseMode(replace=False)
        with torch.enable_grad(), recorder:
            logits = _call(model, probe)
        notes: list[str] = []
        if logits.requires_grad:
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, probe, allow_unused=True)
        else:
            grad = None
        if grad is None:
            dead = 1.0
            notes.append("the output does not depend differentiably on the input")
        else:
            flat = grad.flatten(1)
            bad = ~torch.isfinite(flat).all(dim=1) | (flat.abs().sum(dim=1) < VANISHING)
            dead = float(bad.float().mean())
    spread = (first.amax(dim=1) - first.amin(dim=1)).float()
    return MaskingReport(
        piecewise_ops=tuple(sorted(recorder.seen)),
        dead_gradients=dead,
        randomized=randomized,
        logit_scale=float(spread.median()),
        notes=notes,
    )
