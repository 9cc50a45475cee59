"""Parity with torchattacks: labkit's attacks match or beat the reference on the same model and data.

torchattacks expects inputs in [0, 1] and logits out, which a LabModel provides; it switches the
model to eval mode itself. Its attacks are given their own copy of the model, because its CW
calls ``.backward()`` and leaves gradients on the parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import labkit as lk
from labkit import attacks

# torchattacks pins requests~=2.25.1, which conflicts with jupyterlab-server (requests>=2.31), so it
# cannot sit in the `test` extra: install it with `pip install --no-deps "torchattacks>=3.5"`.
torchattacks = pytest.importorskip(
    "torchattacks",
    reason='optional test dependency: pip install --no-deps "torchattacks>=3.5" (its requests pin conflicts)',
)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """These batches are small, so extra intra-op threads gain little and, on a shared 2-core
    machine or under pytest-xdist, oversubscribe it: measured 91 s instead of 11 s for this file
    and the parity file together. The setting is restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits() -> tuple[lk.LabModel, lk.LabModel, torch.Tensor, torch.Tensor]:
    """The digits CNN twice (labkit's copy, torchattacks' copy) and the 360 test images."""
    model = lk.models.pretrained("digits-cnn", progress=False)
    reference = lk.models.pretrained("digits-cnn", progress=False)
    data = lk.data.load("digits", split="test")
    return model, reference, data.x, data.y


def robust(model: lk.LabModel, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    ok = (model.predict(x) == y) & (model.predict(x_adv) == y)
    return float(ok.float().mean())


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_fgsm_matches_torchattacks(digits: Any, targeted: bool) -> None:
    """labkit's FGSM and torchattacks' FGSM give the same adversarial images to 1e-6."""
    model, reference, x, y = digits
    labels = (y + 1) % 10 if targeted else y
    atk = torchattacks.FGSM(reference, eps=0.1)
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
    expected = atk(x, labels)
    x_adv = attacks.fgsm(model, x, labels, eps=0.1, targeted=targeted)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=1e-6)


def test_pgd_is_at_least_as_strong_as_torchattacks(digits: Any) -> None:
    """With the same eps, step size, steps and random start, robust accuracy is within 1 point."""
    model, reference, x, y = digits
    torch.manual_seed(0)  # torchattacks draws its random start from the global generator
    expected = torchattacks.PGD(reference, eps=0.1, alpha=0.01, steps=20, random_start=True)(x, y)
    x_adv = attacks.pgd(
        model, x, y, eps=0.1, step_size=0.01, steps=20, generator=torch.Generator().manual_seed(0)
    )
    ours, theirs = robust(model, x, x_adv, y), robust(model, x, expected, y)
    assert ours <= theirs + 0.01, f"labkit {ours:.3f} vs torchattacks {theirs:.3f}"


def test_cw_is_at_least_as_strong_as_torchattacks(digits: Any) -> None:
    """At 100 Adam steps each (labkit: 5 rounds of 20), labkit's CW breaks at least as many digits
    and its median L2 on the digits both break is no larger."""
    model, reference, x, y = digits
    x, y = x[:100], y[:100]
    expected = torchattacks.CW(reference, c=1, kappa=0, steps=100, lr=0.01)(x, y)
    x_adv = attacks.cw(model, x, y, steps=20, search_steps=5)
    clean = model.predict(x) == y
    ours = attacks.attack_success(model, x_adv, y) & clean
    theirs = attacks.attack_success(model, expected, y) & clean
    assert int(ours.sum()) >= int(theirs.sum())
    both = ours & theirs
    l2_ours = (x_adv - x).flatten(1).norm(dim=1)[both].median()
    l2_theirs = (expected - x).flatten(1).norm(dim=1)[both].median()
    assert l2_ours <= l2_theirs, f"median L2: labkit {l2_ours:.3f} vs torchattacks {l2_theirs:.3f}"
