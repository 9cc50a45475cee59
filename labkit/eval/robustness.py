"""Robustness evaluation: several attacks, several budgets, worst case per example, with error bars.

For a model :math:`f`, attacks :math:`A_1, \\dots, A_k` and a budget :math:`\\epsilon`, an example
:math:`(x, y)` counts as robust when the model is right on it and on every attack's output:

.. math::

    \\mathrm{robust}_\\epsilon(x, y) = \\mathbb{1}[f(x) = y]
    \\prod_{j=1}^{k} \\mathbb{1}[f(A_j(f, x, y, \\epsilon)) = y].

The worst-case (per-example) robust accuracy is the mean of that indicator; it is never higher
than the accuracy under any single attack, and it is what a defence should be judged on
(Croce and Hein, AutoAttack, arXiv:2003.01690). Accuracies come with exact Clopper-Pearson
intervals, because a few hundred test images leave several points of sampling error.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from labkit.attacks.contract import adversarial_points, takes_budget
from labkit.attacks.threat import Norm, bounds_of, check_attack_inputs, check_eps
from labkit.config import Profile
from labkit.contract import LabModel
from labkit.data.base import LabData, as_xy
from labkit.eval.ensemble import EnsembleBudget, EnsembleResult, worst_case
from labkit.eval.stats import check_alpha, clopper_pearson
from labkit.utils import eval_mode

__all__ = ["RobustnessReport", "robustness"]

EpsAttack = Callable[..., Any]
"""``(model, x, y, *, eps) -> x_adv`` (or a result with ``.x_adv``, as black-box attacks return)."""


def _run(
    attack: EpsAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None
) -> torch.Tensor:
    out = attack(model, x, y) if eps is None else attack(model, x, y, eps=eps)
    try:
        x_adv = adversarial_points(out)
    except TypeError:
        raise ValueError(
            f"attack returned {type(out).__name__}, expected a tensor of shape {tuple(x.shape)}"
        ) from None
    if x_adv.shape != x.shape:
        raise ValueError(f"attack returned {tuple(x_adv.shape)}, expected a tensor of shape {tuple(x.shape)}")
    return x_adv


@dataclass
class RobustnessReport:
    """Clean, per-attack and worst-case robust accuracy at each epsilon, with confidence intervals.

    Attributes
    ----------
    eps:
        The budgets, in the order given.
    attacks:
        The attack names.
    clean:
        ``bool`` ``(N,)``: the model is right on the clean input.
    correct:
        ``{attack: bool (len(eps), N)}``: right on the clean input *and* on that attack's output.
    worst:
        ``bool`` ``(len(eps), N)``: right on the clean input and on every attack's output.
    confidence:
        Level of the Clopper-Pearson intervals.
    """

    eps: list[float]
    attacks: list[str]
    clean: torch.Tensor
    correct: dict[str, torch.Tensor]
    worst: torch.Tensor
    confidence: float = 0.95
    model_name: str = "model"
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of examples evaluated."""
        return int(self.clean.numel())

    def _column(self, what: str) -> torch.Tensor:
        if what == "clean":
            return self.clean.unsqueeze(0).expand(len(self.eps), -1)
        if what == "worst":
            return self.worst
        if what not in self.correct:
            raise KeyError(f"no attack {what!r}; choose 'clean', 'worst' or one of {self.attacks}")
        return self.correct[what]

    def _index(self, eps: float) -> int:
        for i, e in enumerate(self.eps):
            if abs(e - eps) <= 1e-12:
                return i
        raise KeyError(f"eps {eps} was not evaluated; evaluated {self.eps}")

    def accuracy(self, what: str = "worst", eps: float | None = None) -> float:
        """Accuracy of ``what`` (``"clean"``, ``"worst"`` or an attack) at ``eps`` (default: the last)."""
        i = len(self.eps) - 1 if eps is None else self._index(eps)
        return float(self._column(what)[i].float().mean())

    def interval(self, what: str = "worst", eps: float | None = None) -> tuple[float, float]:
        """Clopper-Pearson interval of :meth:`accuracy`."""
        i = len(self.eps) - 1 if eps is None else self._index(eps)
        k = int(self._column(what)[i].sum())
        return clopper_pearson(k, self.n, confidence=self.confidence)

    def table(self) -> list[dict[str, Any]]:
        """One dict per epsilon: ``eps``, then ``(accuracy, low, high)`` per column."""
        rows = []
        for e in self.eps:
            row: dict[str, Any] = {"eps": e}
            for what in ["clean", *self.attacks, "worst"]:
                row[what] = (self.accuracy(what, e), *self.interval(what, e))
            rows.append(row)
        return rows

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        head = ["eps", "clean", *self.attacks, "worst case"]
        body = []
        for row in self.table():
            cells = [f"{row['eps']:.4g}"]
            for what in ["clean", *self.attacks, "worst"]:
                acc, low, high = row[what]
                cells.append(f"{acc:.1%} [{low:.1%}, {high:.1%}]")
            body.append(cells)
        return head, body

    def _repr_markdown_(self) -> str:
        head, body = self._cells()
        lines = [
            f"**Robust accuracy of {self.model_name}** ({self.n} examples, "
            f"{self.confidence:.0%} Clopper-Pearson intervals)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head, body = self._cells()
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        trs = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body
        )
        caption = (
            f"Robust accuracy of {html.escape(self.model_name)} ({self.n} examples, "
            f"{self.confidence:.0%} Clopper-Pearson intervals)"
        )
        return f"<table><caption>{caption}</caption><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"

    def __repr__(self) -> str:
        return (
            f"RobustnessReport(n={self.n}, eps={self.eps}, attacks={self.attacks}, "
            f"worst={self.accuracy('worst'):.3f})"
        )

    def plot(self, ax: Any = None) -> Any:
        """Accuracy against epsilon for each attack and the worst case, with interval bands."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 3.5))
        for what in [*self.attacks, "worst"]:
            accs = [self.accuracy(what, e) for e in self.eps]
            bands = [self.interval(what, e) for e in self.eps]
            style = {"linewidth": 2.5, "color": "black"} if what == "worst" else {}
            ax.plot(self.eps, accs, marker="o", label="worst case" if what == "worst" else what, **style)
            ax.fill_between(
                self.eps,
                [b[0] for b in bands],
                [b[1] for b in bands],
                alpha=0.15,
                **({"color": "black"} if what == "worst" else {}),
            )
        ax.set_xlabel("epsilon")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"robustness of {self.model_name}")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
        ax.figure.tight_layout()
        return ax.figure


def robustness(
    model: nn.Module,
    data: LabData | tuple[torch.Tensor, torch.Tensor],
    *,
    attacks: Mapping[str, EpsAttack] | None = None,
    eps: float | Sequence[float],
    n: int | None = None,
    batch_size: int = 256,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
    profile: str | Profile | EnsembleBudget | None = None,
) -> RobustnessReport:
    """Evaluate ``model`` against several attacks at several budgets, worst case per example.

    Every attack is called as ``attack(model, x, y, eps=e)`` for each ``e`` in ``eps`` (an
    ``eps`` already bound with ``functools.partial`` is overridden); an attack that takes no
    ``eps`` is run once per budget as it is. Black-box attacks returning a result with
    ``.x_adv`` work too. At ``eps = 0`` no attack runs: robust accuracy is clean accuracy.

    Parameters
    ----------
    model:
        The classifier (a :class:`~labkit.LabModel` or any module returning logits).
    data:
        A :class:`~labkit.data.LabData` or a tuple ``(x, y)``.
    attacks:
        ``{name: attack}``. Default: the AutoAttack-strength ensemble of
        :func:`~labkit.eval.worst_case` (APGD-CE, APGD-DLR, BPDA/EOT variants where the model's
        gradients look masked, Square), each attack run only on the examples no earlier one
        broke. Its columns then count, per attack, the examples it broke first; the worst case
        is exact either way.
    eps:
        One budget or a list (a sweep), in pixel units, each ``>= 0``.
    n:
        Evaluate only the first ``n`` examples.
    batch_size:
        Examples per attack call.
    confidence:
        Level of the Clopper-Pearson intervals, in (0, 1).
    generator:
        Seeds the default attacks.
    profile:
        Sizes of the default ensemble (a profile name or an
        :class:`~labkit.eval.EnsembleBudget`; default the active profile).

    Returns
    -------
    RobustnessReport
        A table (``_repr_markdown_``/``_repr_html_``), ``.plot()``, and per-example results.

    Examples
    --------
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> small = lk.eval.EnsembleBudget(apgd_steps=10, square_queries=50)
    >>> report = robustness(model, (x, model.predict(x)), eps=[0.0, 0.1], profile=small)
    >>> report.accuracy("clean"), report.accuracy("worst", 0.1) <= report.accuracy("apgd-ce", 0.1)
    (1.0, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    eps_list = [eps] if isinstance(eps, int | float) else list(eps)
    if not eps_list:
        raise ValueError("eps is empty: give at least one budget, e.g. eps=[0, 0.05, 0.1]")
    # The default attacks are L-inf, so their budgets are capped here; a caller's own attacks
    # check their budgets against their own norm when they run.
    norm: Norm | None = "linf" if attacks is None else None
    eps_values = [check_eps(e, norm=norm, bounds=bounds_of(model)) for e in eps_list]
    confidence = check_alpha(confidence, "confidence")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if attacks is None:
        return _ensemble_report(model, data, eps_values, n, batch_size, confidence, generator, profile)
    chosen = dict(attacks)
    if not chosen:
        raise ValueError(
            "attacks is empty: give at least one, e.g. {'pgd': partial(lk.attacks.pgd, steps=20)}"
        )
    for name, a in chosen.items():
        if not callable(a):
            raise TypeError(
                f"attack {name!r} must be callable (model, x, y, *, eps) -> x_adv, got {type(a).__name__}"
            )
    takes_eps = {name: takes_budget(a) for name, a in chosen.items()}
    x, y = as_xy(data, n)
    import time

    start = time.perf_counter()
    bounds = bounds_of(model)
    device = next((p.device for p in model.parameters()), x.device)
    clean_parts: list[torch.Tensor] = []
    per_attack: dict[str, list[list[torch.Tensor]]] = {a: [[] for _ in eps_values] for a in chosen}
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        clean_ok = check_attack_inputs(model, xb, yb, eps=None, norm="linf", bounds=bounds).argmax(1) == yb
        clean_parts.append(clean_ok)
        for j, e in enumerate(eps_values):
            for name, attack in chosen.items():
                if e == 0:
                    per_attack[name][j].append(clean_ok)
                    continue
                x_adv = _run(attack, model, xb, yb, e if takes_eps[name] else None)
                with torch.no_grad(), eval_mode(model):
                    adv_ok = model(x_adv).argmax(1) == yb
                per_attack[name][j].append(clean_ok & adv_ok)
    clean = torch.cat(clean_parts).cpu()
    correct = {
        name: torch.stack([torch.cat(parts).cpu() for parts in rows]) for name, rows in per_attack.items()
    }
    worst = clean.unsqueeze(0).expand(len(eps_values), -1).clone()
    for c in correct.values():
        worst &= c
    return RobustnessReport(
        eps=eps_values,
        attacks=list(chosen),
        clean=clean,
        correct=correct,
        worst=worst,
        confidence=confidence,
        model_name=_name(model),
        seconds=time.perf_counter() - start,
    )


def _name(model: nn.Module) -> str:
    return str(
        model.meta.get("name", type(model).__name__) if isinstance(model, LabModel) else type(model).__name__
    )


def _ensemble_report(
    model: nn.Module,
    data: LabData | tuple[torch.Tensor, torch.Tensor],
    eps_values: list[float],
    n: int | None,
    batch_size: int,
    confidence: float,
    generator: torch.Generator | None,
    profile: str | Profile | EnsembleBudget | None,
) -> RobustnessReport:
    """:func:`robustness` with the default ensemble: one :func:`worst_case` run per budget."""
    import time

    start = time.perf_counter()
    x, y = as_xy(data, n)
    device = next((p.device for p in model.parameters()), x.device)
    x, y = x.to(device), y.to(device)
    check_attack_inputs(model, x[:1], y[:1], eps=None, norm="linf", bounds=bounds_of(model))
    runs: list[EnsembleResult] = [
        worst_case(model, x, y, eps=e, profile=profile, batch_size=batch_size, generator=generator)
        for e in eps_values
    ]
    clean = runs[0].clean
    names: list[str] = []
    for run in runs:
        names += [k for k in run.broken_by if k not in names]
    none = torch.zeros_like(clean)
    correct = {k: torch.stack([clean & ~run.broken_by.get(k, none) for run in runs]) for k in names}
    return RobustnessReport(
        eps=eps_values,
        attacks=names,
        clean=clean,
        correct=correct,
        worst=torch.stack([run.robust for run in runs]),
        confidence=confidence,
        model_name=_name(model),
        seconds=time.perf_counter() - start,
        notes={"masking": [run.masking for run in runs], "seconds": [run.seconds for run in runs]},
    )
