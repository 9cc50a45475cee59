"""Attributions (saliency, integrated gradients) and the model-randomisation sanity check."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from labkit._checks import check_generator
from labkit.classifier import model_device
from labkit.utils import eval_mode

__all__ = ["SanityResult", "integrated_gradients", "randomization_check", "randomize_parameters", "saliency"]

Method = Literal["saliency", "integrated_gradients"]


def _inputs(model: nn.Module, x: object) -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (gradients are needed), got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    return x.detach().to(model_device(model, x.device))


def _targets(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        with torch.no_grad(), eval_mode(model):
            return model(x).argmax(1)
    if not isinstance(target, torch.Tensor) or target.shape != (x.shape[0],):
        raise ValueError(f"target must be a tensor of {x.shape[0]} class indices")
    return target.to(x.device).long()


def _grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    picked = logits.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(picked, xg)  # never touches the parameters' .grad
    return grad.detach()


def saliency(model: nn.Module, x: torch.Tensor, *, target: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient of the target logit with respect to the input (vanilla saliency).

    Parameters
    ----------
    model:
        A differentiable classifier; run in evaluation mode, its ``.grad`` untouched.
    x:
        Inputs ``(N, ...)``; not modified.
    target:
        Class per input (default: the predicted class).

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.

    References
    ----------
    Simonyan, Vedaldi and Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", arXiv:1312.6034.
    """
    x = _inputs(model, x)
    with eval_mode(model):
        t = _targets(model, x, target)
        return _grad(model, x, t)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: torch.Tensor | None = None,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
) -> torch.Tensor:
    """Integrated gradients from ``baseline`` (default zeros) to ``x``, midpoint Riemann sum.

    ``IG(x) = (x - x') * mean_k grad f(x' + (k + 1/2)/steps * (x - x'))``; the attributions
    sum approximately to ``f(x) - f(x')`` (completeness).

    References
    ----------
    Sundararajan, Taly and Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
    arXiv:1703.01365.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    x = _inputs(model, x)
    base = torch.zeros_like(x) if baseline is None else baseline.detach().to(x.device, x.dtype).expand_as(x)
    total = torch.zeros_like(x)
    with eval_mode(model):
        t = _targets(model, x, target)
        for k in range(steps):
            alpha = (k + 0.5) / steps
            total += _grad(model, base + alpha * (x - base), t)
    return (x - base) * total / steps


def randomize_parameters(model: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy of ``model`` whose parameters are redrawn at random (the model is untouched).

    Each parameter tensor is replaced by Gaussian noise with the tensor's own mean and
    standard deviation, so activations keep their scale while everything learned is gone:
    the fully randomised end of the cascading randomisation of Adebayo et al. (2018).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    generator = check_generator(generator)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            flat = p.detach().double().flatten()
            mean = float(flat.mean())
            std = float(flat.std()) if flat.numel() > 1 else 0.0
            std = std if std > 0 else max(abs(mean), 1.0) * 0.1
            where = generator.device if generator is not None else p.device
            noise = torch.randn(p.shape, generator=generator, device=where, dtype=p.dtype).to(p.device)
            p.copy_(mean + std * noise)
    return clone


@dataclass(frozen=True)
class SanityResult:
    """Outcome of :func:`randomization_check`.

    Attributes
    ----------
    similarity:
        Mean Spearman rank correlation between the absolute attributions of the trained and
        the randomised model (1 = identical ranking, 0 = unrelated).
    per_example:
        The correlation of each example.
    method:
        The attribution method checked.
    threshold:
        Similarity above which the check fails.
    """

    similarity: float
    per_example: list[float]
    method: str
    threshold: float

    @property
    def passed(self) -> bool:
        """True when the explanations change once the learned weights are gone."""
        return self.similarity <= self.threshold


def _ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort(dim=1).argsort(dim=1).double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ra, rb = _ranks(a), _ranks(b)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return (ra * rb).sum(1) / den


def _importance(attr: torch.Tensor) -> torch.Tensor:
    a = attr.abs()
    if a.dim() == 4:  # images: importance per pixel, summed over channels
        a = a.sum(1)
    return a.flatten(1)


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: Method = "saliency",
    threshold: float = 0.5,
    steps: int = 16,
    generator: torch.Generator | None = None,
) -> SanityResult:
    """Model-parameter randomisation test: do the explanations depend on what the model learned?

    Computes attributions of ``x`` for the model and for a copy with randomised parameters
    (:func:`randomize_parameters`), both for the trained model's predicted classes, and their
    Spearman rank correlation per example. An explanation method that still gives similar
    maps for a random model is explaining the input (edges, magnitudes), not the model; the
    check fails when the mean correlation is above ``threshold``.

    References
    ----------
    Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for Saliency Maps",
    NeurIPS 2018, arXiv:1810.03292.
    """
    if method not in ("saliency", "integrated_gradients"):
        raise ValueError(f"method must be 'saliency' or 'integrated_gradients', got {method!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    x = _inputs(model, x)
    random_model = randomize_parameters(model, generator=generator)
    with eval_mode(model):
        target = _targets(model, x, None)
    maps = []
    for m in (model, random_model):
        if method == "saliency":
            maps.append(_importance(saliency(m, x, target=target)))
        else:
            maps.append(_importance(integrated_gradients(m, x, target=target, steps=steps)))
    rho = _spearman(maps[0], maps[1])
    return SanityResult(float(rho.mean()), [float(v) for v in rho], method, float(threshold))
