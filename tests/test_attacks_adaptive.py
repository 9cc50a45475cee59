"""The adaptive-attack primitives of labkit.attacks.adaptive: BPDA, EOT, rescaling, the DLR head.

Each builds a differentiable stand-in for a model that masks its gradient; these tests check
that the stand-in makes the same decisions, that its gradient is alive where the model's is
dead, and that it keeps the model's valid input range.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import labkit as lk
from labkit.attacks.adaptive import (
    Expectation,
    ModelWrapper,
    PiecewiseOpMode,
    apgd_dlr,
    dlr_head,
    expectation,
    logits_of,
    rescaled,
    straight_through,
    wrap_like,
)
from labkit.attacks.threat import bounds_of


def _rounded(model: lk.LabModel, levels: int = 4) -> lk.LabModel:
    """``model`` behind a bit-depth squeeze: the input gradient is zero almost everywhere."""

    class Squeeze(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.round(x * (levels - 1)) / (levels - 1)

    return lk.LabModel(nn.Sequential(Squeeze(), model.net), input_shape=(1, 2, 2), num_classes=2).eval()


class _Noisy(nn.Module):
    """Logits of ``net`` plus Gaussian noise drawn from a seeded generator (a randomized defence)."""

    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        self.net = net
        self.scale = scale
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z + self.scale * torch.randn(z.shape, generator=self.gen)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    probe = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(probe), y), probe)
    return grad


def test_straight_through_keeps_decisions_and_revives_the_gradient(
    tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    squeezed = _rounded(tiny_model)
    seen = straight_through(squeezed)
    with torch.no_grad():
        assert torch.equal(seen(x), squeezed(x))
    assert _input_grad(squeezed, x, y).abs().sum() == 0
    assert (_input_grad(seen, x, y).flatten(1).abs().sum(1) > 0).all()
    assert bounds_of(seen) == bounds_of(squeezed)


def test_piecewise_mode_records_only_input_dependent_ops(tiny_model: lk.LabModel) -> None:
    x = torch.rand(3, 1, 2, 2, requires_grad=True)
    with PiecewiseOpMode(replace=False) as mode:
        torch.round(torch.rand(3))  # does not depend on the input
        logits_of(_rounded(tiny_model), x)
    assert mode.seen == {"round"}


def test_expectation_averages_the_draws(tiny_model: lk.LabModel) -> None:
    x = torch.rand(32, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    noisy = _Noisy(tiny_model.net, scale=1.0)
    averaged = expectation(noisy, 256)
    with torch.no_grad():
        clean = tiny_model.net(x)
        spread_one = (noisy(x) - clean).std()
        spread_avg = (averaged(x) - clean).std()
    # The mean of 256 draws has 1/16 of one draw's standard deviation; allow a factor 2 of room.
    assert spread_avg < spread_one / 8
    assert averaged(x).shape == clean.shape


@pytest.mark.parametrize("samples", [0, -1, 1.5, True])
def test_expectation_rejects_a_bad_sample_count(tiny_model: lk.LabModel, samples: object) -> None:
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        expectation(tiny_model, samples)  # type: ignore[arg-type]


def test_rescaled_keeps_decisions_and_unsaturates_the_softmax(
    tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    huge = lk.hardening.with_temperature(tiny_model, 1e-9)  # logits times 1e9
    right = huge(x).argmax(1) == y
    assert right.any()
    dead = _input_grad(huge, x[right], y[right]).flatten(1).abs().sum(1)
    alive = _input_grad(rescaled(huge), x[right], y[right]).flatten(1).abs().sum(1)
    assert (dead == 0).all() and (alive > 0).all()
    with torch.no_grad():
        assert torch.equal(rescaled(huge)(x).argmax(1), huge(x).argmax(1))


def test_dlr_head_is_wrong_exactly_when_the_model_is_and_grows_with_dlr() -> None:
    g = torch.Generator().manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=5).eval()
    x = torch.rand(64, 1, 2, 2, generator=g)
    y = torch.randint(0, 5, (64,), generator=g)
    with torch.no_grad():
        z, w = model(x), dlr_head(model, y)(x)
        assert torch.equal(w.argmax(1) != y, z.argmax(1) != y)
        top = z.sort(dim=1, descending=True).values
        other = z.scatter(1, y[:, None], float("-inf")).amax(1)
        dlr = -(z.gather(1, y[:, None]).squeeze(1) - other) / (top[:, 0] - top[:, 2])
        ce = F.cross_entropy(w, y, reduction="none")
    order = dlr.argsort()
    assert (ce[order].diff() >= -1e-6).all()  # the cross-entropy of the head rises with the DLR loss


def test_dlr_head_wants_one_label_per_row(tiny_model: lk.LabModel) -> None:
    with pytest.raises(ValueError, match="1-D tensor of labels"):
        dlr_head(tiny_model, torch.zeros(2, 2, dtype=torch.long))


def test_apgd_dlr_stays_in_the_ball_and_finds_what_apgd_ce_finds(
    tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    eps = 0.2
    x_adv = apgd_dlr(tiny_model, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    ce = lk.attacks.apgd(tiny_model, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong_dlr = tiny_model(x_adv).argmax(1) != y
        wrong_ce = tiny_model(ce).argmax(1) != y
    # A linear two-class model: both losses point the same way, so DLR breaks what CE breaks.
    assert wrong_dlr.sum() >= wrong_ce.sum() and wrong_dlr.any()


def test_wrap_like_keeps_the_contract_of_a_lab_model(tiny_model: lk.LabModel) -> None:
    wrapped = wrap_like(ModelWrapper(tiny_model), tiny_model)
    assert isinstance(wrapped, lk.LabModel) and not wrapped.training
    assert wrapped.value_range == tiny_model.value_range and wrapped.input_shape == tiny_model.input_shape
    plain = wrap_like(ModelWrapper(tiny_model.net), tiny_model.net)
    assert isinstance(plain, ModelWrapper) and plain.value_range == (0.0, 1.0)


def test_eval_uses_the_same_primitives() -> None:
    assert lk.eval.straight_through is lk.attacks.straight_through is straight_through
    assert lk.eval.expectation is expectation and lk.eval.rescaled is rescaled


def test_margin_pgd_lives_in_attacks_and_eval_reexports_it(
    tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """margin_pgd moved from eval to attacks: one function under both names, an attack like any other."""
    assert lk.eval.margin_pgd is lk.attacks.margin_pgd
    x, y = batch
    x_adv = lk.attacks.margin_pgd(
        tiny_model, x, y, eps=0.2, steps=10, generator=torch.Generator().manual_seed(0)
    )
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert (tiny_model(x_adv).argmax(1) != y).sum() > (tiny_model(x).argmax(1) != y).sum()


def test_hardening_eot_averages_with_the_same_module(tiny_model: lk.LabModel) -> None:
    """hardening.eot attacks the model that attacks.adaptive.Expectation builds."""
    seen: list[nn.Module] = []

    def spy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(model)
        return x

    lk.hardening.eot(spy, n=3)(tiny_model, torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))
    assert isinstance(seen[0], lk.LabModel) and isinstance(seen[0].net, Expectation)
