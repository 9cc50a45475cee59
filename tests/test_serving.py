"""labkit.serving: the prediction API (budget, rate limit, coarsening, log) and PRADA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import labkit as lk
from labkit.serving import PredictionAPI, QueryBudgetExceeded, RateLimitExceeded, TopK, prada


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def model() -> lk.LabModel:
    """A fixed linear 5-class model on 1x4x4 images."""
    linear = nn.Linear(16, 5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(5, 16, generator=g))
        linear.bias.zero_()
    return lk.LabModel(nn.Sequential(nn.Flatten(), linear), input_shape=(1, 4, 4), num_classes=5).eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def test_scores_are_probabilities_of_the_model(model: lk.LabModel, x: torch.Tensor) -> None:
    """Full scores: the softmax of the model's logits, one row per query."""
    out = PredictionAPI(model)(x)
    assert isinstance(out, torch.Tensor)
    assert torch.allclose(out, torch.softmax(model(x), 1), atol=1e-6)


def test_top_k_reveals_the_k_best_classes_in_order(model: lk.LabModel, x: torch.Tensor) -> None:
    """top_k: the k largest probabilities, sorted, and their classes; the first is the prediction."""
    out = PredictionAPI(model, output="top_k", k=2)(x)
    assert isinstance(out, TopK)
    probs = torch.softmax(model(x), 1)
    assert torch.equal(out.classes[:, 0], probs.argmax(1))
    assert torch.allclose(out.scores, probs.topk(2, dim=1).values, atol=1e-6)
    assert bool((out.scores[:, 0] >= out.scores[:, 1]).all())


def test_label_only_and_rounding(model: lk.LabModel, x: torch.Tensor) -> None:
    """Label-only returns classes; rounding leaves at most the requested decimals."""
    labels = PredictionAPI(model, output="label")(x)
    assert isinstance(labels, torch.Tensor)
    assert labels.dtype == torch.long and torch.equal(labels, model(x).argmax(1))
    rounded = PredictionAPI(model, rounding=1)(x)
    assert isinstance(rounded, torch.Tensor)
    assert torch.allclose(rounded * 10, (rounded * 10).round(), atol=1e-5)
    assert not torch.allclose(rounded, torch.softmax(model(x), 1), atol=1e-4)


def test_budget_counts_rows_and_refuses_without_counting(model: lk.LabModel, x: torch.Tensor) -> None:
    """Every row is a query; a call beyond the budget raises with the numbers and changes nothing."""
    api = PredictionAPI(model, query_budget=10)
    api(x[:6])
    assert (api.queries_used, api.queries_left, api.calls) == (6, 4, 1)
    with pytest.raises(
        QueryBudgetExceeded, match=r"asks for 5 queries but only 4 of the budget of 10"
    ) as info:
        api(x[:5])
    assert (info.value.budget, info.value.used, info.value.requested) == (10, 6, 5)
    assert api.queries_used == 6 and len(api.log) == 6
    api(x[:4])
    assert api.queries_left == 0


def test_rate_limit_token_bucket_with_fake_clock(model: lk.LabModel, x: torch.Tensor) -> None:
    """2 queries/s with a burst of 4: the burst passes, then callers must wait for tokens."""
    clock = FakeClock()
    api = PredictionAPI(model, rate_limit=2.0, burst=4, clock=clock)
    api(x[:4])
    with pytest.raises(RateLimitExceeded, match="retry in") as info:
        api(x[:1])
    assert info.value.retry_after == pytest.approx(0.5)
    assert api.queries_used == 4  # refused calls are not counted
    clock.now = 1.0  # two tokens back
    api(x[:2])
    with pytest.raises(RateLimitExceeded, match="can never pass") as never:
        api(x[:5])
    assert math.isinf(never.value.retry_after)
    clock.now = 100.0  # the bucket refills to its capacity, not beyond
    api(x[:4])
    with pytest.raises(RateLimitExceeded):
        api(x[:1])


def test_invalid_queries_are_refused_and_not_counted(model: lk.LabModel, x: torch.Tensor) -> None:
    """The LabModel contract is checked before anything is counted."""
    api = PredictionAPI(model, query_budget=100)
    with pytest.raises(ValueError, match="outside"):
        api(x * 3)
    with pytest.raises(ValueError, match="shape"):
        api(torch.rand(2, 1, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        api((x * 255).long())
    assert api.queries_used == 0 and api.calls == 0


def test_log_records_inputs_predictions_and_times(model: lk.LabModel, x: torch.Tensor) -> None:
    """The log keeps a copy of every query and the model's top-1 answer, even when label-only."""
    clock = FakeClock()
    api = PredictionAPI(model, output="label", clock=clock)
    api(x[:3])
    clock.now = 2.5
    api(x[3:])
    assert len(api.log) == 8 and api.log.calls == 2
    assert torch.equal(api.log.inputs, x)
    assert torch.equal(api.log.predictions, model(x).argmax(1))
    assert api.log.times.tolist() == [0.0] * 3 + [2.5] * 5
    assert "queries" in api.log._repr_markdown_()
    api.reset()
    assert len(api.log) == 0 and api.queries_used == 0
    silent = PredictionAPI(model, log=False)
    silent(x)
    assert len(silent.log) == 0 and silent.queries_used == 8


def test_inputs_are_not_modified(model: lk.LabModel, x: torch.Tensor) -> None:
    """The API never writes into the caller's tensor."""
    before = x.clone()
    PredictionAPI(model, output="top_k", k=3, rounding=2)(x)
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"output": "probs"}, ValueError, "output must be one of"),
        ({"output": "top_k", "k": 6}, ValueError, "more than the model's 5 classes"),
        ({"k": 0}, ValueError, "k must be a positive integer"),
        ({"rounding": -1}, ValueError, "non-negative number of decimals"),
        ({"rounding": 1.5}, TypeError, "rounding must be"),
        ({"query_budget": 0}, ValueError, "query_budget must be a positive integer"),
        ({"rate_limit": 0}, ValueError, "rate_limit must be a positive number"),
        ({"burst": 3}, ValueError, "burst only makes sense with a rate_limit"),
    ],
)
def test_bad_arguments_raise_clearly(
    model: lk.LabModel, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    """Each bad setting names itself in the error."""
    with pytest.raises(error, match=message):
        PredictionAPI(model, **kwargs)  # type: ignore[arg-type]


def test_api_needs_a_lab_model() -> None:
    """A bare nn.Module has no contract to validate queries with."""
    with pytest.raises(TypeError, match="LabModel"):
        PredictionAPI(nn.Linear(4, 2))  # type: ignore[arg-type]


def test_prada_flags_synthetic_walks_but_not_natural_digits(model: lk.LabModel) -> None:
    """Natural digits give a bell-shaped distance distribution (W high); small sign steps do not."""
    digits = lk.data.load("digits", split="test")
    natural = prada(digits.x, digits.y)
    assert not natural.flagged and natural.final_w > 0.9
    g = torch.Generator().manual_seed(0)
    seed = digits.x[:20]
    steps = [seed]
    for _ in range(4):  # Papernot-style augmentation: every known point plus a sign step
        known = torch.cat(steps)
        steps.append((known + 0.1 * torch.randn(known.shape, generator=g).sign()).clamp(0, 1))
    synthetic = torch.cat(steps)
    labels = digits.y[:20].repeat(len(synthetic) // 20)
    result = prada(synthetic, labels)
    assert result.flagged and result.first_alarm is not None
    assert result.w[result.first_alarm] < result.delta
    assert "alarm after query" in result._repr_markdown_()


def test_prada_reads_an_api_log(model: lk.LabModel, x: torch.Tensor) -> None:
    """prada(api.log) uses the logged queries and the model's predictions."""
    api = PredictionAPI(model)
    api(torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    result = prada(api.log, min_distances=10)
    assert len(result.w) == 60 and len(result.distances) == 60 - len(set(api.log.predictions.tolist()))


def test_prada_bad_arguments() -> None:
    """Tensors need predictions; delta must be a probability-like threshold."""
    with pytest.raises(TypeError, match="predictions are needed"):
        prada(torch.rand(10, 4))
    with pytest.raises(ValueError, match="delta must be in"):
        prada(torch.rand(10, 4), torch.zeros(10, dtype=torch.long), delta=1.5)
    with pytest.raises(ValueError, match="predictions must have shape"):
        prada(torch.rand(10, 4), torch.zeros(9, dtype=torch.long))
