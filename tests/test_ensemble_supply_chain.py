"""A member from a compromised supplier (AML.T0010.003) inside an ensemble (AML.M0006).

Lesson 10 measures these claims on trained digits models; here they are checked on hand-set
models whose backdoor is exact, so each claim holds or fails for a reason one can read:

* clean members outvote one backdoored member under every combination rule;
* a member whose logits are scaled up answers exactly as before on its own, yet alone decides a
  mean of logits, while soft and hard voting cap its say;
* members that all carry the backdoor (trained on the same poisoned data) keep it under every rule.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import labkit as lk
from labkit.ensembles import Ensemble, Reduce
from labkit.poisoning import attack_success_rate, patch_trigger

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

RULES: tuple[Reduce, ...] = ("mean_logits", "soft_vote", "hard_vote")
TARGET = 0
SHAPE = (1, 1, 2)  # pixel 0 carries the content, pixel 1 is where the trigger goes
TRIGGER = patch_trigger(SHAPE, size=1, pattern="white")  # sets pixel 1 to 1


def member(*, content_gain: float, backdoor: bool) -> lk.LabModel:
    """Three classes on x = (a, b): class 1 if a > 0.5, class 2 otherwise, never class 0 on
    clean inputs (b <= 0.2); a backdoored member answers class 0 whenever b is 1."""
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(
            torch.tensor([[0.0, 20.0 if backdoor else 0.0], [content_gain, 0.0], [-content_gain, 0.0]])
        )
        layer.bias.copy_(torch.tensor([-10.0 if backdoor else -3.0, -content_gain / 2, content_gain / 2]))
    return lk.LabModel(nn.Sequential(nn.Flatten(), layer), input_shape=SHAPE, num_classes=3).eval()


def louder(model: lk.LabModel, factor: float) -> lk.LabModel:
    """A copy of ``model`` with its last layer (so its logits) multiplied by ``factor``."""
    loud = copy.deepcopy(model)
    last = [m for m in loud.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return loud


@pytest.fixture
def test_data() -> lk.data.LabData:
    """200 clean inputs with the content away from the 0.5 boundary and a dim trigger pixel."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(200, generator=gen) * 0.3
    a = torch.where(torch.arange(200) % 2 == 0, a, 1 - a)  # half in [0, 0.3], half in [0.7, 1]
    b = torch.rand(200, generator=gen) * 0.2
    x = torch.stack([a, b], dim=1).view(200, *SHAPE)
    y = torch.where(a > 0.5, 1, 2)
    return lk.data.LabData("toy", "test", x, y, ["target", "high", "low"])


@pytest.fixture
def clean_members() -> list[lk.LabModel]:
    return [member(content_gain=g, backdoor=False) for g in (8.0, 10.0, 12.0, 14.0)]


def test_the_hand_set_members_behave_as_described(
    test_data: lk.data.LabData, clean_members: list[lk.LabModel]
) -> None:
    """Every member is right on clean inputs; only the backdoored one obeys the trigger."""
    bad = member(content_gain=10.0, backdoor=True)
    for m in [*clean_members, bad]:
        assert lk.models.accuracy(m, test_data.x, test_data.y) == 1.0
    assert attack_success_rate(bad, test_data, trigger=TRIGGER, target=TARGET) == 1.0
    for m in clean_members:
        assert attack_success_rate(m, test_data, trigger=TRIGGER, target=TARGET) == 0.0


@pytest.mark.parametrize("reduce", RULES)
def test_clean_members_outvote_one_backdoored_member(
    reduce: Reduce, test_data: lk.data.LabData, clean_members: list[lk.LabModel]
) -> None:
    """Four clean members and one backdoored member: the trigger no longer works, and clean
    accuracy is kept."""
    ensemble = Ensemble([*clean_members, member(content_gain=10.0, backdoor=True)], reduce=reduce)
    assert attack_success_rate(ensemble, test_data, trigger=TRIGGER, target=TARGET) == 0.0
    assert lk.models.accuracy(ensemble, test_data.x, test_data.y) == 1.0


@pytest.mark.parametrize(
    ("reduce", "follows_the_loud_member"), [("mean_logits", True), ("soft_vote", False), ("hard_vote", False)]
)
def test_a_loud_member_decides_a_mean_of_logits_but_not_a_vote(
    reduce: Reduce,
    follows_the_loud_member: bool,
    test_data: lk.data.LabData,
    clean_members: list[lk.LabModel],
) -> None:
    """Scaling a member's logits by 50 changes none of its own answers, but a mean of logits then
    follows its backdoor; soft and hard voting give it one member's say whatever its scale."""
    bad = member(content_gain=10.0, backdoor=True)
    loud = louder(bad, 50.0)
    triggered = TRIGGER.apply(test_data.x)
    for x in (test_data.x, triggered):
        assert torch.equal(loud.predict(x), bad.predict(x)), "scaling the logits must not change the answers"
    ensemble = Ensemble([*clean_members, loud], reduce=reduce)
    rate = attack_success_rate(ensemble, test_data, trigger=TRIGGER, target=TARGET)
    assert rate == (1.0 if follows_the_loud_member else 0.0), f"{reduce}: attack success rate {rate}"
    assert lk.models.accuracy(ensemble, test_data.x, test_data.y) == 1.0


@pytest.mark.parametrize("reduce", RULES)
def test_members_that_share_the_backdoor_keep_it_under_every_rule(
    reduce: Reduce, test_data: lk.data.LabData
) -> None:
    """Members poisoned the same way (different content weights, one trigger) share the
    backdoor: no combination rule removes what every member learned."""
    shared = [member(content_gain=g, backdoor=True) for g in (8.0, 10.0, 12.0)]
    ensemble = Ensemble(shared, reduce=reduce)
    assert attack_success_rate(ensemble, test_data, trigger=TRIGGER, target=TARGET) == 1.0
    assert lk.models.accuracy(ensemble, test_data.x, test_data.y) == 1.0
