"""The threat model, in one place: validate once, project onto the ball, clip to the valid range.

Every attack in :mod:`labkit.attacks` goes through these functions, so they all obey the same
rules. An attack on a clean input :math:`x` with budget :math:`\\epsilon` may return any

.. math::

    x' \\in \\{\\, x + \\delta \\;:\\; \\lVert \\delta \\rVert_p \\le \\epsilon,\\;
    \\text{low} \\le x + \\delta \\le \\text{high} \\,\\}, \\qquad p \\in \\{\\infty, 2\\},

where the norm is taken per example over all of its pixels and ``(low, high)`` are the model's
valid input range (``LabModel.value_range``, ``(0, 1)`` for images). Epsilons are in pixel units
because normalisation lives inside the model.

Projecting first and clipping second keeps both constraints: clipping to a box that contains
``x`` only shrinks each coordinate of ``delta``, so the clipped point stays in the ball.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Literal, get_args

import torch
from torch import nn

from labkit import speed as _speed
from labkit.attacks._fold import folded_batch_norm
from labkit.contract import LabModel, TrainModeWarning
from labkit.utils import check_dtype, check_images, eval_mode, label_error, model_dtype

__all__ = [
    "Bounds",
    "Norm",
    "ProbabilityOutputWarning",
    "apply_threat_model",
    "attack_mode",
    "attack_mode_unscored",
    "bounds_of",
    "check_attack_args",
    "check_attack_inputs",
    "check_eps",
    "check_logits",
    "clip_to_bounds",
    "linf_box",
    "lp_norm",
    "per_example",
    "project",
    "random_in_ball",
    "steepest_direction",
]

Norm = Literal["linf", "l2"]
Bounds = tuple[float, float]
NORMS: tuple[str, ...] = get_args(Norm)

# Guards divisions by a per-example norm that may be exactly zero.
_TINY = 1e-12


class ProbabilityOutputWarning(UserWarning):
    """The model seems to return probabilities (softmax outputs) instead of logits."""


def _flat_view(t: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts a per-example value over the rest of ``t``."""
    return (-1,) + (1,) * (t.dim() - 1)


def lp_norm(delta: torch.Tensor, *, norm: Norm) -> torch.Tensor:
    """Per-example norm of ``delta`` over all non-batch dimensions, shape ``(N,)``.

    Examples
    --------
    >>> lp_norm(torch.tensor([[3.0, -4.0]]), norm="l2")
    tensor([5.])
    >>> lp_norm(torch.tensor([[3.0, -4.0]]), norm="linf")
    tensor([4.])
    """
    _check_norm(norm)
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    return flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, *, norm: Norm, eps: float | torch.Tensor) -> torch.Tensor:
    """Project perturbations onto the ``norm`` ball of radius ``eps`` (per example).

    L-inf clamps every coordinate to :math:`[-\\epsilon, \\epsilon]`; L2 rescales each example's
    perturbation by :math:`\\min(1, \\epsilon / \\lVert\\delta\\rVert_2)`, which is the Euclidean
    projection onto the ball. Returns a new tensor; ``delta`` is not modified.

    Parameters
    ----------
    delta:
        Perturbations of shape ``(N, ...)``.
    norm:
        ``"linf"`` or ``"l2"``.
    eps:
        Radius, a non-negative number or a tensor of shape ``(N,)`` (one radius per example).

    Examples
    --------
    >>> project(torch.tensor([[0.5, -0.2]]), norm="linf", eps=0.3)
    tensor([[ 0.3000, -0.2000]])
    >>> project(torch.tensor([[3.0, 4.0]]), norm="l2", eps=1.0)
    tensor([[0.6000, 0.8000]])
    """
    _check_norm(norm)
    if isinstance(eps, torch.Tensor):
        radius = eps.to(delta).reshape(_flat_view(delta))
        if norm == "linf":
            return torch.maximum(torch.minimum(delta, radius), -radius)
        factor = (radius.flatten() / lp_norm(delta, norm="l2").clamp_min(_TINY)).clamp(max=1.0)
        return delta * factor.reshape(_flat_view(delta))
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / lp_norm(delta, norm="l2").clamp_min(_TINY)).clamp(max=1.0)
    return delta * factor.reshape(_flat_view(delta))


def clip_to_bounds(x_adv: torch.Tensor, bounds: Bounds | None) -> torch.Tensor:
    """Clip candidate adversarial inputs to the valid range ``bounds = (low, high)``.

    This is for points an attack produced itself; inputs from the caller are checked by
    :func:`check_attack_inputs` and never clamped. ``bounds=None`` (unbounded features) returns
    ``x_adv`` as it is.

    Examples
    --------
    >>> clip_to_bounds(torch.tensor([-0.1, 0.5, 1.2]), (0.0, 1.0))
    tensor([0.0000, 0.5000, 1.0000])
    """
    if bounds is None:
        return x_adv
    return x_adv.clamp(bounds[0], bounds[1])


def apply_threat_model(
    x: torch.Tensor, x_adv: torch.Tensor, *, norm: Norm, eps: float | torch.Tensor, bounds: Bounds | None
) -> torch.Tensor:
    """Map a candidate ``x_adv`` to an allowed point: project ``x_adv - x`` onto the ball, then clip.

    The result satisfies :math:`\\lVert x' - x\\rVert_p \\le \\epsilon` and lies in ``bounds``
    (clipping never lengthens the perturbation, since ``x`` lies in ``bounds``). For L-inf it is
    the nearest allowed point: ball and box are both per-coordinate intervals, so clamping to
    their intersection is the Euclidean projection onto it. For L2 it is feasible but in general
    *not* the Euclidean projection onto ball :math:`\\cap` box: that point is
    :math:`\\mathrm{clip}(x + \\delta / (1 + \\lambda))` for the smallest :math:`\\lambda \\ge 0`
    that brings it into the ball, which a root search finds; project-then-clip can end up
    strictly inside the ball, shorter than it needs to be. Every attack here uses this map
    (as foolbox and torchattacks do), so their points are comparable.

    Examples
    --------
    >>> x = torch.tensor([[0.9, 0.1]])
    >>> apply_threat_model(x, torch.tensor([[1.5, -0.5]]), norm="linf", eps=0.2, bounds=(0.0, 1.0))
    tensor([[1., 0.]])
    """
    return clip_to_bounds(x + project(x_adv - x, norm=norm, eps=eps), bounds)


def linf_box(x: torch.Tensor, eps: float, bounds: Bounds | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The allowed set of an L-inf attack as per-coordinate limits ``(low, high)``.

    The ball and the bounds are both boxes, so their intersection is one box, and
    ``x_adv.clamp(low, high)`` is :func:`apply_threat_model` for ``norm="linf"`` in a single
    pass (the Euclidean projection onto the allowed set). Iterative attacks compute the limits
    once and clamp every iterate to them.

    Examples
    --------
    >>> low, high = linf_box(torch.tensor([[0.05, 0.5]]), 0.1, (0.0, 1.0))
    >>> low, high
    (tensor([[0.0000, 0.4000]]), tensor([[0.1500, 0.6000]]))
    >>> torch.tensor([[0.3, 0.3]]).clamp(low, high)
    tensor([[0.1500, 0.4000]])
    """
    low, high = x - eps, x + eps
    if bounds is not None:
        low, high = low.clamp_min_(bounds[0]), high.clamp_max_(bounds[1])
    return low, high


def bounds_of(model: nn.Module) -> Bounds | None:
    """The valid input range of ``model``: ``LabModel.value_range``, else ``(0.0, 1.0)``.

    Examples
    --------
    >>> bounds_of(nn.Linear(2, 2))
    (0.0, 1.0)
    """
    if isinstance(model, LabModel):
        return (
            None if model.value_range is None else (float(model.value_range[0]), float(model.value_range[1]))
        )
    return (0.0, 1.0)


def _check_norm(norm: object) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(repr(n) for n in NORMS)}, got {norm!r}")


def check_eps(
    eps: object, *, name: str = "eps", norm: Norm | None = None, bounds: Bounds | None = (0.0, 1.0)
) -> float:
    """Return ``eps`` as a float after checking it is a finite, non-negative number.

    This is the one check every budget in labkit goes through (attacks, adversarial training,
    ensembles, evaluation). With ``norm="linf"`` it also refuses a budget wider than the valid
    range ``bounds``: on pixels in ``[0, 1]`` an L-inf ``eps`` above 1 allows every image, and is
    almost always a budget in grey levels (``eps=8`` for ``8/255``). L2 budgets are whole-image
    lengths and may exceed 1, so they are not capped; nor is anything when ``bounds`` is ``None``
    (unbounded features) or ``norm`` is ``None`` (a step size or a constant, not a budget).

    Examples
    --------
    >>> check_eps(8 / 255, norm="linf")
    0.03137254901960784
    >>> check_eps(2.0, norm="l2")
    2.0
    >>> check_eps(8, norm="linf")
    Traceback (most recent call last):
    ...
    ValueError: eps=8 is above 1 for an L-inf budget on pixels in [0, 1]; did you mean 8/255 = 0.0314?
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name} must be a non-negative number in pixel units, got {type(eps).__name__}")
    value = float(eps)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}; epsilons are in pixel units, e.g. 8/255")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    if norm is not None:
        _check_norm(norm)
    if norm == "linf" and bounds is not None:
        low, high = float(bounds[0]), float(bounds[1])
        if value > high - low:
            if (low, high) == (0.0, 1.0):
                hint = (
                    f"did you mean {value:g}/255 = {value / 255:.4f}?"
                    if value <= 255
                    else "expected a budget in [0, 1] such as 8/255"
                )
                raise ValueError(
                    f"{name}={value:g} is above 1 for an L-inf budget on pixels in [0, 1]; {hint}"
                )
            raise ValueError(
                f"{name}={value:g} is above {high - low:g}, the width of the valid range "
                f"[{low:g}, {high:g}]; an L-inf budget that large allows every input"
            )
    return value


def check_attack_inputs(
    model: nn.Module,
    x: object,
    y: object,
    *,
    eps: float | None,
    norm: Norm,
    bounds: Bounds | None,
    stacklevel: int = 2,
) -> torch.Tensor:
    """Validate an attack's arguments once and return the model's logits on the clean ``x``.

    Checks, each with a ``TypeError``/``ValueError`` that names what was wrong:

    * ``model`` is a ``torch.nn.Module``;
    * ``x`` is a non-empty floating-point tensor, finite, inside ``bounds`` (never clamped
      silently) and of the model's input shape when ``model`` is a :class:`~labkit.LabModel`;
    * ``y`` is an ``int64`` tensor of shape ``(N,)`` with the same ``N`` as ``x`` and labels
      that index the model's classes;
    * ``x`` has the dtype the model computes in (``x.to(...)`` it, nothing is cast silently);
    * ``eps`` is a finite number ``>= 0`` and, for ``"linf"``, no wider than ``bounds``
      (:func:`check_eps`; ``None`` skips this, for unbounded attacks);
    * ``norm`` is ``"linf"`` or ``"l2"``.

    Warns with :class:`~labkit.TrainModeWarning` when the model is in training mode (the attack
    still runs it in eval mode and restores the caller's mode), and with
    :class:`ProbabilityOutputWarning` when every output row is non-negative and sums to one:
    gradients through a softmax saturate, so gradient attacks look weaker than they are.

    The clean forward pass runs in eval mode without gradients; the model's mode and its
    ``.grad`` are left as they were. :func:`check_attack_args` runs the same checks without
    the forward pass.
    """
    x, y = check_attack_args(model, x, y, eps=eps, norm=norm, bounds=bounds, stacklevel=stacklevel + 1)
    with torch.no_grad(), eval_mode(model):
        logits = model(x)
    check_logits(logits, y, stacklevel=stacklevel + 1)
    return logits


def check_attack_args(
    model: nn.Module,
    x: object,
    y: object,
    *,
    eps: float | None,
    norm: Norm,
    bounds: Bounds | None,
    stacklevel: int = 2,
    mode_warning: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_attack_inputs` without the clean forward pass; returns ``(x, y)``.

    The caller must pass the logits of its own first forward pass to :func:`check_logits`
    (this saves one pass, a third of FGSM's cost). ``mode_warning=False`` leaves the
    training-mode warning to the caller, which walks the model's modules anyway.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_norm(norm)
    if eps is not None:
        check_eps(eps, norm=norm, bounds=bounds)
    shape = model.input_shape if isinstance(model, LabModel) else None
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        raise ValueError("x must be a batch of inputs with shape (N, ...), got a scalar tensor")
    x = check_images(x, name="x", shape=shape, value_range=bounds)
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch; attacks need at least one example")
    if not torch.is_autocast_enabled():
        check_dtype(x, model_dtype(model), name="x")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of int64 class labels, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise TypeError(f"y must hold int64 class labels, got dtype {y.dtype}; use y.long()")
    if y.dim() != 1:
        raise ValueError(f"y must have shape (N,), got {tuple(y.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}; put them on the same device")

    if mode_warning and any(m.training for m in model.modules()):
        _warn_train_mode(model, stacklevel + 1)
    return x, y


def _warn_train_mode(model: nn.Module, stacklevel: int) -> None:
    warnings.warn(
        f"{type(model).__name__} is in training mode; the attack runs it in eval mode "
        "(dropout off, batch-norm running statistics) and restores the mode afterwards. "
        "Call model.eval() to silence this warning.",
        TrainModeWarning,
        stacklevel=stacklevel + 1,
    )


def check_logits(logits: object, y: torch.Tensor, *, stacklevel: int = 2) -> None:
    """Check a model's outputs on a batch: logits of shape ``(N, classes)``, finite, labels in range.

    Raises ``ValueError`` for a wrong shape, non-finite outputs or labels outside the classes,
    and warns with :class:`ProbabilityOutputWarning` when the outputs look like probabilities.
    One host synchronisation in all.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes) = ({y.shape[0]}, C), got {got}")
    # One host synchronisation for the common case: the extremes of the labels and of the
    # outputs (NaN or infinite outputs make an extreme NaN or infinite).
    y_min, y_max = torch.aminmax(y)
    out_min, out_max = torch.aminmax(logits.detach())
    extremes = [y_min.to(logits.dtype), y_max.to(logits.dtype), out_min, out_max]
    y_lo, y_hi, lo, hi = torch.stack(extremes).tolist()
    classes = logits.shape[1]
    if y_lo < 0 or y_hi >= classes:
        raise ValueError(label_error(int(y_lo if y_lo < 0 else y_hi), classes))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the model returned NaN or infinite outputs on x; attacks need finite logits")
    # Only non-negative outputs can be probabilities: their row sums are read in that case alone.
    if lo >= 0 and float((logits.detach().sum(dim=1) - 1).abs().amax()) <= 1e-4:
        warnings.warn(
            "the model's outputs are non-negative and sum to 1 per row: it looks like it returns "
            "probabilities (softmax) rather than logits. Gradients through a softmax saturate, so "
            "gradient attacks get tiny or zero gradients and look weaker than they are (a form of "
            "gradient masking). Remove the final softmax and return logits.",
            ProbabilityOutputWarning,
            stacklevel=stacklevel + 1,
        )


@contextlib.contextmanager
def attack_mode(
    model: nn.Module,
    x: object,
    y: object,
    *,
    eps: float | None,
    norm: Norm,
    bounds: Bounds | None,
    stacklevel: int = 3,
) -> Iterator[torch.Tensor]:
    """Validate once (:func:`check_attack_inputs`), then run the block ready for a hot loop.

    Inside the block the model is in eval mode, a :class:`~labkit.LabModel` skips its
    per-call input checks (the attack keeps its iterates in range itself), and gradients are
    enabled. Everything is restored on exit. Yields the clean logits.
    """
    logits = check_attack_inputs(model, x, y, eps=eps, norm=norm, bounds=bounds, stacklevel=stacklevel + 1)
    with _hot_loop(model):
        yield logits


@contextlib.contextmanager
def attack_mode_unscored(
    model: nn.Module,
    x: object,
    y: object,
    *,
    eps: float | None,
    norm: Norm,
    bounds: Bounds | None,
    stacklevel: int = 3,
) -> Iterator[None]:
    """:func:`attack_mode` without the clean forward pass, for attacks that do not need it.

    The attack must pass the logits of its first forward pass to :func:`check_logits`, so a
    model returning probabilities or NaN is still caught. Saves one forward pass per call.
    """
    check_attack_args(
        model, x, y, eps=eps, norm=norm, bounds=bounds, stacklevel=stacklevel + 1, mode_warning=False
    )
    with _hot_loop(model, warn_stacklevel=stacklevel + 2):
        yield


@contextlib.contextmanager
def _hot_loop(model: nn.Module, *, warn_stacklevel: int | None = None) -> Iterator[None]:
    """Eval mode, unchecked inputs, gradients and batch norm folded into the convolutions
    (:mod:`labkit.attacks._fold`) for the block; with ``warn_stacklevel``, the training-mode
    warning too, from the same walk over the modules."""
    states = [(m, m.training) for m in model.modules()]
    training = any(was for _, was in states)
    if training and warn_stacklevel is not None:
        _warn_train_mode(model, warn_stacklevel + 1)
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    try:
        if training:
            model.eval()
        with unchecked, torch.enable_grad(), folded_batch_norm(model):
            yield
    finally:
        for m, was in states:
            if m.training != was:
                m.training = was


def per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(N,)`` tensor so it broadcasts against ``like`` of shape ``(N, ...)``."""
    return t.reshape((-1,) + (1,) * (like.dim() - 1))


def steepest_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent direction of unit ``norm``: the sign for L-inf, ``g/||g||_2`` for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / per_example(lp_norm(grad, norm="l2").clamp_min(_TINY), grad)


def random_in_ball(
    x: torch.Tensor,
    *,
    norm: Norm,
    eps: float,
    generator: torch.Generator | None,
    fast: _speed.SpeedConfig | None = None,
) -> torch.Tensor:
    """A point drawn uniformly from the ``norm`` ball of radius ``eps`` around zero.

    Drawn on the generator's device; with ``pin_memory`` on (``fast``) a CPU draw reaches a
    GPU without blocking the host.
    """
    device = generator.device if generator is not None else x.device
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        return _speed.to_device((2 * u - 1) * eps, x.device, fast or _speed.SpeedConfig())
    g = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    r = torch.rand(x.shape[0], generator=generator, device=device, dtype=x.dtype)
    dim = x[0].numel()
    radius = eps * r.pow(1.0 / dim) / lp_norm(g, norm="l2").clamp_min(_TINY)
    return _speed.to_device(g * per_example(radius, g), x.device, fast or _speed.SpeedConfig())
