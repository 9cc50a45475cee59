"""Score-based random search: SimBA and the Square attack.

* :func:`simba`: Simple Black-box Attack (Guo et al., arXiv:1905.07121), one orthonormal
  direction (pixel or low-frequency DCT) at a time, kept when it lowers the margin.
* :func:`square`: Square Attack (Andriushchenko et al., arXiv:1912.00049), random square
  patches at the corners of the L-inf ball, a step size that shrinks with the budget.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch

from labkit._checks import check_choice, check_positive
from labkit.attacks._common import succeeded
from labkit.attacks.blackbox._queries import (
    Oracle,
    as_module,
    check_budget,
    query_mode,
    random_sign_like,
    score_margin,
    still_running,
    uniform_like,
)
from labkit.attacks.blackbox.result import BlackBoxResult, QueryModel
from labkit.attacks.threat import (
    Norm,
    apply_threat_model,
    bounds_of,
    clip_to_bounds,
)

__all__ = ["simba", "square"]

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
    key = uniform_like((shape.numel(),), like, generator).double()
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
    >>> from torch import nn
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
    max_queries = check_budget(max_queries)
    alpha = None if step_size is None else check_positive(step_size, "step_size")
    model = as_module(model)
    bounds = bounds_of(model)
    with query_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean:
        oracle = Oracle(model, y, targeted, max_queries)
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
        margin = score_margin(clean, y, targeted)
        order = _simba_order(shape, basis, x, generator).tolist()
        position = 0
        moved = torch.zeros_like(success)  # accepted a step in the current pass
        settled = torch.zeros_like(success)  # a whole pass changed nothing: a fixed point
        while True:
            if position == len(order):
                settled |= ~moved
                moved = torch.zeros_like(moved)
                order, position = _simba_order(shape, basis, x, generator).tolist(), 0
            running = still_running(~success & ~settled & (oracle.remaining() >= 1))
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
                    m = score_margin(scores, y[asked], targeted)
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
    >>> from torch import nn
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
    max_queries = check_budget(max_queries)
    if not (isinstance(p_init, numbers.Real) and 0 < p_init <= 1):
        raise ValueError(f"p_init must be a fraction in (0, 1], got {p_init!r}")
    model = as_module(model)
    bounds = bounds_of(model)
    with query_mode(model, x, y, eps=eps, norm="linf", bounds=bounds) as clean:
        oracle = Oracle(model, y, targeted, max_queries)
        success = succeeded(clean, y, targeted)
        if eps == 0:
            return oracle.result(x.clone(), success, torch.zeros_like(success))
        if x.dim() != 4:
            raise ValueError(f"square needs images of shape (N, C, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        margin = score_margin(clean, y, targeted)
        best = x.clone()
        delta = eps * random_sign_like((n, c, 1, w), x, generator).expand_as(x)
        start = still_running(~success & (oracle.remaining() >= 1))
        if start.numel():
            cand = clip_to_bounds(x[start] + delta[start], bounds)
            scores = oracle.scores(start, cand)
            best[start] = cand
            margin[start] = score_margin(scores, y[start], targeted)
            success[start] = succeeded(scores, y[start], targeted)
        delta = delta.clone()
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        i = 0
        while True:
            running = still_running(~success & (oracle.remaining() >= 1))
            if running.numel() == 0:
                break
            k = running.numel()
            p = _square_fraction(i, max_queries, float(p_init))
            side = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
            top = (uniform_like((k,), x, generator) * (h - side + 1)).long().clamp_max(h - side)
            left = (uniform_like((k,), x, generator) * (w - side + 1)).long().clamp_max(w - side)
            inside_r = (rows >= top[:, None]) & (rows < top[:, None] + side)
            inside_c = (cols >= left[:, None]) & (cols < left[:, None] + side)
            window = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
            signs = eps * random_sign_like((k, c, 1, 1), x, generator)
            new_delta = torch.where(window, signs, delta[running])
            cand = clip_to_bounds(x[running] + new_delta, bounds)
            scores = oracle.scores(running, cand)
            m = score_margin(scores, y[running], targeted)
            won_local = m < margin[running]
            won = running[won_local]
            best[won] = cand[won_local]
            delta[won] = new_delta[won_local]
            margin[won] = m[won_local]
            success[won] = succeeded(scores[won_local], y[won], targeted)
            i += 1
        return oracle.result(best, success)
