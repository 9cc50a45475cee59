"""A red-team Campaign crosses from the learner's kernel to the checker as its journal.

Lesson 12 grades a learner's engagement. Its findings are computed by labkit code, but in the
learner's kernel that code, the Campaign object and its lists are the learner's to change: a
subclass can report findings no probe produced. The checker therefore never reads a learner's
findings. A Campaign of exactly labkit's class crosses as its constructor arguments and its
journal (what was done to it), and the checker's own class replays the journal against a twin of
the target; anything else stays a remote object, which fails ``isinstance(campaign, Campaign)``.
A prediction API the checker hands to learner code stays the checker's (each query is counted
there) and its stand-in passes ``isinstance`` so that labkit's Campaign accepts it as a target.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from learner_kernel import learner_kernel

from labkit.course import remote
from labkit.redteam import Campaign, Scope

SETUP = """
import torch
from torch import nn
import labkit as lk
from labkit.redteam import Campaign, Scope
from labkit.serving import PredictionAPI
torch.manual_seed(0)
model = lk.LabModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), input_shape=(1, 2, 2), num_classes=2).eval()
data = lk.data.LabData(name="toy", split="test", x=torch.rand(16, 1, 2, 2), y=torch.randint(0, 2, (16,)),
                       classes=["a", "b"])
api = PredictionAPI(model)
generator = torch.Generator().manual_seed(0)
"""

LEARNER = """
scope = Scope(techniques=["api_recon"], query_budget=500)
def engage(target, scope):
    campaign = Campaign(target, scope, data=data, name="mine")
    campaign.run()
    x, y = data.batch(8)
    wrong = int((target(x).argmax(dim=1) != y).sum())
    campaign.log_manual(technique="AML.T0029", title="by hand", successes=wrong, trials=8, queries=8)
    return campaign
honest = engage(api, scope)
class Boasting(Campaign):
    pass
boasting = Boasting(api, scope, data=data)
tampered = engage(api, scope)
tampered._findings.append(tampered._findings[0])
tampered.queries_used = 3
tampered.name = "renamed"
triaged = engage(api, scope).triage(lambda rate, cost: "critical")
elsewhere = engage(PredictionAPI(model), scope)
def seen_as_api(target):
    return isinstance(target, PredictionAPI)
def retrain(m):
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
def to_train_mode(m):
    m.train()
def scribble(x):
    x.mul_(0)
def reseed(g):
    g.manual_seed(12345)
from labkit.resilience import GuardedModel
def scribbling_guard():
    def primary(x):
        out = model(x)
        x.zero_()  # the grader's own inputs, if they were written back
        return out
    return GuardedModel(primary, input_shape=(1, 2, 2), value_range=None, score="msp", threshold=0.5)
"""


@pytest.fixture(scope="module")
def checker() -> Iterator[dict[str, Any]]:
    """This process as the checker, a plain ipykernel as the learner's kernel; both ran SETUP
    (the lesson's trusted cells), the learner's kernel LEARNER too."""
    ns: dict[str, Any] = {}
    exec(SETUP, ns)  # the checker's own objects of the trusted cells
    with learner_kernel(SETUP + LEARNER, ns, timeout=60):
        learner = [
            "honest",
            "boasting",
            "tampered",
            "triaged",
            "engage",
            "seen_as_api",
            "retrain",
            "to_train_mode",
            "scribble",
            "scribbling_guard",
            "reseed",
        ]
        assert remote.bind(learner, ["api", "model", "data", "generator"]) == ""
        ns["elsewhere_note"] = remote.bind(["elsewhere"], ["api", "model", "data", "generator"])
        yield ns


def _techniques(campaign: Campaign) -> set[str]:
    return {f.technique for f in campaign.findings}


def test_a_campaign_is_replayed_by_the_checkers_class(checker: dict[str, Any]) -> None:
    honest = checker["honest"]
    assert type(honest) is Campaign, "the campaign should be rebuilt by the checker's own class"
    assert honest.name == "mine" and honest.scope.probes == ("api_recon",)
    assert [a.probe for a in honest.attempts] == ["api_recon", "api_recon", "manual"]
    assert "AML.T0029" in _techniques(honest)
    assert honest.target is not checker["api"], "the replay runs against a twin of the target"
    assert checker["api"].queries_used == 0, (
        "the checker's API counts what learner code sends, not the replay"
    )
    expected = Campaign(checker["api"].twin(), honest.scope, data=checker["data"], name="mine").run()
    assert honest.queries_used == expected.queries_used + 8


def test_what_learner_code_wrote_into_a_campaign_is_not_believed(checker: dict[str, Any]) -> None:
    tampered, honest = checker["tampered"], checker["honest"]
    assert type(tampered) is Campaign and tampered.name == "renamed"
    assert len(tampered.findings) == len(honest.findings), "the appended finding was made up"
    assert tampered.queries_used == honest.queries_used, "the counter is the replay's"


def test_a_subclass_or_a_retriaged_campaign_does_not_cross(checker: dict[str, Any]) -> None:
    assert not isinstance(checker["boasting"], Campaign)
    assert not isinstance(checker["triaged"], Campaign), "a rule of the learner's rated its findings"


def test_a_campaign_against_an_api_the_checker_does_not_know_is_not_graded(checker: dict[str, Any]) -> None:
    assert "elsewhere: CodecError" in checker["elsewhere_note"]
    assert "an API the grader knows" in checker["elsewhere_note"]
    with pytest.raises(remote.RemoteError, match="an API the grader knows"):
        _ = checker["elsewhere"].findings


def test_an_api_the_checker_hands_over_counts_every_query_there(checker: dict[str, Any]) -> None:
    from labkit.serving import PredictionAPI

    api = PredictionAPI(checker["model"])
    assert checker["seen_as_api"](api) is True
    campaign = checker["engage"](api, Scope(techniques=["api_recon"], query_budget=500))
    assert type(campaign) is Campaign
    assert api.queries_used > 8, "the learner's probes and manual queries reached the checker's API"
    assert campaign.queries_used == api.queries_used, "the replay sends what the learner's code sent"


def test_a_journal_that_is_not_one_is_refused(checker: dict[str, Any]) -> None:
    from labkit.course import codec
    from labkit.serving import PredictionAPI

    tag = {
        "$state": "labkit.redteam.campaign:Campaign",
        "fields": {"target": None, "scope": None, "journal": [["os.system", {}]]},
    }
    with pytest.raises(codec.CodecError):
        codec.decode(tag, None)
    scope = Scope(techniques=["api_recon"], query_budget=10)
    campaign = Campaign(PredictionAPI(checker["model"]), scope)
    for bad, why in [
        ([("run_probe", {"probe": "api_recon"}), ("exec", {})], "not one of"),
        ([("spend", {"n": 1, "x": 2})], "takes no argument"),
        ([("spend",)], "not an .action, arguments. pair"),
        ("run", "a list"),
    ]:
        with pytest.raises(ValueError, match=why):
            campaign.replay(bad)
    assert campaign.journal == [] and campaign.attempts == [], "nothing ran before the journal was refused"
    campaign.replay([("spend", {"n": torch.tensor(2).item()})])
    assert campaign.queries_used == 2 and campaign.journal == [("spend", {"n": 2})]


# --------------------------------------------------------------------------------------------
# What learner code changes in place comes back to the checker only where a test can use it


def test_learner_code_cannot_rewrite_the_notebooks_own_model(checker: dict[str, Any]) -> None:
    model = checker["model"]
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(remote.RemoteError, match="changed the grader's model in place"):
        checker["retrain"](model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    checker["to_train_mode"](model)  # modes still come back: tests check them
    assert model.training
    model.eval()


def test_learner_code_cannot_overwrite_the_notebooks_data(checker: dict[str, Any]) -> None:
    data = checker["data"]
    keep = data.x.clone()
    with pytest.raises(remote.RemoteError, match="changed the grader's data in place"):
        checker["scribble"](data.x[2:6])  # a view of the trusted cells' tensor
    assert torch.equal(data.x, keep)
    mine = torch.ones(3)
    checker["scribble"](mine)  # a tensor the test made: the change comes back, so a test sees it
    assert torch.equal(mine, torch.zeros(3))


def test_a_model_inside_a_rebuilt_guard_cannot_change_the_checkers_inputs(checker: dict[str, Any]) -> None:
    from labkit.resilience import GuardedModel

    guard = checker["scribbling_guard"]()
    assert type(guard) is GuardedModel
    x = torch.rand(5, 1, 2, 2)
    keep = x.clone()
    guard(x)
    assert torch.equal(x, keep), "the learner's model wrote into the grader's inputs"


def test_a_model_wrapped_or_held_by_a_test_is_still_the_notebooks(checker: dict[str, Any]) -> None:
    model = checker["model"]
    before = [p.detach().clone() for p in model.parameters()]
    for wrapped in (torch.nn.Sequential(model), model.net, [model][0]):
        with pytest.raises(remote.RemoteError, match="changed the grader's model in place"):
            checker["retrain"](wrapped)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_learner_code_cannot_choose_the_notebooks_generators_next_state(checker: dict[str, Any]) -> None:
    g = checker["generator"]  # the trusted cells' generator
    start = g.get_state()
    checker["reseed"](g)
    chosen = torch.Generator().manual_seed(12345).get_state()
    assert not torch.equal(g.get_state(), start), "the generator moves on, as it would in one process"
    assert not torch.equal(g.get_state(), chosen), "but not to the state learner code chose"


def test_a_journal_the_grader_will_not_replay(checker: dict[str, Any]) -> None:
    from labkit.course import codec

    base = {"target": None, "scope": None}
    for journal, why in [
        ([["spend", {"n": 1}]] * 201, "at most 200"),
        ([["run_probe", {"probe": "transfer", "settings": {"steps": 10**8}}]], "more than 10 times"),
    ]:
        campaign = Campaign(PredictionAPI_(checker), Scope(techniques=["transfer"], query_budget=10))
        with pytest.raises(ValueError, match=why):
            Campaign._grading_rebuild(
                **(base | {"target": campaign.target, "scope": campaign.scope}), journal=journal
            )
    with pytest.raises(ValueError, match="non-negative"):
        Campaign(PredictionAPI_(checker), Scope(techniques=["api_recon"], query_budget=10)).spend(-(10**6))
    assert codec.CodecError


def PredictionAPI_(checker: dict[str, Any]) -> Any:
    from labkit.serving import PredictionAPI

    return PredictionAPI(checker["model"])
