"""Models built around another model's weights: input transforms, temperature, softmax, EOT.

Every wrapper here returns a new :class:`~labkit.LabModel` that *shares* the wrapped model's
parameters (nothing is copied): it checks its inputs, keeps normalisation inside, and runs

.. math::

    x \\mapsto \\mathrm{post}\\Big(\\mathrm{net}\\big((\\mathrm{pre}(x) - \\mu) / \\sigma\\big)\\Big)

with ``net``, :math:`\\mu` and :math:`\\sigma` taken from the wrapped model, ``pre`` an input
transform (a preprocessing defence) and ``post`` a change to the outputs (a temperature, a
softmax). ``meta["base"]`` records the wrapped model, so tools such as
:func:`~labkit.eval.checklist` can find the undefended model and the transform.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from labkit.contract import LabModel

__all__ = ["base_of", "softmax_output", "with_temperature", "wrap"]


class _Pipeline(nn.Module):
    """``post(base.net((pre(x) - base.mean) / base.std))``, reusing ``base``'s weights."""

    def __init__(self, base: LabModel, *, pre: nn.Module | None, post: nn.Module | None) -> None:
        super().__init__()
        self.base = base
        self.pre = pre
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        z = self.base.net((x - self.base.mean) / self.base.std)
        if self.post is not None:
            z = self.post(z)
        return z


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class _Softmax(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.softmax(dim=1)


def check_lab_model(model: object, name: str = "model") -> LabModel:
    """Raise a ``TypeError`` unless ``model`` is a :class:`~labkit.LabModel`."""
    if not isinstance(model, LabModel):
        raise TypeError(
            f"{name} must be a labkit.LabModel (normalisation inside, inputs in pixel units), "
            f"got {type(model).__name__}; wrap a plain network with labkit.LabModel(net, ...)"
        )
    return model


def wrap(
    model: LabModel,
    *,
    pre: nn.Module | None = None,
    post: nn.Module | None = None,
    meta: dict[str, Any] | None = None,
) -> LabModel:
    """A :class:`~labkit.LabModel` running ``pre``, then ``model``'s network, then ``post``.

    The result shares ``model``'s parameters, input shape, classes and valid range, and starts
    in evaluation mode. ``meta`` is merged into ``model.meta`` and ``meta["base"]`` is set to
    ``model``.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> doubled = wrap(model, post=nn.Identity())
    >>> x = torch.rand(3, 1, 2, 2)
    >>> bool(torch.equal(doubled(x), model(x)))
    True
    """
    base = check_lab_model(model)
    wrapped = LabModel(
        _Pipeline(base, pre=pre, post=post),
        input_shape=base.input_shape,
        num_classes=base.num_classes,
        value_range=base.value_range,
        class_names=base.class_names,
        check_inputs=base.check_inputs,
    )
    wrapped.meta = {**base.meta, **(meta or {}), "base": base}
    return wrapped.to(base.mean.device).eval()


def base_of(model: nn.Module) -> LabModel | None:
    """The model a wrapper was built around (``meta["base"]``), or ``None``."""
    if isinstance(model, LabModel):
        base = model.meta.get("base")
        if isinstance(base, LabModel):
            return base
    return None


def check_temperature(temperature: object) -> float:
    """Return ``temperature`` as a float after checking it is a finite number above zero."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def with_temperature(model: LabModel, temperature: float) -> LabModel:
    """The same model with its logits divided by ``temperature``: :math:`z(x) / T`.

    The predictions do not change (``argmax`` is scale-invariant), only the softmax's sharpness.
    Attacking a defensively distilled model through ``with_temperature(model, T)`` undoes the
    :math:`T`-fold growth of its logits, so the cross-entropy gradients no longer vanish and the
    adversarial examples work on the original model too (Carlini and Wagner, "Defensive
    Distillation is Not Robust to Adversarial Examples", arXiv:1607.04311).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(3, 1, 2, 2)
    >>> bool(torch.allclose(with_temperature(model, 10.0)(x) * 10, model(x)))
    True
    """
    t = check_temperature(temperature)
    return wrap(model, post=_Scale(1.0 / t), meta={"temperature_wrapper": t})


def softmax_output(model: LabModel) -> LabModel:
    """The same model returning softmax probabilities instead of logits (a broken contract).

    This is what many deployed APIs return, and the classic way gradient masking creeps in:
    an attack that takes the cross-entropy *of these probabilities* (treating them as logits)
    sees gradients scaled by :math:`p(1-p)`, nearly zero wherever the model is confident.
    :func:`labkit.attacks.pgd` warns with ``ProbabilityOutputWarning``, and
    :func:`labkit.eval.checklist` flags it.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> p = softmax_output(model)(torch.rand(3, 1, 2, 2))
    >>> bool(torch.allclose(p.sum(dim=1), torch.ones(3)))
    True
    """
    return wrap(model, post=_Softmax(), meta={"outputs": "probabilities"})
