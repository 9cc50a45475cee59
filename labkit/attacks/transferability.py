"""How well adversarial examples transfer between models.

The transfer rate from a source model :math:`f_s` to a target :math:`f_t` is, over the examples
both classify correctly,

.. math::

    \\mathrm{rate}(s \\to t) = \\Pr\\big[f_t(A(f_s, x, y)) \\ne y \\;\\big|\\;
        f_s(x) = y,\\ f_t(x) = y\\big],

and for ``s = t`` it is the white-box success rate. :func:`transfer_rate` measures one pair,
:func:`transfer_matrix` every pair of a set of models. The attacks that craft on a surrogate are
in :mod:`labkit.attacks.transfer`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit.attacks.threat import bounds_of, check_attack_inputs
from labkit.attacks.whitebox import Attack

__all__ = ["TransferMatrix", "transfer_matrix", "transfer_rate"]


# --------------------------------------------------------------------------------------------
# Measuring transfer
# --------------------------------------------------------------------------------------------


def _fooled(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eligible, fooled): clean-correct (targeted: not already the target) and attack success."""
    bounds = bounds_of(model)
    clean = check_attack_inputs(model, x, y, eps=None, norm="linf", bounds=bounds, stacklevel=3).argmax(1)
    adv = check_attack_inputs(model, x_adv, y, eps=None, norm="linf", bounds=bounds, stacklevel=3).argmax(1)
    if targeted:
        return clean != y, adv == y
    return clean == y, adv != y


def _rate(eligible: torch.Tensor, fooled: torch.Tensor, what: str) -> float:
    count = int(eligible.sum())
    if count == 0:
        raise ValueError(f"no example is {what}, so there is nothing to measure transfer on")
    return int((eligible & fooled).sum()) / count


def transfer_rate(
    source: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    targeted: bool = False,
) -> float:
    """Fraction of adversarial examples crafted on ``source`` that fool ``target``, in ``[0, 1]``.

    ``x_adv = attack(source, x, y)``; the rate counts, among the examples that *both* models
    classify correctly, those ``target`` misclassifies on ``x_adv`` (see the module docstring).
    Targeted (``y`` holds the targets): among the examples neither model already assigns to
    the target, those ``target`` sends to it. With ``source is target`` it is the white-box
    success rate.

    Parameters
    ----------
    source, target:
        The surrogate the attack sees, and the model it is meant for.
    x, y:
        Clean inputs and ``int64`` labels (targets when ``targeted``).
    attack:
        Any ``(model, x, y) -> x_adv``, e.g. ``partial(lk.attacks.mi_fgsm, eps=0.1)``.
    targeted:
        Measure reaching the classes in ``y`` instead of leaving them; the attack itself must be
        targeted too (``partial(mi_fgsm, eps=0.1, targeted=True)``).

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...     _ = net[1].bias.zero_()
    >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = model.predict(x)
    >>> 0 < transfer_rate(model, model, x, y, partial(lk.attacks.mi_fgsm, eps=0.1)) <= 1
    True
    """
    if not callable(attack):
        raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
    x_adv = attack(source, x, y)
    if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
        got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
        raise ValueError(f"attack returned {got}, expected a tensor of shape {tuple(x.shape)}")
    ok_source, _ = _fooled(source, x, x, y, targeted)
    ok_target, fooled = _fooled(target, x, x_adv, y, targeted)
    what = "correctly classified by both models" if not targeted else "off target for both models"
    return _rate(ok_source & ok_target, fooled, what)


@dataclass(frozen=True)
class TransferMatrix:
    """Transfer rates between models: ``rates[i][j]`` from source ``names[i]`` to target ``names[j]``.

    The diagonal holds the white-box success rates.
    """

    names: list[str]
    rates: list[list[float]]
    attack: str = "attack"

    def rate(self, source: str, target: str) -> float:
        """The rate from ``source`` to ``target`` (by name)."""
        return self.rates[self.names.index(source)][self.names.index(target)]

    def _repr_markdown_(self) -> str:
        head = "| source \\ target | " + " | ".join(self.names) + " |"
        lines = [head, "|---" * (len(self.names) + 1) + "|"]
        for name, row in zip(self.names, self.rates, strict=True):
            lines.append(f"| {name} | " + " | ".join(f"{r:.1%}" for r in row) + " |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """The matrix as a heat map, rates written in the cells."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(1.2 * len(self.names) + 2, 1.1 * len(self.names) + 1))
        ax.imshow(self.rates, vmin=0, vmax=1, cmap="viridis")
        ticks = range(len(self.names))
        ax.set_xticks(ticks, self.names, rotation=30, ha="right")
        ax.set_yticks(ticks, self.names)
        ax.set_xlabel("target")
        ax.set_ylabel("source (surrogate)")
        for i, row in enumerate(self.rates):
            for j, r in enumerate(row):
                ax.text(j, i, f"{r:.0%}", ha="center", va="center", color="white" if r < 0.6 else "black")
        ax.set_title(f"transfer rate, {self.attack}")
        ax.figure.tight_layout()
        return ax.figure


def transfer_matrix(
    models: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    targeted: bool = False,
    name: str | None = None,
) -> TransferMatrix:
    """Transfer rates between every pair of ``models``, crafting once per source.

    Entry ``(i, j)`` is :func:`transfer_rate` from model ``i`` to model ``j``, computed over the
    examples that both classify correctly (so each entry has its own denominator).

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
    >>> with torch.no_grad():
    ...     for net, sign in zip(nets, (1.0, 2.0)):
    ...         _ = net[1].weight.copy_(sign * torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
    ...         _ = net[1].bias.zero_()
    >>> models = {f"m{i}": lk.LabModel(n, input_shape=(1, 2, 2), num_classes=2).eval()
    ...           for i, n in enumerate(nets)}
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = models["m0"].predict(x)
    >>> matrix = transfer_matrix(models, x, y, partial(lk.attacks.mi_fgsm, eps=0.1))
    >>> matrix.names, matrix.rate("m0", "m1") == matrix.rate("m0", "m0")
    (['m0', 'm1'], True)
    """
    if not isinstance(models, Mapping) or len(models) == 0:
        raise ValueError(
            "models must be a non-empty mapping of names to models, e.g. {'cnn': cnn, 'mlp': mlp}"
        )
    if not callable(attack):
        raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
    names = list(models)
    eligible = {k: _fooled(m, x, x, y, targeted)[0] for k, m in models.items()}
    rates: list[list[float]] = []
    what = "correctly classified by both models" if not targeted else "off target for both models"
    for source in names:
        x_adv = attack(models[source], x, y)
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            raise ValueError(f"attack returned something other than a tensor of shape {tuple(x.shape)}")
        row = []
        for target in names:
            _, fooled = _fooled(models[target], x, x_adv, y, targeted)
            row.append(_rate(eligible[source] & eligible[target], fooled, f"{what} ({source}, {target})"))
        rates.append(row)
    label = (
        name
        or getattr(attack, "__name__", None)
        or getattr(getattr(attack, "func", None), "__name__", "attack")
    )
    return TransferMatrix(names=names, rates=rates, attack=str(label))
