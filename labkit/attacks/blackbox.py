"""Black-box attacks: they see only the model's outputs, never its gradients.

A black-box attacker can send inputs to a model (a prediction API) and read what comes back:
*score-based* attacks read a score per class (logits or probabilities), *decision-based* ones
only the top label. Each input sent is a **query**, and queries are what such an attack pays
with, so every attack here takes a budget ``max_queries`` per example and reports how many
queries each example used.

=====================  ==============  ======================================================
attack                 reads           idea
=====================  ==============  ======================================================
:func:`simba`          scores          try +/- a step along one pixel or DCT direction at a time
:func:`square`         scores          random search over squares at the corners of the ball
:func:`nes_pgd`        scores          PGD with a gradient estimated from random probes (NES)
:func:`hopskipjump`    top label       walk along the decision boundary towards the input
=====================  ==============  ======================================================

They share one design:

* ``model`` is an ``nn.Module`` or any callable mapping a batch ``(N, ...)`` to scores
  ``(N, classes)``: logits or probabilities both work, since nothing is differentiated. The
  model is only ever called under ``torch.no_grad()`` and in eval mode.
* The result is a :class:`BlackBoxResult` holding ``x_adv`` (shape, dtype and device of ``x``,
  inside the ``eps`` ball and the valid range like every attack of :mod:`labkit.attacks`),
  ``queries`` (per example), ``success`` and ``exhausted``. :func:`as_attack` turns a
  black-box attack into the plain ``(model, x, y) -> x_adv`` callable that
  :func:`~labkit.attacks.robust_accuracy` takes.
* **Every query counts**, once per example it was made for: a batched call on ``k`` examples
  costs each of them one query, the clean input included (``queries >= 1``). Only examples
  still running are queried, so the model sees exactly ``result.queries.sum()`` inputs. An
  example stops as soon as it succeeds or when its budget cannot pay for its next query;
  ``max_queries`` is never exceeded. When some examples run out of budget without success a
  :class:`QueryBudgetWarning` says so and ``result.exhausted`` marks them.
* Score-based attacks minimise the *margin* of the scores :math:`s`,

  .. math::

      m(x') = s_y(x') - \\max_{i \\ne y} s_i(x') \\quad\\text{(untargeted)}, \\qquad
      m(x') = \\max_{i \\ne t} s_i(x') - s_t(x') \\quad\\text{(targeted to } t\\text{)},

  which is negative exactly when the attack succeeded, for logits and probabilities alike.

Each loop waits on the host once per iteration to pick the examples still running: that is
what keeps the query count honest, and on a CPU it costs nothing.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from labkit._checks import check_choice, check_int, check_positive
from labkit.attacks._common import succeeded
from labkit.attacks.contract import AttackResult
from labkit.attacks.threat import (
    Bounds,
    Norm,
    ProbabilityOutputWarning,
    apply_threat_model,
    bounds_of,
    check_attack_inputs,
    clip_to_bounds,
    lp_norm,
    per_example,
)
from labkit.attacks.whitebox import Attack
from labkit.contract import LabModel
from labkit.utils import eval_mode

__all__ = [
    "BlackBoxResult",
    "QueryBudgetWarning",
    "QueryModel",
    "as_attack",
    "hopskipjump",
    "nes_pgd",
    "simba",
    "square",
]

QueryModel = nn.Module | Callable[[torch.Tensor], torch.Tensor]
"""What a black-box attack queries: a module or any function returning scores ``(N, classes)``."""

# Elements per batched query (examples x samples x pixels); bounds the memory of NES and HSJ.
_CHUNK_ELEMENTS = 1 << 23
_TINY = 1e-12


class QueryBudgetWarning(UserWarning):
    """Some examples used their whole query budget without the attack succeeding."""


@dataclass(frozen=True, kw_only=True)
class BlackBoxResult(AttackResult):
    """What a black-box attack found, and what it cost.

    Attributes
    ----------
    x_adv:
        Adversarial inputs, shape, dtype and device of ``x``, inside the ball and the bounds.
        Where the attack failed this is its best attempt (or ``x``).
    queries:
        ``int64`` tensor ``(N,)``: the queries each example used, the clean input included.
    success:
        ``bool`` tensor ``(N,)``: the attack's own verdict from its queries, that the model
        misclassifies ``x_adv`` (targeted: predicts the target). :func:`hopskipjump` with an
        ``eps`` counts only points it found within ``eps``.
    exhausted:
        ``bool`` tensor ``(N,)``: the example stopped because its budget could not pay for
        another query.
    max_queries:
        The budget per example the attack ran with.
    """

    queries: torch.Tensor
    exhausted: torch.Tensor
    max_queries: int

    @property
    def success_rate(self) -> float:
        """Fraction of examples the attack succeeded on, in ``[0, 1]``."""
        return float(self.success.float().mean())

    def median_queries(self) -> float:
        """Median queries over the successful examples (``nan`` when there are none)."""
        used = self.queries[self.success]
        return float(used.float().median()) if used.numel() else math.nan

    def success_curve(self, budgets: list[int] | None = None) -> tuple[list[int], list[float]]:
        """Success rate had the budget been each of ``budgets`` (default: 20 steps up to the budget)."""
        if budgets is None:
            budgets = sorted({max(1, round(self.max_queries * k / 20)) for k in range(1, 21)})
        rates = [float((self.success & (self.queries <= b)).float().mean()) for b in budgets]
        return budgets, rates

    def _repr_markdown_(self) -> str:
        n = int(self.success.numel())
        return (
            "| examples | success rate | median queries (successes) | exhausted | max_queries |\n"
            "|---|---|---|---|---|\n"
            f"| {n} | {self.success_rate:.1%} | {self.median_queries():.0f} | "
            f"{int(self.exhausted.sum())} | {self.max_queries} |"
        )

    def plot(self, ax: Any = None, *, label: str = "attack") -> Any:
        """Success rate against the number of queries allowed."""
        from labkit.plot import curves

        budgets, rates = self.success_curve()
        return curves(
            budgets, {label: rates}, xlabel="queries per example", ylabel="success rate", ax=ax, marker="."
        )


def as_attack(attack: Callable[..., BlackBoxResult], **settings: Any) -> Attack:
    """Bind a black-box attack's settings and keep only ``x_adv``: a ``(model, x, y) -> x_adv``.

    For :func:`~labkit.attacks.robust_accuracy` and the other tools that take a plain attack.

    Examples
    --------
    >>> attack = as_attack(square, eps=0.1, max_queries=50)
    >>> callable(attack)
    True
    """
    if not callable(attack):
        raise TypeError(f"attack must be a black-box attack function, got {type(attack).__name__}")

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(model, x, y, **settings).x_adv

    return run


# --------------------------------------------------------------------------------------------
# Shared pieces: the query counter, the margin, the checks
# --------------------------------------------------------------------------------------------


class _Function(nn.Module):
    """Lets a plain prediction function stand where the checks expect an ``nn.Module``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.eval()  # a function has no training mode: do not trip the train-mode warning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x)
        return torch.as_tensor(out, device=x.device)


def _as_module(model: object) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return _Function(model)
    raise TypeError(
        f"model must be a torch.nn.Module or a function returning scores, got {type(model).__name__}"
    )


def _check_budget(max_queries: object) -> int:
    if isinstance(max_queries, bool) or not isinstance(max_queries, numbers.Integral):
        raise TypeError(f"max_queries must be an integer number of queries, got {type(max_queries).__name__}")
    if max_queries <= 0:
        raise ValueError(
            f"max_queries must be a positive number of queries per example, got {max_queries} "
            "(the clean input already costs one)"
        )
    return int(max_queries)


@contextlib.contextmanager
def _query_mode(
    model: nn.Module, x: object, y: object, *, eps: float | None, norm: Norm, bounds: Bounds | None
) -> Iterator[torch.Tensor]:
    """Validate once, then query in eval mode without gradients. Yields the clean scores.

    Probabilities are what many prediction APIs return and nothing is differentiated here, so
    the softmax warning of the white-box attacks is not raised.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ProbabilityOutputWarning)
        scores = check_attack_inputs(model, x, y, eps=eps, norm=norm, bounds=bounds, stacklevel=4)
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    with eval_mode(model), unchecked, torch.no_grad():
        yield scores


def _margin(scores: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example margin to drive below zero (see the module docstring)."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return other - true if targeted else true - other


class _Oracle:
    """The only way the attacks reach the model: counts every query per example."""

    def __init__(self, model: nn.Module, y: torch.Tensor, targeted: bool, max_queries: int) -> None:
        self.model = model
        self.y = y
        self.targeted = targeted
        self.max_queries = max_queries
        self.queries = torch.ones_like(y)  # the clean query made by the checks

    def remaining(self) -> torch.Tensor:
        return self.max_queries - self.queries

    def scores(self, idx: torch.Tensor, inputs: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Scores of ``inputs``, ``repeats`` consecutive rows per example of ``idx``."""
        self.queries.index_add_(0, idx, torch.full_like(idx, repeats))
        return self.model(inputs)

    def decide(self, idx: torch.Tensor, inputs: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Only the top label: is each input adversarial for its example?"""
        labels = self.y[idx].repeat_interleave(repeats) if repeats > 1 else self.y[idx]
        return succeeded(self.scores(idx, inputs, repeats), labels, self.targeted)

    def result(
        self, x_adv: torch.Tensor, success: torch.Tensor, exhausted: torch.Tensor | None = None
    ) -> BlackBoxResult:
        if exhausted is None:  # attacks that run until success or budget
            exhausted = ~success & (self.remaining() <= 0)
        failed = int((exhausted & ~success).sum())
        if failed:
            warnings.warn(
                f"{failed} of {success.numel()} examples used their whole budget of "
                f"max_queries={self.max_queries} without success (result.exhausted marks them); "
                "raise max_queries for a stronger attack",
                QueryBudgetWarning,
                stacklevel=3,
            )
        return BlackBoxResult(
            x_adv=x_adv.detach(),
            queries=self.queries.clone(),
            success=success.clone(),
            exhausted=exhausted.clone(),
            max_queries=self.max_queries,
        )


def _running(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the examples still running (one host synchronisation)."""
    return mask.nonzero().squeeze(1)


def _device_of(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    out = torch.rand(shape, generator=generator, device=_device_of(generator, like), dtype=like.dtype)
    return out.to(like.device)


def _randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=_device_of(generator, like), dtype=like.dtype)
    return out.to(like.device)


def _random_sign(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.where(_rand(shape, like, generator) < 0.5, -1.0, 1.0).to(like.dtype)


def _chunk(n: int, per_sample: int, samples: int) -> int:
    """Samples per batched query so that one query holds about ``_CHUNK_ELEMENTS`` numbers."""
    return max(1, min(samples, _CHUNK_ELEMENTS // max(1, n * per_sample)))


# --------------------------------------------------------------------------------------------
# SimBA
# --------------------------------------------------------------------------------------------


def _dct_matrix(size: int, like: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II matrix: row ``k`` is the ``k``-th cosine basis vector."""
    n = torch.arange(size, dtype=torch.float64)
    k = n[:, None]
    mat = torch.cos(math.pi * (2 * n[None, :] + 1) * k / (2 * size)) * math.sqrt(2 / size)
    mat[0] /= math.sqrt(2)
    return mat.to(device=like.device, dtype=like.dtype)


def _simba_order(
    shape: torch.Size, basis: str, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The order SimBA tries the coordinates in: random, low frequencies first for DCT.

    DCT coordinates ``(c, u, v)`` are grouped into square bands by ``max(u, v)``: first the
    lowest ``side/4`` frequencies, then bands ``side/8`` wide (SimBA's block order), each band
    in random order.
    """
    key = _rand((shape.numel(),), like, generator).double()
    if basis == "dct":
        _, h, w = shape
        first = max(1, math.ceil(min(h, w) / 4))
        stride = max(1, min(h, w) // 8)
        u = torch.arange(h, device=like.device).view(1, h, 1)
        v = torch.arange(w, device=like.device).view(1, 1, w)
        band = ((torch.maximum(u, v) - first).clamp_min(-1) // stride + 1).expand(shape).flatten()
        key = key + band.double()
    return key.argsort()


def _simba_direction(
    index: int, shape: torch.Size, like: torch.Tensor, dct: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Unit-norm basis vector number ``index``: a pixel, or the inverse DCT of a one-hot."""
    q = like.new_zeros(shape)
    if dct is None:
        q.view(-1)[index] = 1.0
        return q
    _, h, w = shape
    c, rest = divmod(index, h * w)
    u, v = divmod(rest, w)
    q[c] = dct[0][u][:, None] * dct[1][v][None, :]
    return q


def simba(
    model: QueryModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    basis: Literal["pixel", "dct"] = "pixel",
    step_size: float | None = None,
    max_queries: int = 1000,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> BlackBoxResult:
    """Simple Black-box Attack (SimBA): one direction at a time, keep what lowers the margin.

    From :math:`x_0 = x`, draw directions :math:`q_1, q_2, \\dots` without replacement from an
    orthonormal basis (pixels, or low-frequency-first DCT images) and set

    .. math::

        x_{k+1} = \\begin{cases}
            \\Pi(x_k + \\alpha q_k) & \\text{if } m(\\Pi(x_k + \\alpha q_k)) < m(x_k) \\\\
            \\Pi(x_k - \\alpha q_k) & \\text{else, if } m(\\Pi(x_k - \\alpha q_k)) < m(x_k) \\\\
            x_k & \\text{otherwise,}
        \\end{cases}

    with :math:`m` the score margin (module docstring) and :math:`\\Pi` the projection onto
    :math:`B_p(x, \\epsilon) \\cap [0, 1]^d` of :mod:`labkit.attacks.threat`: one or two
    queries per direction. The paper uses the probability of the true class instead of the
    margin; the margin works for logits and probabilities alike and stops exactly at the
    decision boundary. After a pass over the whole basis a new random order starts; an example
    whose whole pass changed nothing stops there (the next pass would ask the same questions and
    get the same answers), without using up its budget. A candidate that the projection leaves
    equal to :math:`x_k` (a pixel already at the edge of the ball or the range) is skipped
    without a query.

    Reference: Guo, Gardner, You, Wilson and Weinberger, "Simple Black-box Adversarial
    Attacks", ICML 2019, arXiv:1905.07121.

    Parameters
    ----------
    model:
        An ``nn.Module`` or function returning scores (logits or probabilities) ``(N, classes)``.
    x, y:
        Clean inputs ``(N, C, H, W)`` in the valid range, and ``int64`` labels ``(N,)`` (the
        targets when ``targeted``).
    eps:
        Radius of the ball in pixel units.
    norm:
        ``"linf"`` or ``"l2"``.
    basis:
        ``"pixel"`` (SimBA) or ``"dct"`` (SimBA-DCT, low frequencies first).
    step_size:
        :math:`\\alpha`, the L2 length of each step. Default ``eps`` in L-inf (a pixel step
        goes straight to the edge of the ball) and ``eps / 4`` in L2. Larger DCT steps in L-inf
        mostly get clipped by the projection: on 100 digits at ``eps=0.1`` and 1,000 queries,
        SimBA-DCT breaks 25% at ``step_size=eps`` and 11% at ``8 * eps``.
    max_queries:
        Budget per example, the clean query included.
    targeted:
        Push towards the classes in ``y``.
    generator:
        Source of the random orders.

    Returns
    -------
    BlackBoxResult
        ``x_adv``, queries, success and exhaustion per example.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])      # class 1, by a margin of 0.2
    >>> result = simba(model, x, torch.tensor([1]), eps=0.1, max_queries=20,
    ...                generator=torch.Generator().manual_seed(0))
    >>> result.success, bool(result.queries <= 20), model.predict(result.x_adv)
    (tensor([True]), True, tensor([0]))
    """
    check_choice(basis, "basis", ("pixel", "dct"))
    max_queries = _check_budget(max_queries)
    alpha = None if step_size is None else check_positive(step_size, "step_size")
    model = _as_module(model)
    bounds = bounds_of(model)
    with _query_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean:
        oracle = _Oracle(model, y, targeted, max_queries)
        success = succeeded(clean, y, targeted)
        if eps == 0:
            return oracle.result(x.clone(), success, torch.zeros_like(success))
        if basis == "dct" and x.dim() != 4:
            raise ValueError(f"basis='dct' needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        shape = x.shape[1:]
        if alpha is None:
            alpha = eps / 4 if norm == "l2" else eps
        dct = (_dct_matrix(shape[-2], x), _dct_matrix(shape[-1], x)) if basis == "dct" else None
        x_cur = x.clone()
        margin = _margin(clean, y, targeted)
        order = _simba_order(shape, basis, x, generator).tolist()
        position = 0
        moved = torch.zeros_like(success)  # accepted a step in the current pass
        settled = torch.zeros_like(success)  # a whole pass changed nothing: a fixed point
        while True:
            if position == len(order):
                settled |= ~moved
                moved = torch.zeros_like(moved)
                order, position = _simba_order(shape, basis, x, generator).tolist(), 0
            running = _running(~success & ~settled & (oracle.remaining() >= 1))
            if running.numel() == 0:
                break
            q = _simba_direction(order[position], shape, x, dct)
            position += 1
            trying = running
            for sign in (1.0, -1.0):
                cand = apply_threat_model(
                    x[trying], x_cur[trying] + sign * alpha * q, norm=norm, eps=eps, bounds=bounds
                )
                ask = (cand != x_cur[trying]).flatten(1).any(dim=1) & (oracle.remaining()[trying] >= 1)
                asked = trying[ask]
                improved = torch.zeros_like(ask)
                if asked.numel():
                    scores = oracle.scores(asked, cand[ask])
                    m = _margin(scores, y[asked], targeted)
                    better = m < margin[asked]
                    won = asked[better]
                    x_cur[won] = cand[ask][better]
                    margin[won] = m[better]
                    success[won] = succeeded(scores[better], y[won], targeted)
                    moved[won] = True
                    improved[ask] = better
                trying = trying[~improved]
                if trying.numel() == 0:
                    break
        return oracle.result(x_cur, success)


# --------------------------------------------------------------------------------------------
# Square attack
# --------------------------------------------------------------------------------------------


def _square_fraction(i: int, max_queries: int, p_init: float) -> float:
    """Fraction of pixels the square covers at iteration ``i`` (the paper's halving schedule,
    rescaled from 10,000 iterations to the budget)."""
    it = int(i / max_queries * 10000)
    for limit, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64)):
        if it <= limit:
            return p_init / divisor
    if it <= 6000:
        return p_init / 128
    if it <= 8000:
        return p_init / 256
    return p_init / 512


def square(
    model: QueryModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    max_queries: int = 1000,
    p_init: float = 0.8,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> BlackBoxResult:
    """Square Attack, L-inf: random search over squares at the corners of the ball.

    Starts from vertical stripes :math:`x_0 = \\mathrm{clip}(x + \\epsilon\\, s)`, with a random
    sign :math:`s \\in \\{-1, 1\\}` per channel and column, then repeats: pick a square window of
    side :math:`h_k` at a random place (its own place for every example), set the perturbation
    inside it to :math:`\\pm\\epsilon` with a random sign per channel, and keep the candidate if
    it lowers the score margin :math:`m`. So every iterate is a vertex of
    :math:`B_\\infty(x, \\epsilon)` clipped to :math:`[0, 1]^d`. The square's area
    :math:`h_k^2 = p_k \\cdot HW` shrinks on the paper's schedule (``p_init`` halved at
    fixed fractions of the budget). One query per iteration and example, plus one for the
    start.

    Reference: Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020, arXiv:1912.00049.

    Parameters
    ----------
    model:
        An ``nn.Module`` or function returning scores (logits or probabilities) ``(N, classes)``.
    x, y:
        Clean images ``(N, C, H, W)`` in the valid range, and ``int64`` labels ``(N,)``.
    eps:
        L-inf radius in pixel units.
    max_queries:
        Budget per example, the clean query included.
    p_init:
        Initial fraction of the image the square covers. Default 0.8 as in AutoAttack; the
        paper's 0.05 suits ImageNet-sized images. Measured at 1,000 queries: digits-cnn at
        ``eps=0.1`` 38% (0.05) and 40% (0.8) success, signs-cnn at ``8/255`` 51% and 68%.
    targeted:
        Push towards the classes in ``y``.
    generator:
        Source of the stripes, the windows and the signs.

    Returns
    -------
    BlackBoxResult
        ``x_adv``, queries, success and exhaustion per example.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(32, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = model.predict(x)
    >>> result = square(model, x, y, eps=0.4, max_queries=100, generator=torch.Generator().manual_seed(0))
    >>> bool((result.x_adv - x).abs().max() <= 0.4 + 1e-6), result.success_rate
    (True, 1.0)
    >>> result.median_queries(), int(result.queries.max())
    (6.0, 28)
    """
    max_queries = _check_budget(max_queries)
    if not (isinstance(p_init, numbers.Real) and 0 < p_init <= 1):
        raise ValueError(f"p_init must be a fraction in (0, 1], got {p_init!r}")
    model = _as_module(model)
    bounds = bounds_of(model)
    with _query_mode(model, x, y, eps=eps, norm="linf", bounds=bounds) as clean:
        oracle = _Oracle(model, y, targeted, max_queries)
        success = succeeded(clean, y, targeted)
        if eps == 0:
            return oracle.result(x.clone(), success, torch.zeros_like(success))
        if x.dim() != 4:
            raise ValueError(f"square needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        margin = _margin(clean, y, targeted)
        best = x.clone()
        delta = eps * _random_sign((n, c, 1, w), x, generator).expand_as(x)
        start = _running(~success & (oracle.remaining() >= 1))
        if start.numel():
            cand = clip_to_bounds(x[start] + delta[start], bounds)
            scores = oracle.scores(start, cand)
            best[start] = cand
            margin[start] = _margin(scores, y[start], targeted)
            success[start] = succeeded(scores, y[start], targeted)
        delta = delta.clone()
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        i = 0
        while True:
            running = _running(~success & (oracle.remaining() >= 1))
            if running.numel() == 0:
                break
            k = running.numel()
            p = _square_fraction(i, max_queries, float(p_init))
            side = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
            top = (_rand((k,), x, generator) * (h - side + 1)).long().clamp_max(h - side)
            left = (_rand((k,), x, generator) * (w - side + 1)).long().clamp_max(w - side)
            inside_r = (rows >= top[:, None]) & (rows < top[:, None] + side)
            inside_c = (cols >= left[:, None]) & (cols < left[:, None] + side)
            window = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
            signs = eps * _random_sign((k, c, 1, 1), x, generator)
            new_delta = torch.where(window, signs, delta[running])
            cand = clip_to_bounds(x[running] + new_delta, bounds)
            scores = oracle.scores(running, cand)
            m = _margin(scores, y[running], targeted)
            won_local = m < margin[running]
            won = running[won_local]
            best[won] = cand[won_local]
            delta[won] = new_delta[won_local]
            margin[won] = m[won_local]
            success[won] = succeeded(scores[won_local], y[won], targeted)
            i += 1
        return oracle.result(best, success)


# --------------------------------------------------------------------------------------------
# NES gradient estimates inside PGD
# --------------------------------------------------------------------------------------------


def nes_pgd(
    model: QueryModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    max_queries: int = 1000,
    samples: int = 20,
    sigma: float = 0.01,
    step_size: float | None = None,
    momentum: float = 0.9,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> BlackBoxResult:
    """PGD with a gradient estimated from queries only (natural evolution strategies).

    At each step the gradient of the loss :math:`L = -m` (minus the score margin) is estimated
    from ``samples`` antithetic Gaussian probes,

    .. math::

        \\hat g_k = \\frac{1}{\\sigma n} \\sum_{i=1}^{n/2}
            \\big(L(x_k + \\sigma u_i) - L(x_k - \\sigma u_i)\\big)\\, u_i,
            \\qquad u_i \\sim \\mathcal{N}(0, I),

    averaged over steps, :math:`v_k = \\mu v_{k-1} + (1 - \\mu)\\, \\hat g_k / \\lVert \\hat g_k
    \\rVert_2`, and plugged into the PGD step of :func:`~labkit.attacks.pgd`,
    :math:`x_{k+1} = \\Pi\\big(x_k + \\alpha\\, d(v_k)\\big)` with
    :math:`d = \\mathrm{sign}` (L-inf) or :math:`v / \\lVert v \\rVert_2` (L2). Each
    step costs ``samples + 1`` queries per example (the probes, then the new iterate). Steps go
    on until the example succeeds or its budget cannot pay for another step; the result is the
    iterate with the lowest margin.

    Reference: Ilyas, Engstrom, Athalye and Lin, "Black-box Adversarial Attacks with Limited
    Queries and Information", ICML 2018, arXiv:1804.08598.

    Parameters
    ----------
    model:
        An ``nn.Module`` or function returning scores (logits or probabilities) ``(N, classes)``.
    x, y:
        Clean inputs ``(N, ...)`` in the valid range, and ``int64`` labels ``(N,)``.
    eps:
        Radius of the ball in pixel units.
    norm:
        ``"linf"`` or ``"l2"``.
    max_queries:
        Budget per example, the clean query included.
    samples:
        Probes per gradient estimate, an even number (antithetic pairs).
    sigma:
        Standard deviation :math:`\\sigma` of the probes, in pixel units.
    step_size:
        :math:`\\alpha`; default ``eps / 10``.
    momentum:
        :math:`\\mu \\in [0, 1)`; ``0`` is the plain NES step of the paper. Averaging cuts the
        noise of 20-probe estimates: on digits-cnn at ``eps=0.1`` and 1,000 queries the success
        rate goes from 21% (``0``) to 32% (``0.9``), against 39% for white-box PGD.
    targeted:
        Push towards the classes in ``y``.
    generator:
        Source of the probes.

    Returns
    -------
    BlackBoxResult
        ``x_adv``, queries, success and exhaustion per example.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])      # class 1, by a margin of 0.2
    >>> result = nes_pgd(model, x, torch.tensor([1]), eps=0.1, samples=4, max_queries=100,
    ...                  generator=torch.Generator().manual_seed(0))
    >>> result.success, int(result.queries) % 5      # 1 clean query, then steps of 4 + 1
    (tensor([True]), 1)
    """
    max_queries = _check_budget(max_queries)
    samples = check_int(samples, "samples", minimum=2)
    if samples % 2:
        raise ValueError(f"samples must be even (antithetic pairs), got {samples}")
    sigma = check_positive(sigma, "sigma")
    alpha = None if step_size is None else check_positive(step_size, "step_size")
    if not (isinstance(momentum, numbers.Real) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be a number in [0, 1), got {momentum!r}")
    mu = float(momentum)
    model = _as_module(model)
    bounds = bounds_of(model)
    with _query_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean:
        oracle = _Oracle(model, y, targeted, max_queries)
        success = succeeded(clean, y, targeted)
        if eps == 0:
            return oracle.result(x.clone(), success, torch.zeros_like(success))
        if alpha is None:
            alpha = eps / 10
        cost = samples + 1
        pairs = samples // 2
        shape = x.shape[1:]
        x_cur = x.clone()
        best = x.clone()
        margin = _margin(clean, y, targeted)
        velocity = torch.zeros_like(x)
        while True:
            running = _running(~success & (oracle.remaining() >= cost))
            if running.numel() == 0:
                break
            k = running.numel()
            point = x_cur[running]
            grad = torch.zeros_like(point)
            per_chunk = _chunk(k, 2 * shape.numel(), pairs)
            for start in range(0, pairs, per_chunk):
                b = min(per_chunk, pairs - start)
                u = _randn((k, b, *shape), x, generator)
                probes = torch.cat([point[:, None] + sigma * u, point[:, None] - sigma * u], dim=1)
                probes = clip_to_bounds(probes, bounds).reshape(k * 2 * b, *shape)
                scores = oracle.scores(running, probes, repeats=2 * b)
                loss = -_margin(scores, y[running].repeat_interleave(2 * b), targeted).view(k, 2 * b)
                diff = (loss[:, :b] - loss[:, b:]).reshape(k, b, *([1] * len(shape)))
                grad += (diff * u).sum(dim=1)
            grad = grad / (2 * sigma * pairs)
            if mu > 0:  # average the unit-norm estimates of successive steps
                unit = grad / per_example(lp_norm(grad, norm="l2").clamp_min(_TINY), grad)
                grad = mu * velocity[running] + (1 - mu) * unit
                velocity[running] = grad
            if norm == "linf":
                direction = grad.sign()
            else:
                direction = grad / per_example(lp_norm(grad, norm="l2").clamp_min(_TINY), grad)
            new = apply_threat_model(x[running], point + alpha * direction, norm=norm, eps=eps, bounds=bounds)
            scores = oracle.scores(running, new)
            x_cur[running] = new
            m = _margin(scores, y[running], targeted)
            better = m < margin[running]
            won = running[better]
            best[won] = new[better]
            margin[won] = m[better]
            success[won] = succeeded(scores[better], y[won], targeted)
        return oracle.result(best, success, ~success & (oracle.remaining() < cost))


# --------------------------------------------------------------------------------------------
# HopSkipJump
# --------------------------------------------------------------------------------------------


def _distance(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    return lp_norm(delta, norm=norm)


def _blend(x: torch.Tensor, adv: torch.Tensor, t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Points between ``x`` (t=0) and ``adv``: a straight line (L2), or ``adv`` clipped to the
    L-inf ball of radius ``t`` around ``x``."""
    t = per_example(t, x)
    if norm == "l2":
        return x + t * (adv - x)
    return torch.maximum(torch.minimum(adv, x + t), x - t)


def _boundary_search(
    oracle: _Oracle, x: torch.Tensor, adv: torch.Tensor, idx: torch.Tensor, norm: Norm, theta: float
) -> torch.Tensor:
    """Binary search between ``x[idx]`` and the adversarial ``adv[idx]``; returns the points on
    the adversarial side of the boundary, to within ``theta``."""
    origin, far = x[idx], adv[idx]
    if norm == "l2":
        high = torch.ones(idx.numel(), dtype=x.dtype, device=x.device)
        threshold = torch.full_like(high, theta)
    else:
        high = _distance(far - origin, "linf")
        threshold = torch.clamp(high * theta, max=theta)
    low = torch.zeros_like(high)
    while True:
        open_ = _running(((high - low) > threshold) & (oracle.remaining()[idx] >= 1))
        if open_.numel() == 0:
            break
        mid = (high[open_] + low[open_]) / 2
        is_adv = oracle.decide(idx[open_], _blend(origin[open_], far[open_], mid, norm))
        high[open_] = torch.where(is_adv, mid, high[open_])
        low[open_] = torch.where(is_adv, low[open_], mid)
    return _blend(origin, far, high, norm)


def _hsj_direction(
    oracle: _Oracle,
    boundary: torch.Tensor,
    idx: torch.Tensor,
    delta: torch.Tensor,
    evals: int,
    norm: Norm,
    bounds: Bounds | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Monte Carlo estimate of the boundary's normal from ``evals`` decisions per example."""
    k, shape = idx.numel(), boundary.shape[1:]
    view = (k, 1, *([1] * len(shape)))
    phi_u = torch.zeros_like(boundary)
    u_sum = torch.zeros_like(boundary)
    phi_sum = torch.zeros(k, dtype=boundary.dtype, device=boundary.device)
    per_chunk = _chunk(k, shape.numel(), evals)
    for start in range(0, evals, per_chunk):
        b = min(per_chunk, evals - start)
        if norm == "l2":
            u = _randn((k, b, *shape), boundary, generator)
        else:
            u = 2 * _rand((k, b, *shape), boundary, generator) - 1
        u = u / lp_norm(u.flatten(0, 1), norm="l2").clamp_min(_TINY).view(k, b, *([1] * len(shape)))
        probes = clip_to_bounds(boundary[:, None] + delta.view(view) * u, bounds)
        u = (probes - boundary[:, None]) / delta.view(view)
        phi = oracle.decide(idx, probes.reshape(k * b, *shape), repeats=b).to(boundary.dtype) * 2 - 1
        phi = phi.view(k, b)
        phi_u += (phi.view(k, b, *([1] * len(shape))) * u).sum(dim=1)
        u_sum += u.sum(dim=1)
        phi_sum += phi.sum(dim=1)
    mean_phi = per_example(phi_sum / evals, boundary)
    # Subtract the mean decision as a baseline, unless every probe agreed (Chen et al., eq. 16).
    baseline = torch.where(mean_phi.abs() == 1, torch.zeros_like(mean_phi), mean_phi)
    grad = (phi_u - baseline * u_sum) / evals
    if norm == "linf":
        return grad.sign()
    return grad / per_example(lp_norm(grad, norm="l2").clamp_min(_TINY), grad)


def hopskipjump(
    model: QueryModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | None = None,
    norm: Norm = "l2",
    max_queries: int = 1000,
    steps: int = 64,
    init_evals: int = 100,
    max_evals: int = 10_000,
    gamma: float = 1.0,
    starting_points: torch.Tensor | None = None,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> BlackBoxResult:
    """HopSkipJump: a decision-based attack that reads only the model's top label.

    With :math:`\\phi(x') = 1` when :math:`x'` is adversarial and :math:`-1` otherwise, it
    starts from an adversarial point (uniform noise, or ``starting_points``), moves it onto the
    decision boundary by a binary search towards :math:`x`, then repeats for
    :math:`t = 1, 2, \\dots`:

    1. estimate the boundary's normal at the boundary point :math:`x_t` from
       :math:`B_t = \\min(B_0 \\sqrt{t}, B_{\\max})` random probes :math:`u_b`,

       .. math::

           \\hat v = \\frac{1}{B_t} \\sum_b \\big(\\phi(x_t + \\delta_t u_b) - \\bar\\phi\\big)\\, u_b;

    2. jump along it, :math:`\\hat v / \\lVert \\hat v \\rVert_2` (L2) or
       :math:`\\mathrm{sign}(\\hat v)` (L-inf), with the step
       :math:`\\xi_t = \\lVert x_t - x \\rVert_p / \\sqrt{t}` halved until the point is
       adversarial again (a geometric search);
    3. binary-search back to the boundary between :math:`x` and the new point (to within
       :math:`\\theta = \\gamma / d^{3/2}` for L2, :math:`\\gamma / d^2` for L-inf, :math:`d`
       the input dimension).

    Every point it keeps is adversarial, and its distance :math:`\\lVert x_t - x \\rVert_p`
    shrinks. With ``eps=None`` (default) it is a minimum-norm attack like
    :func:`~labkit.attacks.cw` and spends the budget (or ``steps``) making the perturbation
    small. With ``eps`` given an example stops as soon as its point is within ``eps`` (a
    success); the others are projected onto the ball and count as failures, though they may
    still be adversarial there.

    Reference: Chen, Jordan and Wainwright, "HopSkipJumpAttack: A Query-Efficient
    Decision-Based Attack", IEEE S&P 2020, arXiv:1904.02144.

    Parameters
    ----------
    model:
        An ``nn.Module`` or function returning scores ``(N, classes)``; only their argmax is used,
        so a label-only API can return one-hot rows.
    x, y:
        Clean inputs ``(N, ...)`` in the (bounded) valid range, and ``int64`` labels ``(N,)``.
    eps:
        Optional budget in pixel units; ``None`` for the unbounded minimum-norm attack.
    norm:
        ``"l2"`` or ``"linf"``, the distance it minimises.
    max_queries:
        Budget per example, the clean query included.
    steps:
        Most iterations of estimate, jump and search.
    init_evals, max_evals:
        :math:`B_0` and :math:`B_{\\max}`, probes per gradient estimate.
    gamma:
        :math:`\\gamma`, sets the binary search's precision and the probes' radius
        (:math:`\\delta_t = d\\,\\theta\\,\\lVert x_t - x \\rVert_p` for L-inf, its
        :math:`\\sqrt{d}` version for L2; :math:`0.1` of the range at :math:`t = 1`).
    starting_points:
        Adversarial inputs to start from, shape of ``x``; needed for ``targeted`` (inputs the
        model assigns to the targets). Default: uniform noise, up to 20 draws per example.
    targeted:
        Reach the classes in ``y``.
    generator:
        Source of the noise and the probes.

    Returns
    -------
    BlackBoxResult
        ``x_adv``, queries, success and exhaustion per example. With ``eps=None`` every example
        that found an adversarial point counts as a success and typically uses its whole
        budget.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])      # class 1, closest boundary 0.1 away
    >>> result = hopskipjump(model, x, torch.tensor([1]), max_queries=300, init_evals=20,
    ...                      generator=torch.Generator().manual_seed(0))
    >>> model.predict(result.x_adv), round(float((result.x_adv - x).norm()), 2)
    (tensor([0]), 0.1)
    """
    max_queries = _check_budget(max_queries)
    steps = check_int(steps, "steps", minimum=0)
    init_evals = check_int(init_evals, "init_evals", minimum=1)
    max_evals = check_int(max_evals, "max_evals", minimum=init_evals)
    gamma = check_positive(gamma, "gamma")
    model = _as_module(model)
    bounds = bounds_of(model)
    if bounds is None:
        raise ValueError("hopskipjump needs a model with a bounded input range (value_range), got None")
    with _query_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean:
        if starting_points is not None:
            if not isinstance(starting_points, torch.Tensor) or starting_points.shape != x.shape:
                got = getattr(starting_points, "shape", type(starting_points).__name__)
                raise ValueError(
                    f"starting_points must be a tensor shaped like x {tuple(x.shape)}, got {got}"
                )
            low, high = bounds
            if not bool(((starting_points >= low) & (starting_points <= high)).all()):
                raise ValueError(f"starting_points must lie in the valid range [{low}, {high}]")
        elif targeted:
            raise ValueError(
                "targeted hopskipjump needs starting_points: inputs the model already assigns to "
                "the target classes (random noise almost never lands in a chosen class)"
            )
        oracle = _Oracle(model, y, targeted, max_queries)
        found = succeeded(clean, y, targeted)  # already adversarial: nothing to do
        if eps == 0:
            return oracle.result(x.clone(), found, torch.zeros_like(found))
        adv = x.clone()
        if starting_points is not None:
            idx = _running(~found)
            if idx.numel():
                ok = oracle.decide(idx, starting_points[idx].to(x))
                adv[idx[ok]] = starting_points[idx[ok]].to(x)
                found[idx[ok]] = True
        else:
            low, high = bounds
            for _ in range(20):
                idx = _running(~found & (oracle.remaining() >= 1))
                if idx.numel() == 0:
                    break
                noise = low + (high - low) * _rand((idx.numel(), *x.shape[1:]), x, generator)
                ok = oracle.decide(idx, noise)
                adv[idx[ok]] = noise[ok]
                found[idx[ok]] = True
        d = x[0].numel()
        theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / (d * d)
        moving = _running(found & (_distance(adv - x, norm) > 0))
        if moving.numel():
            adv[moving] = _boundary_search(oracle, x, adv, moving, norm, theta)
        inf = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        dist = torch.where(found, _distance(adv - x, norm), inf)
        best, best_dist = adv.clone(), dist.clone()
        limit = 0.0 if eps is None else eps  # an example is done once within eps
        exhausted = torch.zeros_like(found)
        for t in range(1, steps + 1):
            evals = min(int(init_evals * math.sqrt(t)), max_evals)
            todo = found & (best_dist > limit)
            can_pay = oracle.remaining() >= evals + 1
            exhausted |= todo & ~can_pay
            idx = _running(todo & can_pay)
            if idx.numel() == 0:
                break
            point = adv[idx]
            if t == 1:
                delta = torch.full_like(dist[idx], 0.1 * (bounds[1] - bounds[0]))
            else:
                delta = (math.sqrt(d) if norm == "l2" else d) * theta * dist[idx]
            direction = _hsj_direction(oracle, point, idx, delta, evals, norm, bounds, generator)
            # geometric search for a step size that stays adversarial
            xi = dist[idx] / math.sqrt(t)
            jumped = point.clone()
            pending = torch.arange(idx.numel(), device=x.device)
            for _ in range(25):
                pending = pending[oracle.remaining()[idx[pending]] >= 1]
                if pending.numel() == 0:
                    break
                step = per_example(xi[pending], point) * direction[pending]
                cand = clip_to_bounds(point[pending] + step, bounds)
                ok = oracle.decide(idx[pending], cand)
                jumped[pending[ok]] = cand[ok]
                xi[pending[~ok]] /= 2
                pending = pending[~ok]
            adv[idx] = jumped
            adv[idx] = _boundary_search(oracle, x, adv, idx, norm, theta)
            dist[idx] = _distance(adv[idx] - x[idx], norm)
            closer = dist < best_dist
            best = torch.where(per_example(closer, x), adv, best)
            best_dist = torch.where(closer, dist, best_dist)
        exhausted |= ~found & (oracle.remaining() < 1)
        if eps is None:
            return oracle.result(best, found, exhausted)
        success = found & (best_dist <= eps)
        x_adv = apply_threat_model(x, best, norm=norm, eps=eps, bounds=bounds)
        return oracle.result(x_adv, success, exhausted)
