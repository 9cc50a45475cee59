"""A model behind a prediction API: the threat model of extraction and membership inference.

The attacker never holds the weights. They send batches of inputs and get back what the
service chooses to reveal: the full probability vector, the top ``k`` classes, or only the
label, possibly rounded. The service counts every query (one per input row), can refuse
queries beyond a budget or faster than a rate limit, and keeps a log that a monitoring
lesson can inspect (:func:`labkit.serving.prada`).

Output coarsening is the cheapest defense against model extraction and membership
inference (Tramèr et al., "Stealing Machine Learning Models via Prediction APIs", USENIX
Security 2016, arXiv:1609.02943): fewer bits per query means more queries per stolen bit.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch.nn import functional as F

from labkit.contract import LabModel
from labkit.utils import check_images, eval_mode

__all__ = [
    "Output",
    "PredictionAPI",
    "QueryBudgetExceeded",
    "QueryLog",
    "QueryRecord",
    "RateLimitExceeded",
    "TopK",
]

Output = Literal["scores", "top_k", "label"]
OUTPUTS: tuple[str, ...] = ("scores", "top_k", "label")


class QueryBudgetExceeded(RuntimeError):
    """A call asked for more queries than the API's budget has left.

    Attributes
    ----------
    budget, used, requested:
        The total budget, the queries already answered, and the size of the refused call.
    """

    def __init__(self, *, budget: int, used: int, requested: int) -> None:
        self.budget = budget
        self.used = used
        self.requested = requested
        left = budget - used
        super().__init__(
            f"query budget exceeded: this call asks for {requested} queries but only {left} of "
            f"the budget of {budget} remain ({used} used). Nothing was answered or counted."
        )


class RateLimitExceeded(RuntimeError):
    """A call came faster than the API's rate limit allows.

    Attributes
    ----------
    retry_after:
        Seconds until a call of the same size would pass (``inf`` if it never can).
    """

    def __init__(self, message: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class TopK(NamedTuple):
    """Answer of an API with ``output="top_k"``: the ``k`` best scores and their classes."""

    scores: torch.Tensor
    classes: torch.Tensor


@dataclass(frozen=True)
class QueryRecord:
    """One answered call: when, what was asked (on the CPU) and what the model predicted."""

    call: int
    time: float
    inputs: torch.Tensor
    predictions: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


@dataclass
class QueryLog:
    """Everything a :class:`PredictionAPI` answered, in order (one record per call).

    ``predictions`` are the model's top-1 classes whatever the API revealed: a monitor runs
    on the server side and sees them.
    """

    records: list[QueryRecord] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of queries (input rows), not calls."""
        return sum(r.size for r in self.records)

    @property
    def calls(self) -> int:
        return len(self.records)

    @property
    def inputs(self) -> torch.Tensor:
        """All queried inputs, concatenated in arrival order."""
        if not self.records:
            raise ValueError("the query log is empty")
        return torch.cat([r.inputs for r in self.records])

    @property
    def predictions(self) -> torch.Tensor:
        """The model's predicted class for every query, in arrival order."""
        if not self.records:
            raise ValueError("the query log is empty")
        return torch.cat([r.predictions for r in self.records])

    @property
    def times(self) -> torch.Tensor:
        """Arrival time of every query (queries of one call share their call's time)."""
        if not self.records:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([torch.full((r.size,), r.time, dtype=torch.float64) for r in self.records])

    def _repr_markdown_(self) -> str:
        if not self.records:
            return "*no queries logged*"
        counts = torch.bincount(self.predictions).tolist()
        span = self.records[-1].time - self.records[0].time
        rows = [
            ("calls", str(self.calls)),
            ("queries", str(len(self))),
            ("time span (s)", f"{span:.3g}"),
            ("queries per predicted class", ", ".join(f"{c}: {n}" for c, n in enumerate(counts) if n)),
        ]
        lines = ["**Query log**", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


class PredictionAPI:
    """Serve a :class:`~labkit.LabModel` the way a prediction API would.

    Every input row is one query. A call is first validated against the model's contract
    (shape, dtype, range: an invalid call is refused and not counted), then checked against
    the query budget and the rate limit (a refused call consumes neither), then answered.

    Parameters
    ----------
    model:
        The victim model. The lab keeps this handle (``api.model``) to measure fidelity;
        the attacker's side of a lesson only calls the API.
    output:
        What each query returns: ``"scores"`` (softmax probabilities, shape ``(N, C)``),
        ``"top_k"`` (a :class:`TopK` of the ``k`` best probabilities and their classes) or
        ``"label"`` (the predicted class, shape ``(N,)``).
    k:
        Number of classes revealed by ``output="top_k"``.
    rounding:
        Round probabilities to this many decimals (``None``: full precision).
    rate_limit:
        Queries per second allowed on average (token bucket), ``None`` for no limit.
    burst:
        Capacity of the token bucket: the largest call that can pass at once. Defaults to one
        second's worth of queries (at least 1).
    query_budget:
        Total queries allowed over the API's lifetime (``None``: unlimited). Going over raises
        :class:`QueryBudgetExceeded`.
    log:
        Keep a :class:`QueryLog` of inputs and predictions (memory grows with the queries).
    clock:
        Function returning the current time in seconds (default ``time.monotonic``); tests
        and simulations pass a fake clock.
    batch_size:
        Rows per forward pass inside a call.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from labkit import LabModel
    >>> model = LabModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(1, 2, 2), num_classes=3)
    >>> api = PredictionAPI(model.eval(), output="label", query_budget=10)
    >>> api(torch.rand(4, 1, 2, 2)).shape
    torch.Size([4])
    >>> api.queries_used, api.queries_left
    (4, 6)
    >>> api(torch.rand(7, 1, 2, 2))
    Traceback (most recent call last):
    ...
    labkit.serving.api.QueryBudgetExceeded: query budget exceeded: this call asks for 7 queries ...
    """

    def __init__(
        self,
        model: LabModel,
        *,
        output: Output = "scores",
        k: int = 3,
        rounding: int | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        query_budget: int | None = None,
        log: bool = True,
        clock: Callable[[], float] | None = None,
        batch_size: int = 512,
    ) -> None:
        if not isinstance(model, LabModel):
            raise TypeError(
                f"model must be a labkit.LabModel (the API validates queries with its contract), "
                f"got {type(model).__name__}"
            )
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(map(repr, OUTPUTS))}, got {output!r}")
        k = _check_positive_int(k, "k")
        if output == "top_k" and k > model.num_classes:
            raise ValueError(f"k={k} is more than the model's {model.num_classes} classes")
        if rounding is not None:
            if isinstance(rounding, bool) or not isinstance(rounding, numbers.Integral):
                raise TypeError(f"rounding must be a number of decimals (int) or None, got {rounding!r}")
            if rounding < 0:
                raise ValueError(f"rounding must be a non-negative number of decimals, got {rounding}")
        if rate_limit is not None:
            if not isinstance(rate_limit, numbers.Real) or not math.isfinite(rate_limit) or rate_limit <= 0:
                raise ValueError(
                    f"rate_limit must be a positive number of queries per second, got {rate_limit!r}"
                )
        if burst is not None:
            burst = _check_positive_int(burst, "burst")
            if rate_limit is None:
                raise ValueError("burst only makes sense with a rate_limit")
        if query_budget is not None:
            query_budget = _check_positive_int(query_budget, "query_budget")
        self.model = model
        self.output: Output = output
        self.k = k
        self.rounding = None if rounding is None else int(rounding)
        self.rate_limit = None if rate_limit is None else float(rate_limit)
        self.burst = burst if burst is not None else max(1, math.floor(rate_limit or 1))
        self.query_budget = query_budget
        self.logging = bool(log)
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.reset()

    # ------------------------------------------------------------------ grading
    # An API that has answered nothing yet crosses from a learner's kernel to the grader as these
    # constructor arguments, which the grader's own class validates.
    _grading_fields: ClassVar[tuple[str, ...]] = (
        "model",
        "output",
        "k",
        "rounding",
        "rate_limit",
        "burst",
        "query_budget",
        "log",
        "clock",
        "batch_size",
    )

    def _grading_state(self) -> dict[str, Any] | None:
        """The constructor arguments that rebuild this API, or ``None`` once it has been called
        (its counters, log and token bucket are not described)."""
        if self.calls or self.queries_used or self.log.records or self._tokens != float(self.burst):
            return None
        return self._settings()

    def twin(self) -> PredictionAPI:
        """A new API in front of the same model with the same settings, that has answered nothing:
        its counter, log, budget and token bucket start afresh (this one's are left as they are).

        >>> from torch import nn
        >>> import labkit as lk
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2)
        >>> api = PredictionAPI(model, output="label", query_budget=10)
        >>> _ = api(torch.rand(3, 1, 2, 2))
        >>> fresh = api.twin()
        >>> (api.queries_used, fresh.queries_used, fresh.output, fresh.query_budget)
        (3, 0, 'label', 10)
        """
        return type(self)(**self._settings())

    def _settings(self) -> dict[str, Any]:
        """The constructor arguments of an API like this one."""
        return {
            "model": self.model,
            "output": self.output,
            "k": self.k,
            "rounding": self.rounding,
            "rate_limit": self.rate_limit,
            "burst": None if self.rate_limit is None else self.burst,
            "query_budget": self.query_budget,
            "log": self.logging,
            "clock": None if self.clock is time.monotonic else self.clock,
            "batch_size": self.batch_size,
        }

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every query: counter, log and token bucket start afresh."""
        self.queries_used = 0
        self.calls = 0
        self.log = QueryLog()
        self._tokens = float(self.burst)
        self._last = self.clock()

    @property
    def queries_left(self) -> int | None:
        """Queries left in the budget (``None`` when there is no budget)."""
        return None if self.query_budget is None else self.query_budget - self.queries_used

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one query: public knowledge, part of the API's documentation."""
        return self.model.input_shape

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    # ------------------------------------------------------------------ answering
    def _take_tokens(self, n: int) -> None:
        if self.rate_limit is None:
            return
        now = self.clock()
        tokens = min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.rate_limit)
        if n > self.burst:
            raise RateLimitExceeded(
                f"rate limit: a call of {n} queries can never pass a bucket of {self.burst} "
                f"(rate {self.rate_limit:g}/s); send batches of at most {self.burst}",
                retry_after=math.inf,
            )
        if tokens < n:
            wait = (n - tokens) / self.rate_limit
            self._tokens, self._last = tokens, now
            raise RateLimitExceeded(
                f"rate limit exceeded: {n} queries asked, {tokens:.2f} available at "
                f"{self.rate_limit:g} queries/s; retry in {wait:.3g} s",
                retry_after=wait,
            )
        self._tokens, self._last = tokens - n, now

    def _check_budget(self, n: int) -> None:
        if self.query_budget is not None and self.queries_used + n > self.query_budget:
            raise QueryBudgetExceeded(budget=self.query_budget, used=self.queries_used, requested=n)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor | TopK:
        """Answer a batch of queries; one query per row of ``x``.

        Returns probabilities ``(N, C)``, a :class:`TopK`, or labels ``(N,)`` depending on
        ``output``, on the device of ``x``.
        """
        check_images(x, name="x", shape=self.model.input_shape, value_range=self.model.value_range)
        n = int(x.shape[0])
        if n == 0:
            raise ValueError("x is an empty batch: send at least one query")
        self._check_budget(n)
        self._take_tokens(n)
        device = next((p.device for p in self.model.parameters()), x.device)
        with eval_mode(self.model):
            logits = torch.cat(
                [self.model(x[i : i + self.batch_size].to(device)) for i in range(0, n, self.batch_size)]
            )
        probs = F.softmax(logits.float(), dim=1)
        predictions = probs.argmax(dim=1)
        self.queries_used += n
        self.calls += 1
        if self.logging:
            self.log.records.append(
                QueryRecord(self.calls, self.clock(), x.detach().cpu().clone(), predictions.cpu())
            )
        return self._answer(probs, predictions, x)

    def _round(self, p: torch.Tensor) -> torch.Tensor:
        return p if self.rounding is None else torch.round(p, decimals=self.rounding)

    def _answer(self, probs: torch.Tensor, predictions: torch.Tensor, x: torch.Tensor) -> torch.Tensor | TopK:
        if self.output == "label":
            return predictions.to(x.device)
        if self.output == "top_k":
            scores, classes = probs.topk(self.k, dim=1)
            return TopK(self._round(scores).to(x.device, x.dtype), classes.to(x.device))
        return self._round(probs).to(x.device, x.dtype)

    def _repr_markdown_(self) -> str:
        reveal = {
            "scores": "all class probabilities",
            "top_k": f"top-{self.k} probabilities",
            "label": "label only",
        }[self.output]
        rows = [
            ("output", reveal + ("" if self.rounding is None else f", rounded to {self.rounding} decimals")),
            ("queries used", str(self.queries_used)),
            ("budget", "unlimited" if self.query_budget is None else str(self.query_budget)),
            (
                "rate limit",
                "none" if self.rate_limit is None else f"{self.rate_limit:g}/s, burst {self.burst}",
            ),
            ("calls", str(self.calls)),
        ]
        lines = ["**Prediction API**", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PredictionAPI(output={self.output!r}, k={self.k}, rounding={self.rounding}, "
            f"queries_used={self.queries_used}, query_budget={self.query_budget}, "
            f"rate_limit={self.rate_limit})"
        )
