"""labkit's default robustness evaluation against AutoAttack itself (torchattacks' standard version).

On an honest PGD-AT digits model and three models that mask their gradients (a 3-bit squeeze, a
squeeze with a median filter, a rounding layer in the middle of the network), the worst-case
robust accuracy of :func:`labkit.eval.worst_case` under the ``ci`` sizes must be within 2 points
of AutoAttack's (APGD-CE, APGD-T, FAB-T, Square with 5,000 queries) or below it. Both run on the
same examples, so the comparison is paired: the allowance is 2 points of the examples evaluated.
The masked models must also be flagged by :func:`labkit.eval.detect_masking`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import labkit as lk

torchattacks = pytest.importorskip("torchattacks")

EPS = 0.1
N = 200
ALLOWANCE = 0.02


def _rounding_layer(model: lk.LabModel) -> lk.LabModel:
    """``model`` with its hidden activations after the first block rounded to quarters."""
    rounded = copy.deepcopy(model)

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return torch.round(output * 4) / 4

    first_block = rounded.net.get_submodule("features.0")
    first_block.register_forward_hook(hook)
    return rounded.eval()


def models() -> Iterator[tuple[str, lk.LabModel]]:
    """The four models of the cross-check, built the same way for the test and the README table."""
    lk.seed_everything(0)
    train = lk.data.load("digits", split="train")
    standard = lk.models.pretrained("digits-cnn")
    honest = copy.deepcopy(standard)
    lk.hardening.pgd_at(
        honest,
        train,
        eps=EPS,
        epochs=3,
        steps=3,
        monitor_size=0,
        progress=False,
        generator=torch.Generator().manual_seed(0),
    )
    yield "PGD-AT", honest.eval()
    yield "squeeze 3 bits", lk.hardening.squeeze(standard, bits=3, median=None).eval()
    yield "squeeze 3 bits + median 2", lk.hardening.squeeze(standard, bits=3, median=2).eval()
    yield "rounding layer", _rounding_layer(standard)


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Worst-case robust accuracy under torchattacks' AutoAttack, standard version."""
    attack = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=0)
    x_adv = attack(x, y)
    with torch.no_grad():
        right = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
    return float(right.float().mean())


@pytest.fixture(scope="module")
def zoo() -> dict[str, lk.LabModel]:
    return dict(models())


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    test = lk.data.load("digits", split="test")
    return test.x[:N], test.y[:N]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PGD-AT", "squeeze 3 bits", "squeeze 3 bits + median 2", "rounding layer"])
def test_default_evaluation_is_as_strong_as_autoattack(
    name: str, zoo: dict[str, lk.LabModel], digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = zoo[name]
    x, y = digits
    started = time.perf_counter()
    ours = lk.eval.worst_case(model, x, y, eps=EPS, profile="ci")
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = autoattack_accuracy(model, x, y)
    theirs_s = time.perf_counter() - started
    print(
        f"\n{name}: labkit {ours.accuracy:.1%} ({ours_s:.0f} s), AutoAttack {theirs:.1%} ({theirs_s:.0f} s); "
        f"masking: {'; '.join(ours.masking.reasons()) or 'none seen'}"
    )
    allowed = math.ceil(ALLOWANCE * N) / N
    assert ours.accuracy <= theirs + allowed + 1e-9, (
        f"{name}: labkit's default evaluation leaves {ours.accuracy:.1%}, AutoAttack {theirs:.1%}: "
        f"more than {ALLOWANCE:.0%} above it, so it overstates robustness"
    )
    if name != "PGD-AT":
        assert ours.masking.masked, f"{name} masks its gradients but detect_masking saw nothing"
