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

These wrappers are attack primitives: they live in :mod:`labkit.attacks.adaptive` and are
re-exported here, where the evaluation uses them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from labkit.attacks.adaptive import PiecewiseOpMode, expectation, logits_of, rescaled, straight_through
from labkit.utils import eval_mode

__all__ = ["MaskingReport", "detect_masking", "expectation", "rescaled", "straight_through"]

LOGIT_SCALE_LIMIT = 1e3
"""Logit spread (max minus min, median over the probe) above which the softmax saturates."""

VANISHING = 1e-12
"""Input-gradient L1 norm per example below which it counts as vanished."""


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
    >>> from labkit.contract import LabModel
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
            first, second = logits_of(model, x), logits_of(model, x)
        randomized = not torch.equal(first, second)
        probe = x.detach().clone().requires_grad_(True)
        recorder = PiecewiseOpMode(replace=False)
        with torch.enable_grad(), recorder:
            logits = logits_of(model, probe)
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
