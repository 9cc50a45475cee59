"""Batch norm folded into convolutions during attacks: the same function, the model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import labkit as lk
from labkit.attacks._fold import folded_batch_norm


def _bn_cnn(seed: int = 0) -> lk.LabModel:
    """A small CNN with batch norm after each convolution, its statistics not the defaults."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 10),
    )
    for bn in (net[1], net[3][1]):
        with torch.no_grad():
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return lk.LabModel(net, input_shape=(1, 8, 8), num_classes=10).eval()


def _logits_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    (grad,) = torch.autograd.grad(F.cross_entropy(out, y), xg)
    return out.detach(), grad


def test_folding_computes_the_same_function_and_puts_the_model_back() -> None:
    model = _bn_cnn()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    modules = list(model.modules())
    state = copy.deepcopy(model.state_dict())
    plain = _logits_and_grad(model, x, y)
    with folded_batch_norm(model) as folded:
        assert folded == 2
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        fused = _logits_and_grad(model, x, y)
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-4, atol=1e-6)
    assert list(model.modules()) == modules
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_the_model_is_put_back_when_the_block_fails() -> None:
    model = _bn_cnn()
    modules = list(model.modules())
    with pytest.raises(RuntimeError, match="inside"), folded_batch_norm(model) as folded:
        assert folded == 2
        raise RuntimeError("inside")
    assert list(model.modules()) == modules


@pytest.mark.parametrize("case", ["hook", "training", "sequential-subclass", "global-hook", "parametrized"])
def test_nothing_is_folded_where_the_pair_is_not_plainly_equivalent(case: str) -> None:
    model = _bn_cnn()
    inner = model.net[3]
    handle = None
    if case == "hook":  # a lesson recording activations must see the batch norm's output
        handle = model.net[1].register_forward_hook(lambda *a: None)
        inner[1].register_forward_hook(lambda *a: None)
    elif case == "training":
        model.train()
    elif case == "sequential-subclass":

        class Residual(nn.Sequential):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x + super().forward(x)

        model.net[3] = Residual(*inner)
        model.net[0] = nn.Sequential(model.net[0])  # the first pair split across containers
    elif case == "global-hook":
        handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    else:
        nn.utils.parametrizations.weight_norm(model.net[0])
        nn.utils.parametrizations.weight_norm(inner[0])
    try:
        with folded_batch_norm(model) as folded:
            assert folded == 0
    finally:
        if handle is not None:
            handle.remove()


def test_attacks_on_a_batch_norm_model_match_the_unfolded_computation(digits_model: lk.LabModel) -> None:
    """FGSM through labkit (folded) against the same step computed by hand on the model as it is."""
    with folded_batch_norm(digits_model) as folded:
        assert folded == 4  # every convolution of digits-cnn has its batch norm
    data = lk.data.load("digits", split="test")
    x, y = data.batch(64)
    with digits_model.unchecked():
        _, grad = _logits_and_grad(digits_model, x, y)
    by_hand = (x + 0.1 * grad.sign()).clamp(0, 1)
    ours = lk.attacks.fgsm(digits_model, x, y, eps=0.1)
    # float rounding may flip the sign of a gradient that is zero to within it, nothing more
    flipped = (ours != by_hand).float().mean().item()
    assert flipped < 1e-3, flipped
    assert (ours - x).abs().max() <= 0.1 + 1e-6
