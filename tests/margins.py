"""Margins from the sample size, for tests that compare rates measured on a few hundred examples.

A rate measured on ``n`` examples moves by about ``sqrt(p (1 - p) / n)`` when the numerics change
(another torch, another BLAS, another seed), so an assertion on it must leave that much room or it
holds by coincidence. These helpers state "A is above B" as a one-sided test at level ``ALPHA``:

* :func:`assert_rate_above` / :func:`assert_rate_below`: the exact (Clopper-Pearson) bound of one
  rate clears a reference (chance, a budget);
* :func:`assert_gap`: the Agresti-Caffo lower bound of ``p1 - p2`` clears ``by`` (unpaired, which
  is conservative for two rates measured on the same examples).

Set ``LABKIT_SLACK_LOG`` to a file to append, for each check, how far the estimate cleared its
bound in standard errors: the room each assertion has, to compare across torch versions.
"""

from __future__ import annotations

import math
import os

from scipy.stats import beta, norm
from torch import Tensor

ALPHA = 0.01
"""One-sided level of every check: a bound holds at 99% confidence."""


def _count(rate: float, n: int) -> int:
    k = round(rate * n)
    assert n > 0 and abs(k - rate * n) < 1e-6 * n + 1e-9, f"{rate} is not a count out of n={n}"
    return k


def _log(what: str, estimate: float, room: float, se: float) -> None:
    """Record ``room``: how far the confidence bound cleared its reference (negative: it failed)."""
    path = os.environ.get("LABKIT_SLACK_LOG")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    slack = room / se if se > 0 else math.inf
    with open(path, "a") as f:
        f.write(f"{slack:+7.2f} se  {test}  {what}: estimate {estimate:.4f}, needed {estimate - room:.4f}\n")


def rate_lower(rate: float, n: int, alpha: float = ALPHA) -> float:
    """One-sided Clopper-Pearson lower bound of a rate of ``n`` examples."""
    k = _count(rate, n)
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def rate_upper(rate: float, n: int, alpha: float = ALPHA) -> float:
    """One-sided Clopper-Pearson upper bound of a rate of ``n`` examples."""
    k = _count(rate, n)
    return 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))


def gap_lower(p1: float, n1: int, p2: float, n2: int, alpha: float = ALPHA) -> float:
    """Agresti-Caffo lower bound of ``p1 - p2`` (one success and one failure added to each)."""
    k1, k2 = _count(p1, n1), _count(p2, n2)
    a, b = (k1 + 1) / (n1 + 2), (k2 + 1) / (n2 + 2)
    se = math.sqrt(a * (1 - a) / (n1 + 2) + b * (1 - b) / (n2 + 2))
    return a - b - norm.ppf(1 - alpha) * se


def _se(p: float, n: int) -> float:
    q = (p * n + 1) / (n + 2)
    return math.sqrt(q * (1 - q) / n)


def assert_rate_above(rate: float, n: int, bound: float, what: str = "rate", alpha: float = ALPHA) -> None:
    """``rate`` (of ``n`` examples) is significantly above ``bound``."""
    low = rate_lower(rate, n, alpha)
    _log(f"{what} > {bound}", rate, low - bound, _se(rate, n))
    assert low > bound, f"{what} {rate:.3f} of n={n}: lower bound {low:.3f} not above {bound}"


def assert_rate_below(rate: float, n: int, bound: float, what: str = "rate", alpha: float = ALPHA) -> None:
    """``rate`` (of ``n`` examples) is significantly below ``bound``."""
    high = rate_upper(rate, n, alpha)
    _log(f"{what} < {bound}", rate, bound - high, _se(rate, n))
    assert high < bound, f"{what} {rate:.3f} of n={n}: upper bound {high:.3f} not below {bound}"


def assert_gap(
    p1: float, n1: int, p2: float, n2: int, by: float = 0.0, what: str = "gap", alpha: float = ALPHA
) -> None:
    """``p1`` is above ``p2`` by more than ``by``, significantly for the two sample sizes."""
    low = gap_lower(p1, n1, p2, n2, alpha)
    se = math.sqrt(_se(p1, n1) ** 2 + _se(p2, n2) ** 2)
    _log(f"{what} > {by}", p1 - p2, low - by, se)
    assert low > by, (
        f"{what}: {p1:.3f} (n={n1}) - {p2:.3f} (n={n2}) = {p1 - p2:.3f}, lower bound {low:.3f} not above {by}"
    )


def auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil standard error of a ROC-AUC from ``n_pos`` positives and ``n_neg`` negatives."""
    a = min(max(auc, 1 / (n_pos + n_neg)), 1 - 1 / (n_pos + n_neg))  # never a zero error
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt(
        (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    )


def assert_auc_above(
    auc: float, n_pos: int, n_neg: int, bound: float = 0.5, what: str = "AUC", alpha: float = ALPHA
) -> None:
    """A ROC-AUC is significantly above ``bound`` (0.5: chance)."""
    se = auc_se(auc, n_pos, n_neg)
    low = auc - norm.ppf(1 - alpha) * se
    _log(f"{what} > {bound}", auc, low - bound, se)
    assert low > bound, f"{what} {auc:.3f} ({n_pos}+{n_neg}): lower bound {low:.3f} not above {bound}"


def assert_auc_gap(
    auc1: float, auc2: float, n_pos: int, n_neg: int, what: str = "AUC gap", alpha: float = ALPHA
) -> None:
    """``auc1`` is significantly above ``auc2`` (unpaired, conservative for the same examples)."""
    se = math.hypot(auc_se(auc1, n_pos, n_neg), auc_se(auc2, n_pos, n_neg))
    low = auc1 - auc2 - norm.ppf(1 - alpha) * se
    _log(f"{what} > 0", auc1 - auc2, low, se)
    assert low > 0, f"{what}: {auc1:.3f} - {auc2:.3f}, lower bound {low:.3f} not above 0"


def auc_gap_lower(auc1: float, auc2: float, n_pos: int, n_neg: int, alpha: float = ALPHA) -> float:
    """Lower bound of ``auc1 - auc2`` (unpaired Hanley-McNeil errors)."""
    se = math.hypot(auc_se(auc1, n_pos, n_neg), auc_se(auc2, n_pos, n_neg))
    return auc1 - auc2 - norm.ppf(1 - alpha) * se


def assert_paired_gap(ok1: Tensor, ok2: Tensor, what: str = "paired gap", alpha: float = ALPHA) -> None:
    """Per example, ``ok1`` holds significantly more often than ``ok2`` (one-sided exact McNemar test).

    For two rates on the *same* examples: only the examples where the two disagree count, which
    makes the test far sharper than comparing the two rates as if they were independent.
    """
    from scipy.stats import binom

    ok1, ok2 = ok1.bool().flatten(), ok2.bool().flatten()
    assert ok1.shape == ok2.shape, (ok1.shape, ok2.shape)
    b, c = int((ok1 & ~ok2).sum()), int((~ok1 & ok2).sum())
    p = float(binom.sf(b - 1, b + c, 0.5)) if b + c else 1.0
    n = ok1.numel()
    se = math.sqrt(max(b + c, 1)) / n  # the error of (b - c) / n under "no difference"
    gap = (b - c) / n
    _log(f"{what} > 0 (McNemar b={b}, c={c}, p={p:.2g})", gap, gap - norm.ppf(1 - alpha) * se, se)
    assert p < alpha, f"{what}: {b} examples for, {c} against of {n}: one-sided p = {p:.3g} not below {alpha}"


def _placements(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    psi = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    return psi.mean(1), psi.mean(0)


def assert_auc_paired_gap(
    pos1: Tensor, neg1: Tensor, pos2: Tensor, neg2: Tensor, what: str = "AUC gap", alpha: float = ALPHA
) -> None:
    """Scores 1 separate positives from negatives significantly better than scores 2, on the same examples.

    DeLong's test for two correlated ROC-AUCs (DeLong, DeLong and Clarke-Pearson, Biometrics 1988):
    the variance of the difference comes from each example's placement under both scores.
    """
    pos1, neg1, pos2, neg2 = (t.detach().double().flatten().cpu() for t in (pos1, neg1, pos2, neg2))
    v10_1, v01_1 = _placements(pos1, neg1)
    v10_2, v01_2 = _placements(pos2, neg2)
    auc1, auc2 = float(v10_1.mean()), float(v10_2.mean())
    d10, d01 = v10_1 - v10_2, v01_1 - v01_2
    var = float(d10.var() / len(d10) + d01.var() / len(d01))
    se = math.sqrt(max(var, 1e-12))
    low = auc1 - auc2 - norm.ppf(1 - alpha) * se
    _log(f"{what} > 0 (DeLong)", auc1 - auc2, low, se)
    assert low > 0, f"{what}: {auc1:.3f} - {auc2:.3f}, DeLong lower bound {low:.3f} not above 0"


def auc_paired_gap_lower(
    pos1: Tensor, neg1: Tensor, pos2: Tensor, neg2: Tensor, alpha: float = ALPHA
) -> float:
    """DeLong lower bound of ``AUC(scores 1) - AUC(scores 2)`` on the same examples."""
    pos1, neg1, pos2, neg2 = (t.detach().double().flatten().cpu() for t in (pos1, neg1, pos2, neg2))
    v10_1, v01_1 = _placements(pos1, neg1)
    v10_2, v01_2 = _placements(pos2, neg2)
    d10, d01 = v10_1 - v10_2, v01_1 - v01_2
    se = math.sqrt(max(float(d10.var() / len(d10) + d01.var() / len(d01)), 1e-12))
    return float(v10_1.mean() - v10_2.mean()) - norm.ppf(1 - alpha) * se
