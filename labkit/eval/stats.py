"""Exact binomial confidence bounds (Clopper-Pearson) for accuracies and certification."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_alpha", "clopper_pearson", "clopper_pearson_lower"]


def check_alpha(alpha: object, name: str = "alpha") -> float:
    """Return ``alpha`` as a float after checking it lies strictly between 0 and 1."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), got {type(alpha).__name__}")
    value = float(alpha)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1) (exclusive), got {alpha!r}")
    return value


def _check_counts(k: int, n: int) -> None:
    if n <= 0:
        raise ValueError(f"n must be a positive number of trials, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")


def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a proportion ``k / n``.

    .. math::

        \\big[\\, B^{-1}(\\tfrac{\\alpha}{2};\\, k, n - k + 1),\\;
               B^{-1}(1 - \\tfrac{\\alpha}{2};\\, k + 1, n - k) \\,\\big],
        \\qquad \\alpha = 1 - \\text{confidence},

    with :math:`B^{-1}` the beta quantile (0 when ``k = 0``, 1 when ``k = n``). It is exact:
    the coverage is at least ``confidence`` for every true proportion.

    Reference: Clopper and Pearson, "The use of confidence or fiducial limits illustrated in
    the case of the binomial", Biometrika 1934.

    Examples
    --------
    >>> low, high = clopper_pearson(90, 100)
    >>> round(low, 3), round(high, 3)
    (0.824, 0.951)
    >>> clopper_pearson(0, 10)[0], clopper_pearson(10, 10)[1]
    (0.0, 1.0)
    """
    from scipy.stats import beta

    _check_counts(k, n)
    a = 1 - check_alpha(confidence, "confidence")
    low = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return low, high


def clopper_pearson_lower(k: int, n: int, *, alpha: float) -> float:
    """One-sided lower confidence bound at level ``1 - alpha``: :math:`B^{-1}(\\alpha; k, n-k+1)`.

    Examples
    --------
    >>> round(clopper_pearson_lower(100, 100, alpha=0.001), 4)   # alpha ** (1 / n)
    0.9333
    """
    from scipy.stats import beta

    _check_counts(k, n)
    a = check_alpha(alpha)
    if k == 0:
        return 0.0
    value = float(beta.ppf(a, k, n - k + 1))
    return value if math.isfinite(value) else 0.0
