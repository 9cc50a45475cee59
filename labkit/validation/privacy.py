"""A loss-threshold membership-inference attack, measured at a low false-positive rate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from labkit.classifier import Classifier, batched_logits, check_model
from labkit.data.base import LabData
from labkit.validation.metrics import recall_at_fpr, roc_auc

__all__ = ["MembershipResult", "loss_threshold_attack"]


@dataclass(frozen=True)
class MembershipResult:
    """How well the attack tells training members from non-members.

    Attributes
    ----------
    auc:
        ROC-AUC of the attack score (0.5 = no leakage).
    tpr_at_fpr:
        Share of members identified when at most ``fpr`` of non-members are wrongly flagged;
        the number that matters for privacy (Carlini et al., 2022).
    fpr:
        The false-positive rate of ``tpr_at_fpr``.
    advantage:
        Best ``TPR - FPR`` over thresholds (membership advantage, Yeom et al., 2018).
    n:
        Members and non-members used (the same number of each).
    """

    auc: float
    tpr_at_fpr: float
    fpr: float
    advantage: float
    n: int


def _pair(data: LabData | tuple[torch.Tensor, torch.Tensor], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, LabData):
        return data.x, data.y
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data
    raise TypeError(f"{name} must be a LabData or an (x, y) pair of tensors, got {type(data).__name__}")


def _losses(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    logits = batched_logits(model, x, batch_size=batch_size).float().cpu()
    return F.cross_entropy(logits, y.cpu(), reduction="none")


def loss_threshold_attack(
    model: Classifier,
    members: LabData | tuple[torch.Tensor, torch.Tensor],
    nonmembers: LabData | tuple[torch.Tensor, torch.Tensor],
    *,
    fpr: float = 0.01,
    n: int | None = None,
    batch_size: int = 1024,
) -> MembershipResult:
    """Guess "member" when an example's loss is low: the simplest membership-inference attack.

    The score of an example is its negative cross-entropy loss under ``model``; training
    examples tend to have lower loss than unseen ones, and the gap measures how much the model
    memorised. The first ``n`` (default: as many as the smaller set has) of each set are used.

    Parameters
    ----------
    model:
        The classifier under audit.
    members:
        Examples it was trained on.
    nonmembers:
        Examples from the same distribution it never saw (e.g. the test split).
    fpr:
        False-positive rate at which the true-positive rate is reported.
    n, batch_size:
        Examples per set, and per forward pass.

    References
    ----------
    Yeom, Giacomelli, Fredrikson and Jha, "Privacy Risk in Machine Learning: Analyzing the
    Connection to Overfitting", CSF 2018, arXiv:1709.01604; Carlini, Chien, Nasr, Song, Terzis
    and Tramèr, "Membership Inference Attacks From First Principles", IEEE S&P 2022,
    arXiv:2112.03570 (why TPR at low FPR, not accuracy).
    """
    model = check_model(model)
    xm, ym = _pair(members, "members")
    xn, yn = _pair(nonmembers, "nonmembers")
    k = min(len(xm), len(xn)) if n is None else n
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if len(xm) < k or len(xn) < k or k < 2:
        raise ValueError(
            f"need at least n={k} (and at least 2) members and non-members; have {len(xm)} and {len(xn)}"
        )
    scores = -torch.cat(
        [_losses(model, xm[:k], ym[:k], batch_size), _losses(model, xn[:k], yn[:k], batch_size)]
    )
    truth = torch.cat([torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)])
    from sklearn.metrics import roc_curve

    fprs, tprs, _ = roc_curve(truth.numpy(), scores.numpy())
    return MembershipResult(
        auc=roc_auc(scores, truth),
        tpr_at_fpr=recall_at_fpr(scores, truth, fpr=fpr),
        fpr=float(fpr),
        advantage=float((tprs - fprs).max()),
        n=k,
    )
