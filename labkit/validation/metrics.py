"""Metrics the validation gates use: ranking, calibration and fairness.

All functions take tensors or NumPy arrays, leave them untouched and return Python floats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

__all__ = [
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "expected_calibration_error",
    "group_rates",
    "recall_at_fpr",
    "roc_auc",
    "threshold_at_fpr",
]


def _array(values: object, name: str, *, dtype: Any = np.float64) -> NDArray[Any]:
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().numpy()
    elif isinstance(values, np.ndarray | list | tuple):
        arr = np.asarray(values)
    else:
        raise TypeError(f"{name} must be a tensor, array or list, got {type(values).__name__}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    out: NDArray[Any] = arr.astype(dtype)
    return out


def _vector(values: object, name: str, *, dtype: Any = np.float64) -> NDArray[Any]:
    arr = _array(values, name, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _same_length(**arrays: NDArray[Any]) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")


def _binary_labels(y: object, name: str = "y") -> NDArray[np.int64]:
    arr = _vector(y, name, dtype=np.int64)
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold binary labels 0 and 1")
    return arr


def _fpr(fpr: object) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, int | float) or not math.isfinite(fpr):
        raise ValueError(f"fpr must be a number in [0, 1), got {fpr!r}")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr!r}")
    return float(fpr)


def roc_auc(scores: object, y: object) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for labels 0/1.

    Examples
    --------
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    from sklearn.metrics import roc_auc_score

    s, t = _vector(scores, "scores"), _binary_labels(y)
    _same_length(scores=s, y=t)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if t.min() == t.max():
        raise ValueError("ROC-AUC needs both classes in y; this sample has only one")
    return float(roc_auc_score(t, s))


def threshold_at_fpr(scores: object, y: object, *, fpr: float) -> float:
    """The lowest threshold ``t`` whose rule ``score > t`` flags at most ``fpr`` of the negatives.

    Examples
    --------
    >>> threshold_at_fpr([0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 0, 0, 1], fpr=0.25)
    0.3
    """
    s, t = _vector(scores, "scores"), _binary_labels(y)
    _same_length(scores=s, y=t)
    target = _fpr(fpr)
    negatives = np.sort(s[t == 0])[::-1]
    if negatives.size == 0:
        raise ValueError("y has no negatives, so a false-positive rate cannot be set")
    k = math.floor(target * negatives.size + 1e-9)  # negatives allowed above the threshold
    return float(negatives[min(k, negatives.size - 1)])


def recall_at_fpr(scores: object, y: object, *, fpr: float, threshold: float | None = None) -> float:
    """Recall (true-positive rate) of ``score > t`` where ``t`` keeps the FPR at most ``fpr``.

    ``threshold`` uses a fixed threshold instead (e.g. one set on clean data before deployment).

    Examples
    --------
    >>> recall_at_fpr([0.1, 0.2, 0.3, 0.4, 0.9, 0.25], [0, 0, 0, 0, 1, 1], fpr=0.25)
    0.5
    """
    s, t = _vector(scores, "scores"), _binary_labels(y)
    _same_length(scores=s, y=t)
    if (t == 1).sum() == 0:
        raise ValueError("y has no positives, so recall is undefined")
    cut = threshold_at_fpr(s, t, fpr=fpr) if threshold is None else float(threshold)
    return float((s[t == 1] > cut).mean())


def expected_calibration_error(probs: object, y: object, *, bins: int = 15) -> float:
    """Expected calibration error of predicted probabilities (equal-width confidence bins).

    ``ECE = sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|`` where the confidence of an
    example is its largest predicted probability and ``B_b`` are the examples whose
    confidence falls in bin ``b`` of ``bins`` equal-width bins over ``(0, 1]``.

    Parameters
    ----------
    probs:
        ``(N, K)`` class probabilities (rows sum to 1), or ``(N,)`` probabilities of class 1
        for a binary problem.
    y:
        True labels ``(N,)``.
    bins:
        Number of confidence bins (15 as in Guo et al.).

    References
    ----------
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017,
    arXiv:1706.04599; Naeini, Cooper and Hauskrecht, AAAI 2015.

    Examples
    --------
    >>> p = torch.tensor([[0.2, 0.8]] * 10)          # always 80 % sure of class 1 ...
    >>> y = torch.tensor([1] * 8 + [0] * 2)           # ... and right 80 % of the time
    >>> round(expected_calibration_error(p, y), 6)
    0.0
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    p = _array(probs, "probs")
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K) or (N,), got shape {p.shape}")
    labels = _vector(y, "y", dtype=np.int64)
    if len(labels) != len(p):
        raise ValueError(f"probs has {len(p)} rows but y has {len(labels)} labels")
    if not np.isfinite(p).all() or (p < -1e-6).any() or (p > 1 + 1e-6).any():
        raise ValueError("probs must be probabilities in [0, 1]; apply softmax to logits first")
    if not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise ValueError("each row of probs must sum to 1; apply softmax to logits first")
    confidence, pred = p.max(1), p.argmax(1)
    correct = (pred == labels).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def group_rates(
    pred: object, y: object | None, group: object, *, positive: int = 1
) -> dict[int, dict[str, float]]:
    """Per group: its size, selection rate ``P(pred = positive)`` and, with labels, the TPR.

    Examples
    --------
    >>> group_rates([1, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1])[1]
    {'n': 2.0, 'selection_rate': 1.0, 'tpr': 1.0}
    """
    p = _vector(pred, "pred", dtype=np.int64)
    g = _vector(group, "group", dtype=np.int64)
    _same_length(pred=p, group=g)
    t = None if y is None else _vector(y, "y", dtype=np.int64)
    if t is not None:
        _same_length(pred=p, y=t)
    out: dict[int, dict[str, float]] = {}
    for value in np.unique(g):
        mask = g == value
        row = {"n": float(mask.sum()), "selection_rate": float((p[mask] == positive).mean())}
        if t is not None:
            pos = mask & (t == positive)
            row["tpr"] = float((p[pos] == positive).mean()) if pos.any() else float("nan")
        out[int(value)] = row
    return out


def demographic_parity_difference(pred: object, group: object, *, positive: int = 1) -> float:
    """Largest gap in selection rate ``P(pred = positive | group)`` between any two groups.

    0 means every group is flagged equally often (demographic or statistical parity).

    References
    ----------
    Dwork et al., "Fairness Through Awareness", ITCS 2012, arXiv:1104.3913.

    Examples
    --------
    >>> demographic_parity_difference([1, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1])
    0.25
    """
    rates = [r["selection_rate"] for r in group_rates(pred, None, group, positive=positive).values()]
    if len(rates) < 2:
        raise ValueError("group has a single value; fairness differences need at least two groups")
    return float(max(rates) - min(rates))


def equal_opportunity_difference(pred: object, y: object, group: object, *, positive: int = 1) -> float:
    """Largest gap in true-positive rate ``P(pred = positive | y = positive, group)`` between groups.

    0 means the truly positive members of every group are found equally often.

    References
    ----------
    Hardt, Price and Srebro, "Equality of Opportunity in Supervised Learning", NeurIPS 2016,
    arXiv:1610.02413.

    Examples
    --------
    >>> round(equal_opportunity_difference([1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]), 4)
    0.1667
    """
    rates = group_rates(pred, y, group, positive=positive)
    tprs = [r["tpr"] for r in rates.values()]
    if len(tprs) < 2:
        raise ValueError("group has a single value; fairness differences need at least two groups")
    if any(math.isnan(v) for v in tprs):
        raise ValueError("some group has no positive examples, so its true-positive rate is undefined")
    return float(max(tprs) - min(tprs))
