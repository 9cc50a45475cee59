"""A decision-based attack: :func:`hopskipjump` sees only the top label.

HopSkipJump (Chen, Jordan and Wainwright, arXiv:1904.02144) starts from an adversarial point,
finds the boundary by binary search and walks along it with gradient directions estimated from
label flips.
"""

from __future__ import annotations

import math

import torch

from labkit._checks import check_int, check_positive
from labkit.attacks._common import succeeded
from labkit.attacks.blackbox._queries import (
    TINY,
    Oracle,
    as_module,
    check_budget,
    normal_like,
    query_mode,
    samples_per_query,
    still_running,
    uniform_like,
)
from labkit.attacks.blackbox.result import BlackBoxResult, QueryModel
from labkit.attacks.threat import (
    Bounds,
    Norm,
    apply_threat_model,
    bounds_of,
    clip_to_bounds,
    lp_norm,
    per_example,
)

__all__ = ["hopskipjump"]

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
    oracle: Oracle, x: torch.Tensor, adv: torch.Tensor, idx: torch.Tensor, norm: Norm, theta: float
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
        open_ = still_running(((high - low) > threshold) & (oracle.remaining()[idx] >= 1))
        if open_.numel() == 0:
            break
        mid = (high[open_] + low[open_]) / 2
        is_adv = oracle.decide(idx[open_], _blend(origin[open_], far[open_], mid, norm))
        high[open_] = torch.where(is_adv, mid, high[open_])
        low[open_] = torch.where(is_adv, low[open_], mid)
    return _blend(origin, far, high, norm)


def _hsj_direction(
    oracle: Oracle,
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
    per_chunk = samples_per_query(k, shape.numel(), evals)
    for start in range(0, evals, per_chunk):
        b = min(per_chunk, evals - start)
        if norm == "l2":
            u = normal_like((k, b, *shape), boundary, generator)
        else:
            u = 2 * uniform_like((k, b, *shape), boundary, generator) - 1
        u = u / lp_norm(u.flatten(0, 1), norm="l2").clamp_min(TINY).view(k, b, *([1] * len(shape)))
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
    return grad / per_example(lp_norm(grad, norm="l2").clamp_min(TINY), grad)


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
    >>> from torch import nn
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
    max_queries = check_budget(max_queries)
    steps = check_int(steps, "steps", minimum=0)
    init_evals = check_int(init_evals, "init_evals", minimum=1)
    max_evals = check_int(max_evals, "max_evals", minimum=init_evals)
    gamma = check_positive(gamma, "gamma")
    model = as_module(model)
    bounds = bounds_of(model)
    if bounds is None:
        raise ValueError("hopskipjump needs a model with a bounded input range (value_range), got None")
    with query_mode(model, x, y, eps=eps, norm=norm, bounds=bounds) as clean:
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
        oracle = Oracle(model, y, targeted, max_queries)
        found = succeeded(clean, y, targeted)  # already adversarial: nothing to do
        if eps == 0:
            return oracle.result(x.clone(), found, torch.zeros_like(found))
        adv = x.clone()
        if starting_points is not None:
            idx = still_running(~found)
            if idx.numel():
                ok = oracle.decide(idx, starting_points[idx].to(x))
                adv[idx[ok]] = starting_points[idx[ok]].to(x)
                found[idx[ok]] = True
        else:
            low, high = bounds
            for _ in range(20):
                idx = still_running(~found & (oracle.remaining() >= 1))
                if idx.numel() == 0:
                    break
                noise = low + (high - low) * uniform_like((idx.numel(), *x.shape[1:]), x, generator)
                ok = oracle.decide(idx, noise)
                adv[idx[ok]] = noise[ok]
                found[idx[ok]] = True
        d = x[0].numel()
        theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / (d * d)
        moving = still_running(found & (_distance(adv - x, norm) > 0))
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
            idx = still_running(todo & can_pay)
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
