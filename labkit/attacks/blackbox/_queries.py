"""The pieces every black-box attack shares: the query counter, the margin, the checks, the noise.

:class:`Oracle` is the only way an attack reaches the model: it counts every query per example
and turns the end of a run into a :class:`~labkit.attacks.blackbox.BlackBoxResult`.
Private to :mod:`labkit.attacks.blackbox`.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from labkit.attacks._common import succeeded
from labkit.attacks.blackbox.result import BlackBoxResult, QueryBudgetWarning
from labkit.attacks.threat import (
    Bounds,
    Norm,
    ProbabilityOutputWarning,
    check_attack_inputs,
)
from labkit.contract import LabModel
from labkit.utils import eval_mode

__all__ = [
    "CHUNK_ELEMENTS",
    "TINY",
    "Oracle",
    "as_module",
    "check_budget",
    "normal_like",
    "query_mode",
    "random_sign_like",
    "samples_per_query",
    "score_margin",
    "still_running",
    "uniform_like",
]

# Elements per batched query (examples x samples x pixels); bounds the memory of NES and HSJ.
CHUNK_ELEMENTS = 1 << 23
TINY = 1e-12


# --------------------------------------------------------------------------------------------
# Shared pieces: the query counter, the margin, the checks
# --------------------------------------------------------------------------------------------


class _Function(nn.Module):
    """Lets a plain prediction function stand where the checks expect an ``nn.Module``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.eval()  # a function has no training mode: do not trip the train-mode warning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(x)
        return torch.as_tensor(out, device=x.device)


def as_module(model: object) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if callable(model):
        return _Function(model)
    raise TypeError(
        f"model must be a torch.nn.Module or a function returning scores, got {type(model).__name__}"
    )


def check_budget(max_queries: object) -> int:
    if isinstance(max_queries, bool) or not isinstance(max_queries, numbers.Integral):
        raise TypeError(f"max_queries must be an integer number of queries, got {type(max_queries).__name__}")
    if max_queries <= 0:
        raise ValueError(
            f"max_queries must be a positive number of queries per example, got {max_queries} "
            "(the clean input already costs one)"
        )
    return int(max_queries)


@contextlib.contextmanager
def query_mode(
    model: nn.Module, x: object, y: object, *, eps: float | None, norm: Norm, bounds: Bounds | None
) -> Iterator[torch.Tensor]:
    """Validate once, then query in eval mode without gradients. Yields the clean scores.

    Probabilities are what many prediction APIs return and nothing is differentiated here, so
    the softmax warning of the white-box attacks is not raised.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ProbabilityOutputWarning)
        scores = check_attack_inputs(model, x, y, eps=eps, norm=norm, bounds=bounds, stacklevel=4)
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    with eval_mode(model), unchecked, torch.no_grad():
        yield scores


def score_margin(scores: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-example margin to drive below zero (see the module docstring)."""
    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return other - true if targeted else true - other


class Oracle:
    """The only way the attacks reach the model: counts every query per example."""

    def __init__(self, model: nn.Module, y: torch.Tensor, targeted: bool, max_queries: int) -> None:
        self.model = model
        self.y = y
        self.targeted = targeted
        self.max_queries = max_queries
        self.queries = torch.ones_like(y)  # the clean query made by the checks

    def remaining(self) -> torch.Tensor:
        return self.max_queries - self.queries

    def scores(self, idx: torch.Tensor, inputs: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Scores of ``inputs``, ``repeats`` consecutive rows per example of ``idx``."""
        self.queries.index_add_(0, idx, torch.full_like(idx, repeats))
        return self.model(inputs)

    def decide(self, idx: torch.Tensor, inputs: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """Only the top label: is each input adversarial for its example?"""
        labels = self.y[idx].repeat_interleave(repeats) if repeats > 1 else self.y[idx]
        return succeeded(self.scores(idx, inputs, repeats), labels, self.targeted)

    def result(
        self, x_adv: torch.Tensor, success: torch.Tensor, exhausted: torch.Tensor | None = None
    ) -> BlackBoxResult:
        if exhausted is None:  # attacks that run until success or budget
            exhausted = ~success & (self.remaining() <= 0)
        failed = int((exhausted & ~success).sum())
        if failed:
            warnings.warn(
                f"{failed} of {success.numel()} examples used their whole budget of "
                f"max_queries={self.max_queries} without success (result.exhausted marks them); "
                "raise max_queries for a stronger attack",
                QueryBudgetWarning,
                stacklevel=3,
            )
        return BlackBoxResult(
            x_adv=x_adv.detach(),
            queries=self.queries.clone(),
            success=success.clone(),
            exhausted=exhausted.clone(),
            max_queries=self.max_queries,
        )


def still_running(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the examples still running (one host synchronisation)."""
    return mask.nonzero().squeeze(1)


def _device_of(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def uniform_like(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    out = torch.rand(shape, generator=generator, device=_device_of(generator, like), dtype=like.dtype)
    return out.to(like.device)


def normal_like(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    out = torch.randn(shape, generator=generator, device=_device_of(generator, like), dtype=like.dtype)
    return out.to(like.device)


def random_sign_like(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.where(uniform_like(shape, like, generator) < 0.5, -1.0, 1.0).to(like.dtype)


def samples_per_query(n: int, per_sample: int, samples: int) -> int:
    """Samples per batched query so that one query holds about ``CHUNK_ELEMENTS`` numbers."""
    return max(1, min(samples, CHUNK_ELEMENTS // max(1, n * per_sample)))
