"""How different are the members? Disagreement, transfer between members, and diverse families.

An ensemble only helps when its members make *different* mistakes. Two measures:

* :func:`disagreement`: how often two members predict different classes on the same inputs,
  :math:`d(i, j) = \\Pr_x[f_i(x) \\ne f_j(x)]`, for clean or adversarial inputs;
* :func:`member_transfer`: how often adversarial examples crafted on one member fool another
  (:func:`labkit.attacks.transfer_matrix`); low off-diagonal rates mean diverse members.

:func:`train_family` trains a family of members that differ in what an ensemble designer
controls: architecture (CNN or MLP), width, seed, and training (standard or adversarial).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from labkit.attacks.transfer import TransferMatrix, train_surrogate, transfer_matrix
from labkit.attacks.whitebox import Attack
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.ensembles.ensemble import Ensemble
from labkit.utils import eval_mode

__all__ = [
    "FAMILIES",
    "Disagreement",
    "MemberSpec",
    "disagreement",
    "member_transfer",
    "train_family",
]


def _named(models: Ensemble | Mapping[str, nn.Module] | Sequence[nn.Module]) -> dict[str, nn.Module]:
    if isinstance(models, Ensemble):
        return dict(models.named_members())
    if isinstance(models, Mapping):
        named = {str(k): v for k, v in models.items()}
    elif isinstance(models, Sequence) and not isinstance(models, str | bytes):
        named = {f"member{i}": m for i, m in enumerate(models)}
    else:
        raise TypeError(
            f"models must be an Ensemble, a list or a dict of models, got {type(models).__name__}"
        )
    if len(named) < 2:
        raise ValueError(f"diversity needs at least two models, got {len(named)}")
    for name, m in named.items():
        if not isinstance(m, nn.Module):
            raise TypeError(f"model {name!r} must be a torch.nn.Module, got {type(m).__name__}")
    return named


@dataclass(frozen=True)
class Disagreement:
    """Pairwise disagreement rates: ``matrix[i][j]`` = fraction of inputs where ``i`` and ``j`` differ."""

    names: list[str]
    matrix: list[list[float]]
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean over the pairs ``i < j``."""
        n = len(self.names)
        pairs = [self.matrix[i][j] for i in range(n) for j in range(i + 1, n)]
        return sum(pairs) / len(pairs)

    def _repr_markdown_(self) -> str:
        head = "| | " + " | ".join(self.names) + (" | accuracy |" if self.accuracy else " |")
        lines = [head, "|---" * (len(self.names) + 1 + bool(self.accuracy)) + "|"]
        for name, row in zip(self.names, self.matrix, strict=True):
            cells = " | ".join(f"{r:.1%}" for r in row)
            acc = f" | {self.accuracy[name]:.1%}" if self.accuracy else ""
            lines.append(f"| {name} | {cells}{acc} |")
        lines.append("")
        lines.append(f"mean pairwise disagreement: {self.mean:.1%}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """The matrix as a heat map."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(1.1 * len(self.names) + 2, 1.0 * len(self.names) + 1))
        ax.imshow(self.matrix, vmin=0, vmax=max(0.05, max(max(r) for r in self.matrix)), cmap="magma")
        ticks = range(len(self.names))
        ax.set_xticks(ticks, self.names, rotation=30, ha="right")
        ax.set_yticks(ticks, self.names)
        for i, row in enumerate(self.matrix):
            for j, r in enumerate(row):
                ax.text(j, i, f"{r:.0%}", ha="center", va="center", color="white")
        ax.set_title("pairwise disagreement")
        ax.figure.tight_layout()
        return ax.figure


@torch.no_grad()
def disagreement(
    models: Ensemble | Mapping[str, nn.Module] | Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    batch_size: int = 512,
) -> Disagreement:
    """How often each pair of models predicts different classes on ``x``.

    .. math::

        d(i, j) = \\frac{1}{N} \\sum_{n=1}^{N}
        \\mathbb{1}\\big[\\arg\\max f_i(x_n) \\ne \\arg\\max f_j(x_n)\\big]

    With labels ``y`` each model's accuracy is reported too. Pass adversarial inputs to see
    whether members are fooled the *same* way.

    Examples
    --------
    >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(3)]
    >>> x = torch.rand(32, 1, 2, 2)
    >>> d = disagreement(nets, x)
    >>> len(d.matrix), d.matrix[0][0]
    (3, 0.0)
    """
    named = _named(models)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch of inputs (N, ...)")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],)):
        raise ValueError(f"y must be a tensor of {x.shape[0]} labels, got {getattr(y, 'shape', y)}")
    preds = {}
    for name, m in named.items():
        with eval_mode(m):
            preds[name] = torch.cat(
                [m(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]
            )
    names = list(named)
    stacked = torch.stack([preds[n] for n in names])  # (M, N)
    matrix = (stacked[:, None, :] != stacked[None, :, :]).float().mean(dim=2).tolist()
    accuracy = {}
    if y is not None:
        accuracy = dict(
            zip(names, (stacked == y.to(stacked.device)).float().mean(dim=1).tolist(), strict=True)
        )
    return Disagreement(names=names, matrix=matrix, accuracy=accuracy)


def member_transfer(
    models: Ensemble | Mapping[str, nn.Module] | Sequence[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    name: str | None = None,
) -> TransferMatrix:
    """Transfer rates between the members: :func:`labkit.attacks.transfer_matrix` over them.

    Entry ``(i, j)`` is the fraction of adversarial examples crafted on member ``i`` that fool
    member ``j`` (among inputs both classify correctly); the diagonal is each member's
    white-box success rate.

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
    >>> members = [LabModel(n, input_shape=(1, 2, 2), num_classes=2).eval() for n in nets]
    >>> x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = members[0].predict(x)
    >>> m = member_transfer(members, x, y, partial(lk.attacks.pgd, eps=0.5, steps=5))
    >>> m.names, len(m.rates)
    (['member0', 'member1'], 2)
    """
    return transfer_matrix(_named(models), x, y, attack, name=name)


@dataclass(frozen=True)
class MemberSpec:
    """How to train one member: architecture, size, seed, and training method.

    Attributes
    ----------
    family:
        ``"cnn"`` (a :class:`~labkit.models.SmallCNN`) or ``"mlp"``.
    width:
        Channels of the CNN's first block.
    hidden:
        Layer sizes of the MLP.
    seed:
        Initialisation, shuffling and dropout seed.
    training:
        ``"standard"``, or ``"fgsm_rs"`` for a quick adversarially trained member at ``eps``.
    eps:
        Radius for ``training="fgsm_rs"``.
    """

    family: Literal["cnn", "mlp"] = "cnn"
    width: int = 16
    hidden: tuple[int, ...] = (256, 128)
    seed: int = 0
    training: Literal["standard", "fgsm_rs"] = "standard"
    eps: float = 0.1

    @property
    def name(self) -> str:
        size = f"w{self.width}" if self.family == "cnn" else "x".join(map(str, self.hidden))
        extra = "" if self.training == "standard" else f"-{self.training}"
        return f"{self.family}-{size}-s{self.seed}{extra}"


FAMILIES: dict[str, list[MemberSpec]] = {
    "seeds": [MemberSpec(seed=s) for s in (0, 1, 2)],
    "widths": [MemberSpec(width=w, seed=i) for i, w in enumerate((8, 16, 32))],
    "architectures": [
        MemberSpec(family="cnn", width=16, seed=0),
        MemberSpec(family="mlp", hidden=(256, 128), seed=1),
        MemberSpec(family="cnn", width=32, seed=2),
    ],
    "training": [
        MemberSpec(seed=0),
        MemberSpec(seed=1, training="fgsm_rs"),
        MemberSpec(family="mlp", seed=2),
    ],
}
"""Ready-made families: same architecture with different seeds, different widths, different
architectures, and different training (standard and FGSM-RS adversarial)."""


def train_family(
    data: LabData,
    family: str | Sequence[MemberSpec] = "architectures",
    *,
    epochs: int = 10,
    progress: bool = False,
) -> dict[str, LabModel]:
    """Train a family of diverse members on ``data``; returns ``{name: model}``.

    Parameters
    ----------
    data:
        Training images.
    family:
        A key of :data:`FAMILIES` or a list of :class:`MemberSpec`.
    epochs:
        Epochs per member.
    progress:
        Show progress bars.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> family = train_family(data, [MemberSpec(width=8), MemberSpec(family="mlp")], epochs=1)
    >>> list(family)
    ['cnn-w8-s0', 'mlp-256x128-s0']
    """
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(
                f"unknown family {family!r}; choose one of {', '.join(FAMILIES)} or pass MemberSpecs"
            )
        specs = FAMILIES[family]
    else:
        specs = list(family)
    if not specs:
        raise ValueError("family is empty: give at least one MemberSpec")
    out: dict[str, LabModel] = {}
    for spec in specs:
        if not isinstance(spec, MemberSpec):
            raise TypeError(f"family members must be MemberSpec, got {type(spec).__name__}")
        model = train_surrogate(
            data,
            family=spec.family,
            seed=spec.seed,
            epochs=epochs,
            width=spec.width,
            hidden=spec.hidden,
            progress=progress,
        )
        if spec.training == "fgsm_rs":
            from labkit.hardening.training import fast_at

            fast_at(
                model,
                data,
                eps=spec.eps,
                epochs=epochs,
                generator=torch.Generator().manual_seed(spec.seed),
                progress=progress,
            )
        elif spec.training != "standard":
            raise ValueError(f"training must be 'standard' or 'fgsm_rs', got {spec.training!r}")
        model.meta = {**model.meta, "spec": spec.name}
        name = spec.name
        k = 1
        while name in out:
            k += 1
            name = f"{spec.name}#{k}"
        out[name] = model
    return out
