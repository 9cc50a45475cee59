"""Membership scores into numbers: the metrics and the result types of membership inference.

:func:`membership_metrics` turns the scores an attack of :mod:`labkit.privacy.membership` gives
members and non-members into the numbers Carlini et al. recommend ("Membership Inference Attacks
From First Principles", S&P 2022, arXiv:2112.03570): ROC AUC and balanced accuracy, but above
all the *true positive rate at a low false positive rate* (1%, 0.1%). :class:`MembershipResult`
holds one attack's scores and metrics; :func:`compare_membership` lays several side by side
(:class:`MembershipComparison`: a table and ROC curves).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["LOW_FPRS", "MembershipComparison", "MembershipResult", "compare_membership", "membership_metrics"]

LOW_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class MembershipResult:
    """Scores of an attack on members and non-members, and the metrics they give.

    Attributes
    ----------
    name:
        The attack.
    member_scores, nonmember_scores:
        Membership scores (higher: more likely a member).
    auc:
        Area under the ROC curve (0.5: guessing).
    balanced_accuracy:
        :math:`(TPR + TNR)/2` at ``threshold``; with no threshold, at the best one (an
        optimistic number: the attacker would not know it).
    tpr_at_fpr:
        TPR at FPR of 1% and 0.1%.
    threshold:
        The decision threshold used for ``balanced_accuracy`` (``None``: best).
    fpr, tpr:
        The ROC curve.
    """

    name: str
    member_scores: torch.Tensor
    nonmember_scores: torch.Tensor
    auc: float
    balanced_accuracy: float
    tpr_at_fpr: dict[float, float]
    threshold: float | None
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {"auc": self.auc, "balanced_accuracy": self.balanced_accuracy}
        out.update({f"tpr@{100 * f:g}%fpr": v for f, v in self.tpr_at_fpr.items()})
        return out

    def _repr_markdown_(self) -> str:
        return MembershipComparison({self.name: self})._repr_markdown_()

    def plot(self, ax: Any = None) -> Any:
        """The ROC curve on log-log axes (the low-FPR regime is what matters)."""
        return MembershipComparison({self.name: self}).plot(ax=ax)


@dataclass(frozen=True)
class MembershipComparison:
    """Several membership-inference results side by side (a table and ROC curves)."""

    results: dict[str, MembershipResult]

    def __getitem__(self, name: str) -> MembershipResult:
        return self.results[name]

    def _repr_markdown_(self) -> str:
        lines = [
            "| attack / target | members | non-members | ROC AUC | balanced acc. "
            "| TPR @ 1% FPR | TPR @ 0.1% FPR |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in self.results.items():
            low = " | ".join(f"{100 * r.tpr_at_fpr[f]:.1f}%" for f in LOW_FPRS)
            lines.append(
                f"| {name} | {len(r.member_scores)} | {len(r.nonmember_scores)} | {r.auc:.3f} | "
                f"{100 * r.balanced_accuracy:.1f}% | {low} |"
            )
        n = min(len(r.nonmember_scores) for r in self.results.values())
        lines += ["", f"*The smallest measurable FPR with {n} non-members is {100 / n:.2g}%.*"]
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.2, 4))
        for name, r in self.results.items():
            ax.plot(np.maximum(r.fpr, 1e-4), np.maximum(r.tpr, 1e-4), label=f"{name} (AUC {r.auc:.2f})")
        ax.plot([1e-4, 1], [1e-4, 1], color="grey", linestyle="--", label="guessing")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("membership inference ROC")
        ax.legend(frameon=False, fontsize=9)
        ax.figure.tight_layout()
        return ax.figure


def compare_membership(results: Mapping[str, MembershipResult]) -> MembershipComparison:
    """A table (and :meth:`~MembershipComparison.plot`) of several results, e.g. per defense."""
    if not results:
        raise ValueError("results is empty")
    for k, v in results.items():
        if not isinstance(v, MembershipResult):
            raise TypeError(f"results[{k!r}] must be a MembershipResult, got {type(v).__name__}")
    return MembershipComparison(dict(results))


def membership_metrics(
    member_scores: torch.Tensor,
    nonmember_scores: torch.Tensor,
    *,
    threshold: float | None = None,
    name: str = "attack",
) -> MembershipResult:
    """ROC AUC, balanced accuracy and TPR at 1% and 0.1% FPR of membership scores.

    Examples
    --------
    >>> r = membership_metrics(torch.tensor([3.0, 2.0, 0.5]), torch.tensor([1.0, 0.0, -1.0]))
    >>> round(r.auc, 3), round(r.balanced_accuracy, 3), r.tpr_at_fpr[0.01]
    (0.889, 0.833, 0.6666666666666666)
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    m = torch.as_tensor(member_scores, dtype=torch.float64).flatten().cpu()
    n = torch.as_tensor(nonmember_scores, dtype=torch.float64).flatten().cpu()
    if len(m) == 0 or len(n) == 0:
        raise ValueError("need at least one member and one non-member score")
    if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(n).all())):
        raise ValueError("membership scores must be finite")
    scores = torch.cat([m, n]).numpy()
    truth = np.concatenate([np.ones(len(m)), np.zeros(len(n))])
    auc = float(roc_auc_score(truth, scores))
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
    low = {f: float(tpr[fpr <= f].max()) for f in LOW_FPRS}
    if threshold is None:
        balanced = float(0.5 * (1 + np.max(tpr - fpr)))
    else:
        t_pos = float((m >= threshold).double().mean())
        t_neg = float((n < threshold).double().mean())
        balanced = 0.5 * (t_pos + t_neg)
    return MembershipResult(
        name=name,
        member_scores=m,
        nonmember_scores=n,
        auc=auc,
        balanced_accuracy=balanced,
        tpr_at_fpr=low,
        threshold=threshold,
        fpr=fpr,
        tpr=tpr,
    )
