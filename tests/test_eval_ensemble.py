"""The default evaluation: masking signs found on the model, BPDA/EOT on demand, exact on a linear model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import labkit as lk
from labkit import hardening as H
from labkit.eval import EnsembleBudget, detect_masking, robustness, straight_through, worst_case

SMALL = EnsembleBudget(apgd_steps=20, square_queries=200, eot_samples=4)
EPS = 0.05


class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


class _RoundedHidden(nn.Module):
    """A rounding step in the middle of the network, a plain function call (no module to find)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x.flatten(1) * 8) / 8)


def _head(model: lk.LabModel) -> nn.Module:
    """The network after its flattening layer."""
    return nn.Sequential(*list(model.net.children())[1:])


def _lab(net: nn.Module) -> lk.LabModel:
    return lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()


@pytest.fixture
def linear() -> lk.LabModel:
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]]))
        layer.bias.zero_()
    return _lab(nn.Sequential(nn.Flatten(), layer))


@pytest.fixture
def data(linear: lk.LabModel) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(200, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    return x, linear.predict(x)


def _exact_robust(linear: lk.LabModel, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The optimal L-inf attack on the linear model (or a monotone rounding of its input): every
    pixel by eps against its class, clipped."""
    toward_1 = torch.tensor([1.0, 1.0, -1.0, -1.0]).view(1, 1, 2, 2)
    sign = torch.where(y == 0, 1.0, -1.0).view(-1, 1, 1, 1) * toward_1
    worst = (x + eps * sign).clamp(0, 1)
    return linear.predict(worst) == y


def test_an_honest_model_shows_no_masking(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    report = detect_masking(linear, *data)
    assert not report.masked and report.reasons() == []


def test_masking_signs_are_measured_not_declared(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    squeezed = H.squeeze(linear, bits=3, median=None)
    assert detect_masking(squeezed, x, y).piecewise_ops == ("round",)
    hidden = _lab(_RoundedHidden(_head(linear)))
    signs = detect_masking(hidden, x, y)
    assert signs.shattered and "round" in signs.piecewise_ops
    saturated = detect_masking(_lab(_Scaled(linear.net, 1e6)), x, y)
    assert saturated.saturated and saturated.dead_gradients > 0.5
    noisy = detect_masking(H.preprocess(linear, H.GaussianNoise(0.05)), x, y)
    assert noisy.randomized and not noisy.shattered


def test_straight_through_keeps_the_outputs_and_restores_the_gradient(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = data
    squeezed = H.squeeze(linear, bits=2, median=None)
    seen = straight_through(squeezed)
    assert torch.equal(seen(x), squeezed(x))
    probe = x.clone().requires_grad_(True)
    (dead,) = torch.autograd.grad(squeezed(probe)[:, 0].sum(), probe)
    (alive,) = torch.autograd.grad(seen(probe)[:, 0].sum(), probe)
    assert dead.abs().sum() == 0 and bool((alive.abs() > 0).all())


@pytest.mark.parametrize("variant", ["plain", "logits x 1e6"])
def test_worst_case_matches_the_optimal_attack_on_a_linear_model(
    variant: str, linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Saturated logits do not hide a single example: APGD-DLR and rescaling see through them."""
    x, y = data
    model = linear if variant == "plain" else _lab(_Scaled(linear.net, 1e6))
    result = worst_case(model, x, y, eps=EPS, profile=SMALL)
    exact = _exact_robust(linear, x, y, EPS)
    assert 0.2 < exact.float().mean() < 0.9, "the fixture should leave both robust and breakable examples"
    assert torch.equal(result.robust, exact)
    assert result.masking.masked == (variant != "plain")


def test_worst_case_attacks_only_what_is_left(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    y = y.clone()
    y[:20] = 1 - y[:20]  # twenty examples the model gets wrong before any attack
    result = worst_case(linear, x, y, eps=EPS, profile=SMALL)
    broken = torch.stack(list(result.broken_by.values()))
    assert int(broken.sum(0).max()) <= 1, "an example is broken by one attack at most"
    assert torch.equal(broken.any(0) | result.robust | ~result.clean, torch.ones_like(result.clean))
    assert not broken[:, :20].any(), "misclassified examples are not attacked"
    assert result.seconds["total"] >= sum(v for k, v in result.seconds.items() if k != "total")
    assert "Worst-case robust accuracy" in result._repr_markdown_()


def test_worst_case_beats_a_rounding_layer_inside_the_network(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Plain PGD is stuck on the rounding; the default evaluation finds the optimal attack's result."""
    x, y = data
    hidden = _lab(_RoundedHidden(_head(linear)))
    y = hidden.predict(x)
    plain = lk.attacks.robust_accuracy(
        hidden, x, y, lambda m, a, b: lk.attacks.pgd(m, a, b, eps=EPS, steps=20)
    )
    result = worst_case(hidden, x, y, eps=EPS, profile=SMALL)
    assert torch.equal(result.robust, _exact_robust(hidden, x, y, EPS))
    assert result.accuracy <= plain - 0.1
    assert any("bpda" in name and hit.any() for name, hit in result.broken_by.items())


def test_robustness_defaults_to_the_ensemble(
    linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = data
    report = robustness(linear, (x, y), eps=[0.0, EPS], profile=SMALL)
    assert report.attacks[:2] == ["apgd-ce", "apgd-dlr"] and "square" in report.attacks
    assert torch.equal(report.worst[1], _exact_robust(linear, x, y, EPS))
    assert report.accuracy("worst", 0.0) == 1.0


def test_worst_case_rejects_bad_input(linear: lk.LabModel, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    with pytest.raises(ValueError, match="eps"):
        worst_case(linear, x, y, eps=-0.1, profile=SMALL)
    with pytest.raises(ValueError, match="same number"):
        worst_case(linear, x, y[:3], eps=EPS, profile=SMALL)
    with pytest.raises(ValueError, match="batch_size"):
        worst_case(linear, x, y, eps=EPS, profile=SMALL, batch_size=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        worst_case("model", x, y, eps=EPS, profile=SMALL)  # type: ignore[arg-type]
