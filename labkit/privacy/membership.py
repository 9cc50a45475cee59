"""Membership inference: was this example in the model's training set?

Attacks give each candidate example a *membership score* (higher: more likely a member):

* :func:`loss_attack`: the negative loss of the example (Yeom, Giacomelli, Fredrikson and Jha,
  "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting", CSF 2018,
  arXiv:1709.01604). Members were fitted, so their loss is lower.
* :func:`shadow_attack`: train *shadow* models that mimic the target on data the attacker owns,
  where membership is known, and learn to tell members from non-members by the outputs
  (Shokri, Stronati, Song and Shmatikov, "Membership Inference Attacks against Machine
  Learning Models", S&P 2017, arXiv:1610.05820).
* :func:`lira_attack`: the offline Likelihood Ratio Attack, which calibrates every example
  against shadow models that never saw it (Carlini, Chien, Nasr, Song, Terzis and Tramèr,
  "Membership Inference Attacks From First Principles", S&P 2022, arXiv:2112.03570).

:func:`membership_metrics` turns scores into the numbers Carlini et al. recommend ("Membership
Inference Attacks From First Principles", S&P 2022, arXiv:2112.03570): ROC AUC and balanced
accuracy, but above all the *true positive rate at a low false positive rate* (1%, 0.1%), the
regime where an attack is confidently right about some members. With ``n`` non-members the
smallest measurable FPR is ``1/n``: below it the TPR is read at FPR 0. Those metrics and the
result types live in :mod:`labkit.privacy.membership_metrics` (re-exported here); this module
holds the attacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    model_device,
    revealed_probabilities,
)
from labkit.privacy.membership_metrics import (
    MembershipComparison,
    MembershipResult,
    compare_membership,
    membership_metrics,
)
from labkit.serving.api import PredictionAPI
from labkit.utils import eval_mode

__all__ = [
    "MembershipComparison",
    "MembershipResult",
    "compare_membership",
    "lira_attack",
    "loss_attack",
    "membership_metrics",
    "overfit_target",
    "shadow_attack",
]

_FLOOR = 1e-12


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


def _logit_confidence(target: Target, data: LabData, batch_size: int) -> torch.Tensor:
    """:math:`\\phi = \\log p_y - \\log(1 - p_y)` of every example, float64 on the CPU.

    From a model's logits this is computed stably as :math:`z_y - \\log\\sum_{j \\ne y} e^{z_j}`
    (a softmax in float32 rounds :math:`p_y` to 1 long before :math:`\\phi` stops growing);
    from an API, from the probabilities it reveals, clamped to :math:`[10^{-12}, 1 - 10^{-12}]`.
    """
    y = data.y.cpu()
    if isinstance(target, PredictionAPI):
        p = revealed_probabilities(target, data.x, batch_size=batch_size).double()
        p_y = p.gather(1, y.view(-1, 1)).squeeze(1).clamp(_FLOOR, 1 - _FLOOR)
        return torch.log(p_y) - torch.log1p(-p_y)
    if not isinstance(target, nn.Module):
        raise TypeError(f"target must be a torch.nn.Module or a PredictionAPI, got {type(target).__name__}")
    device = model_device(target)
    with torch.no_grad(), eval_mode(target):
        logits = torch.cat(
            [target(data.x[i : i + batch_size].to(device)) for i in range(0, len(data), batch_size)]
        )
    z = logits.double().cpu()
    true = z.gather(1, y.view(-1, 1)).squeeze(1)
    others = z.scatter(1, y.view(-1, 1), -math.inf)
    return true - torch.logsumexp(others, dim=1)


def lira_attack(
    target: Target,
    members: LabData,
    nonmembers: LabData,
    *,
    shadow_data: LabData,
    n_shadows: int = 8,
    variance: str = "auto",
    train_shadow: Callable[[LabData, torch.Generator], nn.Module] | None = None,
    epochs: int = 40,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> MembershipResult:
    """Offline Likelihood Ratio Attack (LiRA): calibrate every example against shadow models.

    The loss attack compares every example with one threshold, yet some examples are easy (any
    model is confident on them) and some are hard. LiRA asks, per example, how confident a
    model that did *not* train on it would be, and flags the target's confidence when it is
    unusually high. The *offline* variant needs no model trained on the candidates:

    1. Train ``n_shadows`` shadow models, each on a random half of ``shadow_data`` (the
       attacker's data; it must not contain the candidates, so every shadow is an *OUT*
       model for every candidate). Default training: :func:`overfit_target` with ``epochs``.
    2. For each candidate :math:`(x, y)` and each shadow :math:`f_k`, compute the logit-scaled
       confidence of the true class, :math:`\\phi_k = \\log\\frac{p_y}{1 - p_y}`, which is
       close to Gaussian across models where :math:`p_y` itself is not.
    3. Fit :math:`\\mathcal N(\\mu_{out}, \\sigma^2_{out})` per example: :math:`\\mu_{out}` is the
       mean of the :math:`\\phi_k`; :math:`\\sigma_{out}` is their standard deviation per example,
       or one *global* standard deviation pooled over all candidates, which the paper finds
       better with few shadow models (below 64).
    4. With :math:`\\phi` the target's confidence, the score is the one-sided test

       .. math:: s(x, y) = -\\log \\Pr_{Z \\sim \\mathcal N(\\mu_{out}, \\sigma^2_{out})}
                 \\big[Z \\ge \\phi\\big] = -\\log\\Big(1 - \\Phi\\big(\\tfrac{\\phi -
                 \\mu_{out}}{\\sigma_{out}}\\big)\\Big),

       high when the target is more confident than OUT models could plausibly be.

    Against a :class:`~labkit.serving.PredictionAPI` the shadows are queried through an API
    with the same output settings, so both sides see the same coarsened scores.
    Simplification: no test-time augmentation (the paper also queries flipped and shifted
    copies of each example).

    Reference: Carlini, Chien, Nasr, Song, Terzis and Tramèr, "Membership Inference Attacks
    From First Principles", S&P 2022, arXiv:2112.03570 (offline LiRA, Algorithm 1 without
    the IN models).

    Parameters
    ----------
    target:
        A model or a prediction API.
    members, nonmembers:
        Ground truth for the evaluation; none of them may be in ``shadow_data``.
    shadow_data:
        The attacker's data from the same distribution; at least 4 examples.
    n_shadows:
        Number of shadow (OUT) models, at least 2.
    variance:
        ``"global"``, ``"per_example"``, or ``"auto"`` (per example from 64 shadows on,
        global below).
    train_shadow:
        ``(data, generator) -> model`` training one shadow model.
    epochs:
        Epochs of the default shadow training.
    batch_size:
        Rows per forward pass.
    generator:
        Seeds the halves and the shadow models.
    progress:
        Show a progress bar over the shadow models.

    Returns
    -------
    MembershipResult
        Scores and metrics; ``info`` holds ``mu_out``, ``sigma_out`` and ``phi`` (members
        first, then non-members), and the variance mode used.

    Examples
    --------
    >>> import labkit as lk
    >>> train = lk.data.load("digits", split="train")
    >>> target = overfit_target(train.subset(range(100)), epochs=3, width=4, progress=False)
    >>> r = lira_attack(target, train.subset(range(100)), train.subset(range(100, 200)),
    ...                 shadow_data=train.subset(range(200, 400)), n_shadows=2, epochs=3, progress=False)
    >>> r.name, r.info["variance"], len(r.member_scores)
    ('LiRA offline (2 shadows)', 'global', 100)
    """
    from scipy.stats import norm

    members = check_data(members, "members")
    nonmembers = check_data(nonmembers, "nonmembers")
    shadow_data = check_data(shadow_data, "shadow_data")
    n_shadows = check_int(n_shadows, "n_shadows", minimum=2)
    check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    if variance not in ("auto", "global", "per_example"):
        raise ValueError(f"variance must be 'auto', 'global' or 'per_example', got {variance!r}")
    if len(shadow_data) < 4:
        raise ValueError(f"shadow_data has {len(shadow_data)} examples; LiRA needs at least 4")
    for name, d in (("members", members), ("nonmembers", nonmembers)):
        if d.input_shape != shadow_data.input_shape:
            raise ValueError(
                f"{name} has inputs of shape {d.input_shape}, shadow_data {shadow_data.input_shape}"
            )
    owned = {row.numpy().tobytes() for row in shadow_data.x.detach().cpu().flatten(1)}
    for name, d in (("members", members), ("nonmembers", nonmembers)):
        shared = sum(row.numpy().tobytes() in owned for row in d.x.detach().cpu().flatten(1))
        if shared:
            raise ValueError(
                f"{shared} of the {name} are also in shadow_data; offline LiRA needs shadow data "
                "that excludes every candidate (each shadow must be an OUT model)"
            )
    mode = ("per_example" if n_shadows >= 64 else "global") if variance == "auto" else variance
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def default_train(data: LabData, g: torch.Generator) -> nn.Module:
        return overfit_target(data, epochs=epochs, generator=g, progress=False)

    fit = train_shadow if train_shadow is not None else default_train
    candidates = LabData(
        name=members.name,
        split="candidates",
        x=torch.cat([members.x.cpu(), nonmembers.x.cpu()]),
        y=torch.cat([members.y.cpu(), nonmembers.y.cpu()]),
        classes=members.classes,
    )
    half = len(shadow_data) // 2
    phis = []
    for _ in tqdm(range(n_shadows), desc="LiRA shadow models", disable=not progress):
        inside = shadow_data.subset(torch.randperm(len(shadow_data), generator=gen)[:half])
        shadow = fit(inside, gen)
        if not isinstance(shadow, LabModel):
            raise TypeError(f"train_shadow must return a LabModel, got {type(shadow).__name__}")
        phis.append(_logit_confidence(like_api(shadow, target), candidates, batch_size))
    out = torch.stack(phis)  # (n_shadows, N)
    mu = out.mean(dim=0)
    if mode == "global":
        sigma = (out - mu).pow(2).sum().div(out.numel() - out.shape[1]).sqrt().expand_as(mu)
    else:
        sigma = out.std(dim=0)
    sigma = sigma.clamp_min(1e-6)
    phi = _logit_confidence(target, candidates, batch_size)
    z = ((phi - mu) / sigma).clamp(-1e4, 1e4)
    score = torch.as_tensor(-norm.logsf(z.numpy()), dtype=torch.float64)
    api = f" via API ({target.output})" if isinstance(target, PredictionAPI) else ""
    result = membership_metrics(
        score[: len(members)], score[len(members) :], name=f"LiRA offline ({n_shadows} shadows){api}"
    )
    result.info.update({"mu_out": mu, "sigma_out": sigma, "phi": phi, "variance": mode})
    return result
