"""Model extraction: steal a copy of a model through its prediction API.

The attacker sends queries to a :class:`~labkit.serving.PredictionAPI`, records the answers,
and trains a *substitute* model to reproduce them. How good the copy is is measured by its
*fidelity*, the share of held-out inputs on which it agrees with the victim, and by its plain
accuracy. Fidelity grows with the number of queries; output coarsening (top-k, rounding,
label only) and query budgets slow it down, and the query log shows the attack
(:func:`labkit.serving.prada`).

Query strategies:

* ``"natural"``: unlabelled inputs from the task's distribution (the attacker has images but
  no labels, or not enough of them).
* ``"random"``: uniform noise in the valid range, for an attacker with no data at all.
* ``"jacobian"``: Jacobian-based dataset augmentation of Papernot et al. ("Practical Black-Box
  Attacks against Machine Learning", AsiaCCS 2017, arXiv:1602.02697): start from a small seed
  set, and each round add :math:`x + \\lambda\\,\\mathrm{sign}(\\nabla_x F_{c}(x))` for every
  known :math:`x`, :math:`F_c` being the substitute's logit of the class the victim gave
  :math:`x`. The new points probe the victim's decision boundaries near the data.

A stolen model is also a white-box stand-in for black-box evasion: :func:`transfer_attack`
crafts adversarial examples on it and measures how many fool the victim.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from labkit.data.base import LabData
from labkit.models.training import predict
from labkit.privacy._common import (
    check_data,
    check_int,
    check_positive,
    draw_seed,
    fit_soft,
    image_model,
    model_device,
    revealed_probabilities,
)
from labkit.serving.api import PredictionAPI, TopK
from labkit.utils import check_images, eval_mode

__all__ = ["ExtractionResult", "TransferResult", "extract", "transfer_attack"]

Strategy = Literal["natural", "random", "jacobian"]


@dataclass
class ExtractionResult:
    """A stolen model and how its agreement with the victim grew with the queries.

    Attributes
    ----------
    model:
        The substitute trained on every answered query.
    curve:
        One row per checkpoint: ``queries``, ``fidelity`` (agreement with the victim on the
        held-out data), ``accuracy`` (on its true labels).
    victim_accuracy:
        The victim's accuracy on the same held-out data.
    strategy, output:
        How the queries were chosen and what the API revealed.
    """

    model: nn.Module
    curve: list[dict[str, float]]
    victim_accuracy: float
    strategy: str
    output: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def queries(self) -> list[int]:
        return [int(r["queries"]) for r in self.curve]

    @property
    def fidelity(self) -> list[float]:
        return [r["fidelity"] for r in self.curve]

    @property
    def accuracy(self) -> list[float]:
        return [r["accuracy"] for r in self.curve]

    def _repr_markdown_(self) -> str:
        lines = [
            f"**Model extraction** ({self.strategy} queries, API output: {self.output}; "
            f"victim accuracy {100 * self.victim_accuracy:.1f}%)",
            "",
            "| queries | fidelity (agreement with victim) | substitute accuracy |",
            "|---:|---:|---:|",
        ]
        for r in self.curve:
            lines.append(f"| {int(r['queries'])} | {100 * r['fidelity']:.1f}% | {100 * r['accuracy']:.1f}% |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Fidelity and accuracy against queries."""
        from labkit.plot import curves

        fig = curves(
            self.queries,
            {"fidelity": self.fidelity, "accuracy": self.accuracy},
            xlabel="queries",
            ylabel="share of held-out inputs",
            title=f"extraction ({self.strategy}, {self.output})",
            ax=ax,
        )
        fig.axes[0].set_xscale("log")
        return fig


def _soft_targets(answer: torch.Tensor | TopK, api: PredictionAPI) -> torch.Tensor:
    """Training targets from an API answer: a probability row per query."""
    k = api.num_classes
    if isinstance(answer, TopK):
        scores = answer.scores.float().cpu().clamp_min(0)
        rest = (1 - scores.sum(1, keepdim=True)).clamp_min(0) / max(k - scores.shape[1], 1)
        probs = rest.expand(-1, k).clone()
        probs.scatter_(1, answer.classes.cpu(), scores)
    elif api.output == "label":
        probs = F.one_hot(answer.cpu(), k).float()
    else:
        probs = answer.float().cpu().clamp_min(0)
    total = probs.sum(1, keepdim=True)
    return torch.where(total > 0, probs / total.clamp_min(1e-12), torch.full_like(probs, 1 / k))


def _query(api: PredictionAPI, x: torch.Tensor, chunk: int, soft: bool) -> torch.Tensor:
    rows = [_soft_targets(api(x[i : i + chunk]), api) for i in range(0, len(x), chunk)]
    targets = torch.cat(rows)
    if not soft:
        targets = F.one_hot(targets.argmax(1), api.num_classes).float()
    return targets


def _jacobian_step(sub: nn.Module, x: torch.Tensor, labels: torch.Tensor, step: float) -> torch.Tensor:
    device = model_device(sub)
    out = []
    with eval_mode(sub):
        for i in range(0, len(x), 512):
            xb = x[i : i + 512].to(device).clone().requires_grad_(True)
            logits = sub(xb)
            chosen = logits.gather(1, labels[i : i + 512].to(device).view(-1, 1)).sum()
            (g,) = torch.autograd.grad(chosen, xb)
            out.append((xb.detach() + step * g.sign()).clamp(0, 1).cpu())
    return torch.cat(out)


def extract(
    api: PredictionAPI,
    pool: LabData | torch.Tensor | None = None,
    *,
    budget: int | None = None,
    strategy: Strategy = "natural",
    checkpoints: Sequence[int] | None = None,
    eval_data: LabData,
    substitute: Callable[[], nn.Module] | None = None,
    soft: bool = True,
    epochs: int = 20,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed_size: int = 100,
    step: float = 0.1,
    query_batch: int = 256,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> ExtractionResult:
    """Steal ``api``'s model with at most ``budget`` queries; record fidelity against queries.

    At every checkpoint (a number of queries answered so far) a fresh substitute, with the
    same seeded initialisation each time, is trained on all the answers so far, so the
    fidelity at a checkpoint depends only on the queries up to it.

    Reference (Jacobian augmentation): Papernot, McDaniel, Goodfellow, Jha, Celik and Swami,
    "Practical Black-Box Attacks against Machine Learning", AsiaCCS 2017, arXiv:1602.02697.
    For extraction through prediction APIs in general: Tramèr, Zhang, Juels, Reiter and
    Ristenpart, "Stealing Machine Learning Models via Prediction APIs", USENIX Security 2016,
    arXiv:1609.02943.

    Parameters
    ----------
    api:
        The victim behind its API. Every query counts against its budget and is logged.
    pool:
        The attacker's unlabelled inputs (labels of a LabData are ignored): the queries of
        ``"natural"`` (in order) and the seed set of ``"jacobian"``. Not needed for ``"random"``.
    budget:
        Queries to spend (default: what is left of the API's budget); must be positive.
    strategy:
        ``"natural"``, ``"random"`` or ``"jacobian"`` (see the module docstring).
    checkpoints:
        Query counts at which to train and measure (``"natural"``/``"random"``; default
        ``budget/8, budget/4, budget/2, budget``). ``"jacobian"`` measures after each round
        (``seed_size``, then doubling).
    eval_data:
        Held-out labelled data on which the *lab* measures fidelity and accuracy; the victim's
        predictions on it are computed directly and cost no queries.
    substitute:
        ``() -> nn.Module`` making an untrained substitute (default: a small CNN, width 16).
    soft:
        Train on the revealed probabilities (else on the top label only).
    epochs, lr, batch_size:
        Substitute training at each checkpoint.
    seed_size, step:
        Jacobian augmentation: initial natural queries and :math:`\\lambda`.
    query_batch:
        Queries per API call. Against a rate-limited API keep it at most the API's ``burst``;
        a :class:`~labkit.serving.RateLimitExceeded` is not caught (pacing is the attacker's job).
    generator:
        Seeds the random queries, the subsampling and the substitute's initialisation.
    progress:
        Show a progress bar over checkpoints.

    Returns
    -------
    ExtractionResult
    """
    if not isinstance(api, PredictionAPI):
        raise TypeError(f"api must be a labkit.serving.PredictionAPI, got {type(api).__name__}")
    if strategy not in ("natural", "random", "jacobian"):
        raise ValueError(f"strategy must be 'natural', 'random' or 'jacobian', got {strategy!r}")
    eval_data = check_data(eval_data, "eval_data")
    if budget is None:
        budget = api.queries_left
        if budget is None:
            raise ValueError("budget must be given when the API has no query budget")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"budget must be an integer number of queries, got {type(budget).__name__}")
    if budget <= 0:
        raise ValueError(f"budget must be a positive number of queries, got {budget}")
    if api.queries_left is not None and budget > api.queries_left:
        raise ValueError(f"budget={budget} is more than the {api.queries_left} queries the API has left")
    epochs = check_int(epochs, "epochs")
    lr = check_positive(lr, "lr")
    query_batch = check_int(query_batch, "query_batch")
    shape = api.input_shape
    if pool is not None:
        x_pool = pool.x if isinstance(pool, LabData) else pool
        if not isinstance(x_pool, torch.Tensor):
            raise TypeError(f"pool must be a LabData or a tensor of inputs, got {type(pool).__name__}")
        check_images(x_pool, name="pool", shape=shape, value_range=api.model.value_range)
        x_pool = x_pool.detach().cpu()
    elif strategy != "random":
        raise ValueError(f"strategy {strategy!r} needs a pool of natural inputs")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    init_seed = draw_seed(gen)

    def make() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            if substitute is not None:
                return substitute()
            return image_model(shape, api.num_classes, width=16).to(model_device(api.model))

    victim_pred = predict(api.model, eval_data.x.to(model_device(api.model))).cpu()
    victim_acc = float((victim_pred == eval_data.y.cpu()).float().mean())

    def measure(sub: nn.Module, used: int) -> dict[str, float]:
        pred = predict(sub, eval_data.x.to(model_device(sub))).cpu()
        return {
            "queries": float(used),
            "fidelity": float((pred == victim_pred).float().mean()),
            "accuracy": float((pred == eval_data.y.cpu()).float().mean()),
        }

    def fit(x: torch.Tensor, t: torch.Tensor) -> nn.Module:
        sub = make()
        fit_soft(
            sub,
            x,
            t,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(init_seed),
        )
        return sub

    curve: list[dict[str, float]] = []
    sub: nn.Module | None = None
    if strategy in ("natural", "random"):
        marks = sorted(
            {int(c) for c in (checkpoints or [budget // 8, budget // 4, budget // 2, budget]) if int(c) > 0}
        )
        if marks[-1] > budget:
            raise ValueError(f"checkpoint {marks[-1]} is beyond the budget of {budget} queries")
        if strategy == "natural":
            assert x_pool is not None
            if len(x_pool) < marks[-1]:
                raise ValueError(
                    f"the pool has {len(x_pool)} inputs, fewer than the {marks[-1]} queries planned"
                )
            queries = x_pool[: marks[-1]]
        else:
            low, high = api.model.value_range or (0.0, 1.0)
            queries = low + (high - low) * torch.rand((marks[-1], *shape), generator=gen)
        targets = torch.zeros(0, api.num_classes)
        done = 0
        for mark in tqdm(marks, desc="extraction", disable=not progress):
            targets = torch.cat([targets, _query(api, queries[done:mark], query_batch, soft)])
            done = mark
            sub = fit(queries[:mark], targets)
            curve.append(measure(sub, mark))
    else:
        assert x_pool is not None
        seed_size = check_int(seed_size, "seed_size")
        check_positive(step, "step")
        known = x_pool[: min(seed_size, budget, len(x_pool))]
        targets = _query(api, known, query_batch, soft)
        used = len(known)
        rounds = 0
        bar = tqdm(desc="extraction (jacobian)", disable=not progress, total=budget, initial=used)
        while True:
            sub = fit(known, targets)
            curve.append(measure(sub, used))
            left = budget - used
            if left <= 0:
                break
            # Papernot et al.'s periodic step: the sign flips every 3 rounds to stay near the data.
            lam = step * (-1) ** (rounds // 3)
            pick = torch.arange(len(known))
            if len(known) > left:  # not enough budget to augment every point: a random subset
                pick = torch.randperm(len(known), generator=gen)[:left]
            new = _jacobian_step(sub, known[pick], targets[pick].argmax(1), lam)
            new_targets = _query(api, new, query_batch, soft)
            known = torch.cat([known, new])
            targets = torch.cat([targets, new_targets])
            used += len(new)
            rounds += 1
            bar.update(len(new))
        bar.close()
    assert sub is not None
    return ExtractionResult(
        model=sub.eval(),
        curve=curve,
        victim_accuracy=victim_acc,
        strategy=strategy,
        output=api.output if api.rounding is None else f"{api.output}, rounded to {api.rounding}",
        info={"soft": soft, "epochs": epochs},
    )


@dataclass(frozen=True)
class TransferResult:
    """How adversarial examples crafted on a substitute fare against the victim.

    ``transfer_rate`` is the share of examples the victim classified correctly before that it
    misclassifies after; ``noise_rate`` is the same for random sign noise of the same size, the
    baseline that shows the effect is not just any perturbation.
    """

    eps: float
    substitute_clean: float
    substitute_adv: float
    victim_clean: float
    victim_adv: float
    transfer_rate: float
    noise_rate: float

    def _repr_markdown_(self) -> str:
        return "\n".join(
            [
                f"**Transfer attack** (ε = {self.eps:g})",
                "",
                "| | clean accuracy | adversarial accuracy |",
                "|---|---:|---:|",
                f"| substitute (white-box) | {100 * self.substitute_clean:.1f}% "
                f"| {100 * self.substitute_adv:.1f}% |",
                f"| victim (transfer) | {100 * self.victim_clean:.1f}% | {100 * self.victim_adv:.1f}% |",
                "",
                f"Transfer rate {100 * self.transfer_rate:.1f}% (random noise of the same size: "
                f"{100 * self.noise_rate:.1f}%).",
            ]
        )


def _labels(target: nn.Module | PredictionAPI, x: torch.Tensor) -> torch.Tensor:
    if isinstance(target, PredictionAPI):
        return revealed_probabilities(target, x).argmax(1)
    return predict(target, x.to(model_device(target))).cpu()


def transfer_attack(
    substitute: nn.Module,
    victim: nn.Module | PredictionAPI,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 10,
    attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> TransferResult:
    """Craft adversarial examples on the (stolen) substitute and test them on the victim.

    Uses ``labkit.attacks.pgd(substitute, x, y, eps=eps, steps=steps)`` (L-inf) unless another
    ``(model, x, y) -> x_adv`` attack is given. A victim behind a
    :class:`~labkit.serving.PredictionAPI` is queried through it (the queries count).

    Reference: Papernot et al., "Practical Black-Box Attacks against Machine Learning",
    arXiv:1602.02697.
    """
    if not isinstance(substitute, nn.Module):
        raise TypeError(f"substitute must be a torch.nn.Module, got {type(substitute).__name__}")
    eps = float(eps)
    if not 0 < eps <= 1:
        raise ValueError(f"eps must be in (0, 1] (pixel units), got {eps}")
    if attack is None:
        try:
            from labkit.attacks import pgd
        except ImportError as err:  # pragma: no cover - depends on the attacks package
            raise ImportError("transfer_attack needs labkit.attacks.pgd, or pass attack=") from err

        def attack(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return pgd(m, xb, yb, eps=eps, steps=steps, generator=generator)

    device = model_device(substitute)
    x_dev, y_dev = x.to(device), y.to(device)
    x_adv = attack(substitute, x_dev, y_dev).detach()
    signs = torch.randint(0, 2, x_dev.shape, generator=generator).to(device, x_dev.dtype) * 2 - 1
    noise = (x_dev + eps * signs).clamp(0, 1)
    yc = y.cpu()
    sub_clean = float((_labels(substitute, x_dev) == yc).float().mean())
    sub_adv = float((_labels(substitute, x_adv) == yc).float().mean())
    v_clean_pred = _labels(victim, x_dev)
    v_adv_pred = _labels(victim, x_adv)
    v_noise_pred = _labels(victim, noise)
    correct = v_clean_pred == yc
    denom = max(int(correct.sum()), 1)
    return TransferResult(
        eps=eps,
        substitute_clean=sub_clean,
        substitute_adv=sub_adv,
        victim_clean=float(correct.float().mean()),
        victim_adv=float((v_adv_pred == yc).float().mean()),
        transfer_rate=float((correct & (v_adv_pred != yc)).sum()) / denom,
        noise_rate=float((correct & (v_noise_pred != yc)).sum()) / denom,
    )
