"""Out-of-distribution scores from a classifier's logits, and thresholds for a review budget.

Two scores, both "higher = more unusual":

* ``energy`` (default): the free energy ``E(x) = -T * logsumexp(f(x) / T)`` of the logits
  (Liu, Wang, Owens and Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020,
  arXiv:2010.03759).
* ``msp``: one minus the maximum softmax probability (Hendrycks and Gimpel, "A Baseline for
  Detecting Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017,
  arXiv:1610.02136).

Why energy by default: it needs nothing but the logits the model already returns (no extra
training, no features, no covariance to estimate, so it works for any LabModel and any
fallback), it is provably aligned with the input density up to a constant, and it does not
saturate the way softmax does: two inputs with the same near-1 top probability can have very
different logit magnitudes, which the energy keeps and MSP throws away. Liu et al. report a
lower FPR at 95 % TPR than MSP on every benchmark they test. Mahalanobis distances (Lee et
al., arXiv:1807.03888) can be stronger still but need class-conditional Gaussians fitted on
features of a specific layer plus input pre-processing tuned on OOD data, which a course
wrapper cannot assume.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from labkit.classifier import Classifier, batched_logits

__all__ = [
    "SCORES",
    "anomaly_score",
    "check_review_budget",
    "energy_score",
    "msp_score",
    "threshold_for_budget",
]

ScoreName = Literal["energy", "msp"]


def _check_logits(logits: object) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor of shape (N, classes)")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, classes) with classes >= 2, got {tuple(logits.shape)}")
    return logits


def _check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


def energy_score(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T logsumexp(logits / T)`` per row; higher means less like the training data.

    Examples
    --------
    >>> confident = torch.tensor([[10.0, 0.0]])
    >>> unsure = torch.tensor([[0.1, 0.0]])
    >>> bool(energy_score(unsure) > energy_score(confident))
    True
    """
    t = _check_temperature(temperature)
    return -t * torch.logsumexp(_check_logits(logits) / t, dim=1)


def msp_score(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """One minus the maximum softmax probability per row; higher means less confident."""
    t = _check_temperature(temperature)
    return 1.0 - torch.softmax(_check_logits(logits) / t, dim=1).amax(dim=1)


SCORES = {"energy": energy_score, "msp": msp_score}
"""Score functions by name, each ``(logits, *, temperature) -> (N,)``."""


def anomaly_score(
    model: Classifier,
    x: torch.Tensor,
    *,
    method: ScoreName = "energy",
    temperature: float = 1.0,
    batch_size: int = 512,
) -> torch.Tensor:
    """Anomaly score of each input under ``model`` (higher = more out of distribution).

    Parameters
    ----------
    model:
        A classifier returning logits.
    x:
        A batch the model accepts.
    method:
        ``"energy"`` (Liu et al., arXiv:2010.03759) or ``"msp"`` (Hendrycks and Gimpel,
        arXiv:1610.02136).
    temperature:
        Softmax / energy temperature ``T`` (1 in both papers' main results).
    batch_size:
        Inputs per forward pass.
    """
    if method not in SCORES:
        raise ValueError(f"method must be one of {', '.join(SCORES)}, got {method!r}")
    logits = batched_logits(model, x, batch_size=batch_size)
    return SCORES[method](logits, temperature=temperature)


def check_review_budget(review_budget: object) -> float:
    """``review_budget`` as a float in ``(0, 1)``, else a ``ValueError`` that says so.

    Examples
    --------
    >>> check_review_budget(0.05)
    0.05
    """
    if isinstance(review_budget, bool) or not isinstance(review_budget, int | float):
        raise ValueError(f"review_budget must be a number in (0, 1), got {review_budget!r}")
    if not (math.isfinite(review_budget) and 0.0 < review_budget < 1.0):
        raise ValueError(f"review_budget must be in (0, 1), e.g. 0.05 for 5 %, got {review_budget!r}")
    return float(review_budget)


def threshold_for_budget(scores: torch.Tensor, *, review_budget: float) -> float:
    """The lowest threshold that sends at most ``review_budget`` of ``scores`` to review.

    Inputs with ``score > threshold`` are routed to humans. On held-out in-distribution scores
    this sets the share of normal traffic that reviewers see; everything more unusual than
    the ``1 - review_budget`` quantile goes to them.

    Parameters
    ----------
    scores:
        Anomaly scores of held-out in-distribution inputs, ``(N,)``.
    review_budget:
        Largest fraction of that traffic to review, in ``(0, 1)``.

    Examples
    --------
    >>> threshold_for_budget(torch.arange(100.0), review_budget=0.05)
    94.0
    """
    review_budget = check_review_budget(review_budget)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError("scores must be a one-dimensional tensor")
    if scores.numel() == 0:
        raise ValueError("scores is empty; calibrate on at least one in-distribution input")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contain NaN or infinite values")
    ordered = torch.sort(scores.detach().double().cpu(), descending=True).values
    k = math.floor(review_budget * ordered.numel() + 1e-9)
    return float(ordered[min(k, ordered.numel() - 1)])
