"""Membership inference: was this example in the model's training set?

Attacks give each candidate example a *membership score* (higher: more likely a member):

* :func:`loss_attack`: the negative loss of the example (Yeom, Giacomelli, Fredrikson and Jha,
  "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting", CSF 2018,
  arXiv:1709.01604). Members were fitted, so their loss is lower.
* :func:`shadow_attack`: train *shadow* models that mimic the target on data the attacker owns,
  where membership is known, and learn to tell members from non-members by the outputs
  (Shokri, Stronati, Song and Shmatikov, "Membership Inference Attacks against Machine
  Learning Models", S&P 2017, arXiv:1610.05820).

:func:`membership_metrics` turns scores into the numbers Carlini et al. recommend ("Membership
Inference Attacks From First Principles", S&P 2022, arXiv:2112.03570): ROC AUC and balanced
accuracy, but above all the *true positive rate at a low false positive rate* (1%, 0.1%), the
regime where an attack is confidently right about some members. With ``n`` non-members the
smallest measurable FPR is ``1/n``: below it the TPR is read at FPR 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.models.training import accuracy, train
from labkit.models.zoo import Recipe, build
from labkit.privacy._common import (
    Target,
    check_data,
    check_int,
    draw_seed,
    like_api,
    revealed_probabilities,
)
from labkit.serving.api import PredictionAPI

__all__ = [
    "MembershipComparison",
    "MembershipResult",
    "compare_membership",
    "loss_attack",
    "membership_metrics",
    "overfit_target",
    "shadow_attack",
]

_FLOOR = 1e-12
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
        ax.legend(frameon=False, fontsize=8)
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


def _true_class_logprob(target: Target, data: LabData, batch_size: int) -> torch.Tensor:
    probs = revealed_probabilities(target, data.x, batch_size=batch_size)
    p = probs.gather(1, data.y.cpu().view(-1, 1)).squeeze(1)
    return torch.log(p.clamp_min(_FLOOR)).double()


def loss_attack(
    target: Target,
    members: LabData,
    nonmembers: LabData,
    *,
    threshold: float | None = None,
    batch_size: int = 512,
) -> MembershipResult:
    """Loss-threshold attack: the membership score is minus the example's cross-entropy loss.

    The attacker predicts "member" when the loss :math:`\\ell(f(x), y)` is below a threshold;
    Yeom et al. take the model's average training loss, known to the attacker in their
    threat model. With ``threshold=None`` the balanced accuracy is reported at the best
    threshold, and AUC and TPR at low FPR need no threshold at all.

    Against a :class:`~labkit.serving.PredictionAPI` the loss is computed from what the API
    reveals: rounded probabilities, or top-k ones (classes outside the top k count as
    probability 0, floored at 1e-12). A label-only API leaves only "is the label right?": the
    score becomes correct (0) or wrong (-27.6), the *gap attack* whose AUC is
    :math:`\\tfrac12 + \\tfrac12(\\text{train acc} - \\text{test acc})`.

    Reference: Yeom, Giacomelli, Fredrikson and Jha, "Privacy Risk in Machine Learning:
    Analyzing the Connection to Overfitting", CSF 2018, arXiv:1709.01604.

    Parameters
    ----------
    target:
        A model or a prediction API.
    members, nonmembers:
        Examples that were / were not in the training set (the evaluation's ground truth).
    threshold:
        Decision threshold on the score (minus a loss, e.g. ``-mean_train_loss``).
    batch_size:
        Rows per forward pass.
    """
    members = check_data(members, "members")
    nonmembers = check_data(nonmembers, "nonmembers")
    m = _true_class_logprob(target, members, batch_size)
    n = _true_class_logprob(target, nonmembers, batch_size)
    name = "loss threshold" + (f" via API ({target.output})" if isinstance(target, PredictionAPI) else "")
    return membership_metrics(m, n, threshold=threshold, name=name)


def overfit_target(
    members: LabData,
    *,
    epochs: int = 40,
    width: int = 16,
    lr: float = 2e-3,
    batch_size: int = 32,
    weight_decay: float = 0.0,
    dropout: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> LabModel:
    """Train a target model on ``members``; by default long enough to overfit them.

    Small training sets, many epochs, no weight decay and no dropout make the gap between
    training and test loss, and hence membership inference, easy to see. The same function
    with ``weight_decay`` and fewer ``epochs`` (early stopping) is the regularisation defense,
    and the attacker of :func:`shadow_attack` uses it to train shadow models.

    Parameters
    ----------
    members:
        The training set (its examples are the members).
    epochs, lr, batch_size, weight_decay:
        Passed to :func:`labkit.models.train`.
    width, dropout:
        Of the :class:`~labkit.models.SmallCNN` (or of the MLP for tabular data).
    generator:
        Seeds initialisation, shuffling and dropout; the global RNG is left as it was.
    progress:
        Show a progress bar.
    """
    members = check_data(members, "members")
    check_int(epochs, "epochs")
    arch: dict[str, Any] = {"width": width, "dropout": dropout} if members.is_image else {"dropout": dropout}
    recipe = Recipe("target", members.name, "membership-inference target", arch=arch)
    seed = draw_seed(generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(recipe, members)
        train(
            model,
            members,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            weight_decay=weight_decay,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
        )
    model.meta = {
        "members": len(members),
        "epochs": epochs,
        "weight_decay": weight_decay,
        "train_acc": accuracy(model, members),
    }
    return model.eval()


def _attack_features(probs: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Features of one prediction: log p(true class), log of the 3 largest p, entropy."""
    p = probs.clamp_min(_FLOOR)
    true = torch.log(p.gather(1, y.view(-1, 1)))
    top = torch.log(p.topk(min(3, p.shape[1]), dim=1).values)
    entropy = -(probs * torch.log(p)).sum(1, keepdim=True)
    return torch.cat([true, top, entropy], dim=1).double().numpy()


def shadow_attack(
    target: Target,
    members: LabData,
    nonmembers: LabData,
    *,
    shadow_data: LabData,
    n_shadows: int = 2,
    train_shadow: Callable[[LabData, torch.Generator], nn.Module] | None = None,
    epochs: int = 40,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> MembershipResult:
    """Shadow-model attack: learn what members look like from models the attacker trains.

    1. Split ``shadow_data`` (the attacker's own data from the same distribution, disjoint
       from the target's training set) into ``n_shadows`` parts, and each part into an *in*
       half and an *out* half.
    2. Train a shadow model on each *in* half, the way the target was trained (default:
       :func:`overfit_target` with ``epochs``; pass ``train_shadow`` to change it).
    3. Query every shadow model on its *in* and *out* halves, revealing only what the target
       reveals (a shadow behind an API with the same output settings when ``target`` is a
       :class:`~labkit.serving.PredictionAPI`), and train an attack classifier (logistic
       regression on the true-class log-probability, the three largest log-probabilities and
       the entropy) to tell *in* from *out*.
    4. Score the target's members and non-members with the attack classifier.

    Simplification: one attack model for all classes instead of one per class as in the paper;
    Salem et al. ("ML-Leaks", arXiv:1806.01246) show that this, and even a single shadow
    model, loses little.

    Reference: Shokri, Stronati, Song and Shmatikov, "Membership Inference Attacks against
    Machine Learning Models", S&P 2017, arXiv:1610.05820.

    Parameters
    ----------
    target:
        A model or a prediction API.
    members, nonmembers:
        Ground truth for the evaluation.
    shadow_data:
        The attacker's data; at least 4 examples per shadow model.
    n_shadows:
        Number of shadow models.
    train_shadow:
        ``(data, generator) -> model`` training one shadow model.
    epochs:
        Epochs of the default shadow training.
    generator:
        Seeds the splits, the shadow models and the attack classifier.
    progress:
        Show a progress bar over the shadow models.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    members = check_data(members, "members")
    nonmembers = check_data(nonmembers, "nonmembers")
    shadow_data = check_data(shadow_data, "shadow_data")
    n_shadows = check_int(n_shadows, "n_shadows")
    if len(shadow_data) < 4 * n_shadows:
        raise ValueError(
            f"shadow_data has {len(shadow_data)} examples; {n_shadows} shadow models need "
            f"at least {4 * n_shadows}"
        )
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def default_train(data: LabData, g: torch.Generator) -> nn.Module:
        return overfit_target(data, epochs=epochs, generator=g, progress=False)

    fit = train_shadow if train_shadow is not None else default_train
    order = torch.randperm(len(shadow_data), generator=gen)
    parts = order.chunk(n_shadows)
    feats: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for part in tqdm(parts, desc="shadow models", disable=not progress):
        half = len(part) // 2
        inside, outside = shadow_data.subset(part[:half]), shadow_data.subset(part[half:])
        shadow = fit(inside, gen)
        if not isinstance(shadow, LabModel):
            raise TypeError(f"train_shadow must return a LabModel, got {type(shadow).__name__}")
        seen = like_api(shadow, target)
        for d, is_member in ((inside, 1.0), (outside, 0.0)):
            feats.append(_attack_features(revealed_probabilities(seen, d.x), d.y.cpu()))
            labels.append(np.full(len(d), is_member))
    attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    attack.fit(np.concatenate(feats), np.concatenate(labels))

    def score(d: LabData) -> torch.Tensor:
        f = _attack_features(revealed_probabilities(target, d.x), d.y.cpu())
        return torch.as_tensor(attack.decision_function(f), dtype=torch.float64)

    name = f"shadow models ({n_shadows})" + (
        f" via API ({target.output})" if isinstance(target, PredictionAPI) else ""
    )
    return membership_metrics(score(members), score(nonmembers), threshold=0.0, name=name)
