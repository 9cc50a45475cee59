"""An ensemble of lab models that is itself a lab model, so every attack works on it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, get_args

import torch
from torch import nn

from labkit.contract import LabModel

__all__ = ["Ensemble", "Reduce"]

Reduce = Literal["mean_logits", "soft_vote", "hard_vote"]
REDUCTIONS: tuple[str, ...] = get_args(Reduce)

# log of the smallest vote share a hard vote reports, so outputs stay finite
_LOG_FLOOR = math.log(1e-6)


def _check_reduce(reduce: object) -> None:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(repr(r) for r in REDUCTIONS)}, got {reduce!r}")


class _Members(nn.Module):
    """Runs every member on the raw input (each normalises it its own way) and reduces."""

    def __init__(self, members: Sequence[LabModel], weights: torch.Tensor, reduce: Reduce) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", weights)
        self.reduce = reduce

    weights: torch.Tensor

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, shape ``(M, N, C)``."""
        outs = []
        for m in self.members:
            assert isinstance(m, LabModel)
            outs.append(m.net((x - m.mean) / m.std))
        return torch.stack(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x)
        w = self.weights.to(logits.dtype).view(-1, 1, 1)
        if self.reduce == "mean_logits":
            return (w * logits).sum(dim=0)
        if self.reduce == "soft_vote":
            # log of the weighted mean probability: a valid logit vector whose softmax is that mean
            return torch.logsumexp(logits.log_softmax(dim=2) + w.log(), dim=0)
        votes = torch.nn.functional.one_hot(logits.argmax(dim=2), logits.shape[2]).to(logits.dtype)
        share = (w * votes).sum(dim=0)
        # ties go to the higher mean probability (a nudge far below one vote)
        nudge = 1e-4 * (w * logits.softmax(dim=2)).sum(dim=0)
        out = torch.log((share + nudge).clamp_min(1e-6)).clamp_min(_LOG_FLOOR).detach()
        # piecewise constant in x: zero gradient everywhere, but still part of the graph
        return out + 0.0 * logits.sum(dim=0)


class Ensemble(LabModel):
    """Several :class:`~labkit.LabModel` members combined into one :class:`~labkit.LabModel`.

    With member logits :math:`z_1(x), \\dots, z_M(x)` and weights :math:`w_m` (summing to 1):

    * ``"mean_logits"``: :math:`\\sum_m w_m z_m(x)`, differentiable;
    * ``"soft_vote"``: :math:`\\log \\sum_m w_m\\, \\mathrm{softmax}(z_m(x))`, the log of the
      averaged probabilities (a logit vector whose softmax is that average), differentiable;
    * ``"hard_vote"``: :math:`\\log` of each class's (weighted) share of the members' votes, ties
      going to the higher mean probability. It is piecewise constant in :math:`x`, so its input
      gradient is **zero everywhere**: white-box attacks on a hard vote fail by construction
      (gradient masking, which :func:`labkit.eval.checklist` flags). Attack
      ``ensemble.with_reduce("mean_logits")`` or ``"soft_vote"`` and score the examples on the
      hard vote instead.

    Every member sees the raw input and applies its own normalisation, so members trained on
    different statistics mix freely; they must agree on input shape, classes and valid range.
    The ensemble is an ``nn.Module`` and a :class:`~labkit.LabModel`: attacks, ``.eval()``,
    ``.to(device)`` and :func:`labkit.models.accuracy` work unchanged.

    Parameters
    ----------
    models:
        The members: a sequence, or a mapping from names to models (names show in reports).
    reduce:
        ``"mean_logits"`` (default), ``"soft_vote"`` or ``"hard_vote"``.
    weights:
        Optional non-negative weight per member (normalised to sum to 1); default equal.

    Examples
    --------
    >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(3)]
    >>> members = [LabModel(n, input_shape=(1, 2, 2), num_classes=2).eval() for n in nets]
    >>> ensemble = Ensemble(members, reduce="soft_vote").eval()
    >>> ensemble(torch.rand(5, 1, 2, 2)).shape, len(ensemble)
    (torch.Size([5, 2]), 3)
    """

    def __init__(
        self,
        models: Sequence[LabModel] | Mapping[str, LabModel],
        reduce: Reduce = "mean_logits",
        *,
        weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        _check_reduce(reduce)
        if isinstance(models, Mapping):
            names = [str(k) for k in models]
            members = list(models.values())
        elif isinstance(models, Sequence) and not isinstance(models, str | bytes):
            members = list(models)
            names = [f"member{i}" for i in range(len(members))]
        else:
            raise TypeError(f"models must be a list or a dict of LabModels, got {type(models).__name__}")
        if not members:
            raise ValueError("an ensemble needs at least one member; models is empty")
        for name, m in zip(names, members, strict=True):
            if not isinstance(m, LabModel):
                raise TypeError(f"ensemble member {name!r} must be a labkit.LabModel, got {type(m).__name__}")
        first = members[0]
        for name, m in zip(names, members, strict=True):
            if m.input_shape != first.input_shape:
                raise ValueError(
                    f"ensemble members must take the same input shape: {names[0]!r} takes "
                    f"{first.input_shape}, {name!r} takes {m.input_shape}"
                )
            if m.num_classes != first.num_classes:
                raise ValueError(
                    f"ensemble members must have the same classes: {names[0]!r} has {first.num_classes}, "
                    f"{name!r} has {m.num_classes}"
                )
            if m.value_range != first.value_range:
                raise ValueError(
                    f"ensemble members must share a valid input range: {names[0]!r} has "
                    f"{first.value_range}, {name!r} has {m.value_range}"
                )
        w = self._weights(weights, len(members))
        super().__init__(
            _Members(members, w.to(first.mean.device), reduce),
            input_shape=first.input_shape,
            num_classes=first.num_classes,
            value_range=first.value_range,
            class_names=first.class_names,
        )
        self.names = names
        self.to(first.mean.device)
        self.meta = {"defense": f"ensemble of {len(members)} ({reduce})", "reduce": reduce}
        self.eval()

    @staticmethod
    def _weights(weights: Sequence[float] | torch.Tensor | None, n: int) -> torch.Tensor:
        if weights is None:
            return torch.full((n,), 1.0 / n)
        w = torch.as_tensor(weights, dtype=torch.float32).flatten()
        if w.numel() != n:
            raise ValueError(f"weights has {w.numel()} values but the ensemble has {n} members")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
        return w / w.sum()

    @property
    def members(self) -> list[LabModel]:
        """The member models, in order."""
        inner = self.net
        assert isinstance(inner, _Members)
        return [m for m in inner.members if isinstance(m, LabModel)]

    @property
    def reduce(self) -> Reduce:
        """How member outputs are combined."""
        inner = self.net
        assert isinstance(inner, _Members)
        return inner.reduce

    @property
    def weights(self) -> torch.Tensor:
        """The members' weights (summing to 1)."""
        inner = self.net
        assert isinstance(inner, _Members)
        return inner.weights

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[LabModel]:
        return iter(self.members)

    def __getitem__(self, key: int | str) -> LabModel:
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no member named {key!r}; members: {', '.join(self.names)}")
            key = self.names.index(key)
        return self.members[key]

    def named_members(self) -> dict[str, LabModel]:
        """``{name: member}``."""
        return dict(zip(self.names, self.members, strict=True))

    def with_reduce(self, reduce: Reduce) -> Ensemble:
        """The same members (shared, not copied) combined another way, e.g. to attack a hard vote."""
        _check_reduce(reduce)
        other = Ensemble(self.named_members(), reduce=reduce, weights=self.weights.cpu())
        other.train(self.training)
        return other

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, shape ``(M, N, C)`` (inputs checked like ``forward``)."""
        if self.check_inputs:
            from labkit.utils import check_images

            check_images(x, shape=self.input_shape, value_range=self.value_range)
        inner = self.net
        assert isinstance(inner, _Members)
        return inner.member_logits(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduce={self.reduce!r}, members={self.names}"
