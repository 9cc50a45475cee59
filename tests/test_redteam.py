"""labkit.redteam: scope enforcement, probes, findings, severity, manual attempts and the report."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

import labkit as lk
from labkit.data.base import LabData
from labkit.redteam import Campaign, Scope, ScopeError, default_severity
from labkit.serving import PredictionAPI

SIDE = 8


def _rule(x: torch.Tensor) -> torch.Tensor:
    """Class 1 iff the left half of the image is brighter than the right half."""
    return (x[:, 0, :, : SIDE // 2].mean((1, 2)) > x[:, 0, :, SIDE // 2 :].mean((1, 2))).long()


@pytest.fixture
def toy_model() -> lk.LabModel:
    """A hand-weighted linear model on 1x8x8 images that computes exactly ``_rule``."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 2))
    left = torch.zeros(SIDE, SIDE)
    left[:, : SIDE // 2] = 1.0
    w = (left - (1 - left)).flatten() * 2.0
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([-w, w]))
        net[1].bias.zero_()
    return lk.LabModel(net, input_shape=(1, SIDE, SIDE), num_classes=2).eval()


def _data(n: int, seed: int, split: str = "test") -> LabData:
    x = torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))
    return LabData(name="halves", split=split, x=x, y=_rule(x), classes=["right", "left"])


@pytest.fixture
def data() -> LabData:
    return _data(64, 0)


def _campaign(victim: lk.LabModel, scope: Scope, **kwargs: object) -> Campaign:
    api = kwargs.pop("api", None) or PredictionAPI(victim)
    return Campaign(api, scope, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ scope


def test_scope_expands_atlas_ids_to_probes() -> None:
    scope = Scope(techniques=("AML.T0024", "transfer"), query_budget=100)
    assert scope.probes == ("transfer", "extraction", "membership")
    assert scope.allows_technique("AML.T0024.000") and not scope.allows_technique("AML.T0051")
    assert Scope(techniques=["AML.T0043.001"], query_budget=1).probes == (
        "score_black_box",
        "decision_black_box",
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"techniques": "transfer"}, TypeError, "list or tuple"),
        ({"techniques": ()}, ValueError, "empty"),
        ({"techniques": ("telepathy",)}, ValueError, "unknown technique 'telepathy'"),
        ({"query_budget": -1}, ValueError, "query_budget"),
        ({"query_budget": 1.5}, ValueError, "query_budget"),
        ({"max_eps": 0.0}, ValueError, r"max_eps must be in \(0, 1\]"),
        ({"max_eps": 2}, ValueError, "max_eps"),
        ({"max_eps": float("nan")}, TypeError, "max_eps"),
        ({"max_eps": "small"}, TypeError, "max_eps"),
        ({"weights": "yes"}, TypeError, "weights"),
        ({"examples": 0}, ValueError, "examples"),
    ],
)
def test_scope_rejects_bad_input(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    settings: dict[str, object] = {"techniques": ("transfer",), "query_budget": 100, **kwargs}
    with pytest.raises(error, match=match):
        Scope(**settings)  # type: ignore[arg-type]


def test_campaign_rejects_bad_targets_and_inputs(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["api_recon"], query_budget=100)
    with pytest.raises(TypeError, match="PredictionAPI"):
        Campaign(toy_model, scope)
    with pytest.raises(TypeError, match="Scope"):
        Campaign(PredictionAPI(toy_model), {"techniques": ["api_recon"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be a labkit LabData"):
        Campaign(PredictionAPI(toy_model), scope, data=data.x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scenario="):
        Campaign(lk.genai.SimulatedAssistant(), Scope(techniques=["jailbreak"], query_budget=10))


def test_scope_is_enforced_and_refusals_are_logged(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["api_recon", "white_box"], query_budget=300, max_eps=0.05)
    campaign = _campaign(toy_model, scope, data=data, model=toy_model)
    with pytest.raises(ScopeError, match="'transfer' .* is not in scope"):
        campaign.run_probe("transfer")
    with pytest.raises(ScopeError, match="needs the model's weights"):
        campaign.run_probe("white_box")
    with pytest.raises(ScopeError, match="eps=0.1 is larger than the scope's max_eps=0.05"):
        Campaign(
            PredictionAPI(toy_model),
            Scope(techniques=["white_box"], query_budget=300, max_eps=0.05, weights=True),
            data=data,
            model=toy_model,
        ).run_probe("white_box", eps=0.1)
    with pytest.raises(ScopeError, match="needs up to 400 queries but only 300"):
        campaign.run_probe("api_recon", queries=400)
    assert [a.outcome for a in campaign.attempts] == ["refused"] * 3
    assert campaign.queries_used == 0 and campaign.target.queries_used == 0  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="unknown settings \\['speed'\\]"):
        campaign.run_probe("api_recon", speed=3)
    with pytest.raises(ValueError, match="unknown probe 'nmap'"):
        campaign.run_probe("nmap")
    with pytest.raises(ScopeError, match="not in scope"):
        campaign.run(["api_recon", "membership"])


# ------------------------------------------------------------------------------------ probes


def test_recon_finds_an_open_api_and_not_a_guarded_one(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["api_recon"], query_budget=1000)
    open_api = _campaign(toy_model, scope, data=data).run()
    assert {f.technique for f in open_api.findings} == {"AML.T0029", "AML.T0024"}
    assert all(f.supported for f in open_api.findings)
    assert open_api.queries_used == open_api.target.queries_used == 256  # type: ignore[union-attr]
    guarded = PredictionAPI(toy_model, output="label", rate_limit=100.0, burst=64, query_budget=128)
    closed = _campaign(toy_model, scope, data=data, api=guarded).run()
    assert closed.findings == []
    assert closed.attempts[0].outcome == "no finding" and closed.attempts[0].success_rate < 1
    rounded = _campaign(toy_model, scope, data=data, api=PredictionAPI(toy_model, rounding=2)).run()
    assert {f.technique for f in rounded.findings} == {"AML.T0029"}


def test_white_box_finding_carries_evidence_within_eps(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["white_box"], query_budget=200, max_eps=0.1, weights=True, examples=32)
    campaign = _campaign(toy_model, scope, data=data, model=toy_model)
    (finding,) = campaign.run_probe("white_box")
    assert finding.technique == "AML.T0043.000" and finding.supported and finding.cost == 0
    assert finding.success_rate > 0.5
    assert finding.clean is not None and finding.adversarial is not None
    assert (finding.adversarial - finding.clean).abs().max() <= 0.1 + 1e-6
    assert bool((_rule(finding.adversarial) != _rule(finding.clean)).all()), (
        "evidence images must be successes"
    )
    assert set(finding.mitigations) >= {"AML.M0003"} and finding.reproduction
    assert campaign.queries_used <= 64
    smaller = _campaign(toy_model, scope, data=data, model=toy_model).run_probe("white_box", eps=1e-4)
    assert smaller == [], "a tiny eps flips nothing here, so there is no finding to claim"


def test_black_box_probes_spend_only_the_budget(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["AML.T0043.001"], query_budget=1500, max_eps=0.1, examples=8)
    campaign = _campaign(toy_model, scope, data=data).run()
    assert campaign.queries_used <= 1500 and campaign.queries_used == campaign.target.queries_used  # type: ignore[union-attr]
    assert {a.probe for a in campaign.attempts} == {"score_black_box", "decision_black_box"}
    assert any(f.technique == "AML.T0043.001" for f in campaign.findings)
    labels_only = _campaign(toy_model, scope, data=data, api=PredictionAPI(toy_model, output="label"))
    with pytest.raises(ValueError, match="labels only"):
        labels_only.run_probe("score_black_box")
    assert labels_only.attempts[-1].outcome == "not applicable"


def test_transfer_patch_corruptions_extraction(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(
        techniques=["transfer", "patch", "corruptions", "extraction"],
        query_budget=3000,
        max_eps=0.1,
        examples=16,
    )
    campaign = _campaign(toy_model, scope, data=data, surrogate_data=_data(300, 1, "train"))
    campaign.run_probe("transfer")
    campaign.run_probe("patch", steps=20)
    campaign.run_probe("corruptions")
    campaign.run_probe("extraction", budget=100, epochs=2)
    outcomes = {a.probe: a for a in campaign.attempts}
    assert set(outcomes) == {"transfer", "patch", "corruptions", "extraction"}
    assert all(a.success_rate is not None and 0 <= a.success_rate <= 1 for a in outcomes.values())
    for f in campaign.findings:
        assert f.supported and f.technique in {"AML.T0043.002", "AML.T0043.003", "AML.T0031", "AML.T0024.002"}
    assert campaign.queries_used <= 3000


def test_membership_needs_evidence(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["membership"], query_budget=1000)
    missing = _campaign(toy_model, scope, data=data).run()
    assert missing.attempts[0].outcome == "not applicable" and missing.findings == []
    # The hand-set model was trained on nothing: its "members" cannot leak, so no finding.
    honest = _campaign(toy_model, scope, members=_data(100, 3), nonmembers=_data(100, 4)).run()
    assert honest.findings == [] and honest.attempts[0].outcome == "no finding"


def test_assistant_campaign_finds_injection() -> None:
    scenario = lk.genai.make_scenario(seed=0)
    scope = Scope(techniques=["AML.T0051", "AML.T0054"], query_budget=200)
    target = lk.genai.SimulatedAssistant(strength="naive")
    campaign = Campaign(target, scope, scenario=scenario).run()
    found = {f.technique: f for f in campaign.findings}
    assert "AML.T0051" in found and found["AML.T0051"].prompts
    assert campaign.queries_used == sum(a.queries for a in campaign.attempts) <= 200
    with pytest.raises(ValueError, match="tests a vision target"):
        Campaign(target, Scope(techniques=["api_recon"], query_budget=10), scenario=scenario).run_probe(
            "api_recon"
        )


# ------------------------------------------------------------------------------------ manual work


def test_log_manual(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["AML.T0043"], query_budget=50)
    campaign = _campaign(toy_model, scope, data=data)
    finding = campaign.log_manual(
        technique="AML.T0043.003", title="tape over the left half", successes=6, trials=10, queries=10
    )
    assert finding is not None and finding.probe == "manual" and finding.success_rate == 0.6
    assert finding.cost == pytest.approx(10 / 6) and "AML.M0003" in finding.mitigations
    weak = campaign.log_manual(technique="AML.T0043.003", title="a pencil dot", successes=0, trials=10)
    assert weak is None and campaign.attempts[-1].outcome == "no finding"
    with pytest.raises(ScopeError, match="not in scope"):
        campaign.log_manual(technique="AML.T0051", title="ignore your rules", successes=1, trials=1)
    with pytest.raises(ScopeError, match="only 40"):
        campaign.log_manual(technique="AML.T0043.003", title="x", successes=1, trials=1, queries=41)
    assert [a.outcome for a in campaign.attempts] == ["finding", "no finding", "refused", "refused"]
    for bad, match in [
        ({"successes": 3, "trials": 2}, "successes <= trials"),
        ({"trials": 0}, "trials > 0"),
        ({"technique": "AML.T9999"}, "ATLAS technique id"),
        ({"threshold": 0.01}, "threshold"),
        ({"title": "  "}, "title"),
        ({"queries": -1}, "queries"),
    ]:
        kwargs: dict[str, object] = {"technique": "AML.T0043.003", "title": "t", "successes": 1, "trials": 2}
        kwargs.update(bad)
        with pytest.raises(ValueError, match=match):
            campaign.log_manual(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ severity


@pytest.mark.parametrize(
    ("rate", "cost", "expected"),
    [
        (0.0, 0, "info"),
        (0.049, 0, "info"),
        (0.5, 100, "critical"),
        (0.5, 100.5, "high"),
        (0.2, 1000, "high"),
        (0.2, 1001, "medium"),
        (0.1, 100, "medium"),
        (0.1, 101, "low"),
        (1.0, math.inf, "high"),
    ],
)
def test_default_severity(rate: float, cost: float, expected: str) -> None:
    assert default_severity(rate, cost) == expected


@pytest.mark.parametrize(
    ("rate", "cost", "error"),
    [(1.2, 0, ValueError), (float("nan"), 0, ValueError), (0.5, -1, ValueError), ("high", 0, TypeError)],
)
def test_default_severity_rejects_bad_input(rate: object, cost: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        default_severity(rate, cost)  # type: ignore[arg-type]


def test_triage_rerates_and_sorts(toy_model: lk.LabModel, data: LabData) -> None:
    campaign = _campaign(toy_model, Scope(techniques=["AML.T0043"], query_budget=10), data=data)
    campaign.log_manual(technique="AML.T0043.003", title="a", successes=3, trials=10)
    campaign.log_manual(technique="AML.T0043.003", title="b", successes=9, trials=10)
    assert [f.title for f in campaign.findings] == ["b", "a"]
    campaign.triage(lambda rate, cost: "low" if rate > 0.5 else "high")
    assert [(f.title, f.severity) for f in campaign.findings] == [("a", "high"), ("b", "low")]
    with pytest.raises(ValueError, match="returned 'severe'"):
        campaign.triage(lambda rate, cost: "severe")
    assert [f.severity for f in campaign.findings] == ["high", "low"], "a failed triage changes nothing"
    with pytest.raises(TypeError, match="rule must be a function"):
        campaign.triage("strict")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ report


def test_report_escapes_content(toy_model: lk.LabModel, data: LabData) -> None:
    scope = Scope(techniques=["AML.T0043", "api_recon"], query_budget=400)
    campaign = _campaign(toy_model, scope, data=data).run(["api_recon"])
    nasty = "<script>alert(1)</script> | **bold**"
    x = data.x[:2]
    campaign.log_manual(
        technique="AML.T0043.003",
        title=nasty,
        successes=2,
        trials=2,
        prompts=[nasty],
        clean=x,
        adversarial=1 - x,
    )
    report = campaign.report(summary="Two <b>serious</b> issues.")
    page, text = report.to_html(), report.to_markdown()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;serious" in page
    assert "data:image/png;base64," in page
    assert "<script>" not in text and "\\| \\*\\*bold\\*\\*" in text
    assert "AML.T0043.003" in text and "AML.M0003 Model Hardening" in text
    assert campaign._repr_markdown_() == campaign.to_markdown()
    assert report.counts()["critical"] >= 1 and sum(report.counts().values()) == len(campaign.findings)
    assert len(report.plot().patches) >= len(campaign.attempts) - 1
    with pytest.raises(TypeError, match="summary must be text"):
        campaign.report(summary=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nothing measured"):
        _campaign(toy_model, scope, data=data).report().plot()


def test_finding_rejects_unknown_ids() -> None:
    with pytest.raises(ValueError, match="unknown ATLAS technique"):
        lk.redteam.Finding(
            title="t",
            technique="AML.T0000",
            severity="low",
            success_rate=0.5,
            trials=2,
            cost=0.0,
            threshold=0.1,
            evidence={},
            reproduction=(),
            mitigations=(),
            probe="manual",
            attempt=1,
        )
