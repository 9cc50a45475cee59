"""labkit.validation: metrics, gates, the model card, sanity checks and continuous validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from margins import assert_auc_above, auc_se
from torch import nn

import labkit as lk
from labkit.data.base import LabData
from labkit.validation import (
    ContinuousValidator,
    check_gates,
    demographic_parity_difference,
    equal_opportunity_difference,
    expected_calibration_error,
    loss_threshold_attack,
    randomization_check,
    recall_at_fpr,
    roc_auc,
    saliency,
    validate,
)


@pytest.fixture(scope="module")
def fraud_model() -> lk.LabModel:
    return lk.models.pretrained("transactions-mlp", progress=False)


@pytest.fixture
def toy(tiny_model: lk.LabModel) -> tuple[lk.LabModel, LabData]:
    """The hand-weighted 2x2 model of conftest and data it classifies perfectly, with a group."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 2, 2, generator=g)
    y = tiny_model.predict(x)
    group = (torch.arange(200) % 2).long()
    return tiny_model, LabData("toy", "test", x, y, ["low", "high"], sensitive=group)


# --------------------------------------------------------------------------- metrics
def test_ece_of_a_perfectly_calibrated_toy_is_zero_and_of_an_overconfident_one_is_not() -> None:
    # confidence 0.7 and right 70 % of the time; confidence 0.9 and right 90 % of the time
    probs = torch.tensor([[0.3, 0.7]] * 10 + [[0.9, 0.1]] * 10)
    y = torch.tensor([1] * 7 + [0] * 3 + [0] * 9 + [1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-6)
    sure = torch.tensor([[0.0, 1.0]] * 10)  # always certain, right half the time
    assert expected_calibration_error(sure, torch.tensor([1, 0] * 5)) == pytest.approx(0.5)
    binary = torch.tensor([0.7] * 10)  # probability of class 1 only
    assert expected_calibration_error(binary, torch.tensor([1] * 7 + [0] * 3)) == pytest.approx(0.0, abs=1e-6)


def test_fairness_differences_match_a_hand_count() -> None:
    # group 0: predicted positive 3 of 4, true positives found 2 of 2
    # group 1: predicted positive 1 of 4, true positives found 1 of 3
    pred = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0])
    y = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert demographic_parity_difference(pred, group) == pytest.approx(0.75 - 0.25)
    assert equal_opportunity_difference(pred, y, group) == pytest.approx(1.0 - 1 / 3)
    with pytest.raises(ValueError, match="lengths differ"):
        demographic_parity_difference(pred, group[:5])
    with pytest.raises(ValueError, match="at least two groups"):
        demographic_parity_difference(pred, torch.zeros(8))


def test_ranking_metrics_match_hand_counts() -> None:
    scores, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert roc_auc(scores, y) == pytest.approx(0.75)
    # negatives 0.1, 0.2, 0.3, 0.4: FPR 25 % allows one above the threshold 0.3
    assert recall_at_fpr([0.1, 0.2, 0.3, 0.4, 0.9, 0.25], [0, 0, 0, 0, 1, 1], fpr=0.25) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="fpr must be"):
        recall_at_fpr(scores, y, fpr=float("nan"))
    with pytest.raises(ValueError, match="sum to 1"):
        expected_calibration_error(torch.tensor([[0.2, 0.3]]), torch.tensor([1]))


# --------------------------------------------------------------------------- gates and the card
def test_gates_pass_and_fail_as_configured(toy: tuple) -> None:
    model, data = toy
    card = validate(
        model,
        data,
        gates={
            "accuracy": {"min": 0.99},
            "ece": {"max": 0.001},  # the raw logits are far from calibrated
            "demographic_parity_difference": {"max": 0.2},
            "mia_auc": {"max": 0.6},  # needs train_data: missing, and missing fails
        },
        progress=False,
        model_name="toy",
    )
    status = {g.gate.metric: g.status for g in card.gates}
    assert status == {
        "accuracy": "pass",
        "ece": "fail",
        "demographic_parity_difference": "pass",
        "mia_auc": "missing",
    }
    assert not card.passed and {g.gate.metric for g in card.failures} == {"ece", "mia_auc"}
    assert card.metrics["accuracy"] == 1.0
    md = card.to_markdown()
    assert md == card._repr_markdown_()
    assert "**Verdict: FAIL (2 of 4 gates passed)**" in md
    assert "| accuracy | 1.000 | ≥ 0.99 | ✅ pass |" in md and "❌ FAIL" in md and "no train_data given" in md
    assert "<table>" in card._repr_html_() and card.to_dict()["passed"] is False
    relaxed = validate(model, data, gates={"accuracy": {"min": 0.99}, "ece": {"max": 1.0}}, progress=False)
    assert relaxed.passed and "PASS" in relaxed.verdict()


def test_robustness_gate_uses_any_attack_callable(toy: tuple) -> None:
    model, data = toy

    def swap_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.flip(2)  # swapping the two pixel rows flips this model's answer

    card = validate(model, data, gates={"robust_accuracy": {"min": 0.5}}, attack=swap_rows, progress=False)
    assert card.metrics["robust_accuracy"] < 0.05 and not card.passed
    same = validate(
        model, data, gates={"robust_accuracy": {"min": 0.5}}, attack=lambda m, x, y: x, progress=False
    )
    assert same.metrics["robust_accuracy"] == 1.0 and same.passed


def test_bad_gates_are_refused(toy: tuple) -> None:
    model, data = toy
    for gates, match in [
        ({"accuracy": {"min": float("nan")}}, "must be a number"),
        ({"acuracy": {"min": 0.9}}, "unknown gate metric 'acuracy'"),
        ({"accuracy": {"minimum": 0.9}}, "unknown key"),
        ({"accuracy": {}}, "needs a 'min' or a 'max'"),
        ({"accuracy": {"min": 0.9, "max": 0.5}}, "min 0.9 > max 0.5"),
        ({"accuracy": 0.9}, "must be a mapping"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_gates(gates)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a number"):
        validate(model, data, gates={"ece": {"max": float("nan")}}, progress=False)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        validate(model, data, gates={}, extra_metrics=["f1"], progress=False)
    with pytest.raises(ValueError, match="sensitive must be a tensor with one value per example"):
        validate(model, data, gates={}, sensitive=torch.zeros(3), progress=False)
    with pytest.raises(TypeError, match="LabData"):
        validate(model, (data.x, data.y), gates={}, progress=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- explanations
def test_saliency_sanity_check_flags_a_randomised_model_as_different() -> None:
    model = lk.models.pretrained("digits-cnn", progress=False)
    x = lk.data.load("digits", split="test", n=32).x
    before = [p.detach().clone() for p in model.parameters()]
    grads = saliency(model, x)
    assert grads.shape == x.shape and all(p.grad is None for p in model.parameters())
    result = randomization_check(model, x, generator=torch.Generator().manual_seed(0))
    assert result.passed and result.similarity < 0.5
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_sanity_check_fails_when_explanations_ignore_the_weights() -> None:
    class Energy(nn.Module):
        """The attribution 2 * w * x ranks inputs by |x| whatever the weight w is."""

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.w * x.pow(2).flatten(1).sum(1, keepdim=True)
            return torch.cat([s, -s], 1)

    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    result = randomization_check(Energy(), x, generator=torch.Generator().manual_seed(0))
    assert result.similarity > 0.99 and not result.passed


# --------------------------------------------------------------------------- privacy
def test_loss_threshold_attack_catches_memorisation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)  # random labels: only memorisation can fit them
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 2))
    fresh = loss_threshold_attack(net.eval(), (x[:32], y[:32]), (x[32:], y[32:]), fpr=0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: one thread avoids spinning on a busy CPU
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(net.train()(x[:32]), y[:32]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    leak = loss_threshold_attack(net.eval(), (x[:32], y[:32]), (x[32:], y[32:]), fpr=0.1)
    assert leak.n == 32 and 0 <= fresh.advantage < leak.advantage
    assert abs(fresh.auc - 0.5) < 2.58 * auc_se(0.5, 32, 32), fresh  # chance, two-sided at 1%
    assert_auc_above(leak.auc, 32, 32, 0.5, what="loss-threshold AUC after memorising")
    # half the unseen examples happen to match the memorised labels, so TPR at low FPR stays modest
    assert leak.tpr_at_fpr > fresh.tpr_at_fpr


def test_transactions_model_card(fraud_model: lk.LabModel) -> None:
    test = lk.data.load("transactions", split="test", n=3000)
    train = lk.data.load("transactions", split="train", n=3000)
    card = validate(
        fraud_model,
        test,
        gates={
            "roc_auc": {"min": 0.95},
            "recall_at_fpr": {"min": 0.9},  # too strict on purpose: fails
            "equal_opportunity_difference": {"max": 0.2},
            "mia_auc": {"max": 0.6},
            "explanation_similarity": {"max": 0.8},
            "stress_auc": {"min": 0.8},
        },
        train_data=train,
        reliability_n=3000,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    status = {g.gate.metric: g.status for g in card.gates}
    assert status["roc_auc"] == "pass" and status["recall_at_fpr"] == "fail"
    assert status["mia_auc"] == "pass" and abs(card.metrics["mia_auc"] - 0.5) < 0.05
    assert status["stress_auc"] == "pass" and card.metrics["stress_auc"] < card.metrics["roc_auc"]
    md = card.to_markdown()
    assert "transactions-mlp" in md and "## Fairness by group" in md and "age group" in md
    sizes = {int(r["n"]) for r in card.details["fairness"]["groups"].values()}
    assert all(f"| {n} |" in md for n in sizes), "group sizes are counts, shown without decimals"
    assert "accuracy says little here" in md  # 1.5 % fraud


def test_continuous_validation_records_degrading_metrics(fraud_model: lk.LabModel) -> None:
    cv = ContinuousValidator(fraud_model, gates={"roc_auc": {"min": 0.9}, "ece": {"max": 0.05}})
    for month, drift in enumerate([0.0, 0.33, 0.67, 1.0]):
        cv.update(
            lk.data.load("transactions", split="test", n=4000, drift=drift, seed=month + 1),
            label=f"month {month}",
        )
    auc = cv.metric("roc_auc")
    assert all(a > b for a, b in itertools.pairwise(auc)), auc
    assert cv.steps[0].card.passed and not cv.steps[-1].card.passed
    assert cv.first_failure in ("month 1", "month 2")
    assert "FAIL" in cv._repr_markdown_() and "month 3" in cv._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    fig = cv.plot()
    assert fig.axes[0].get_title().startswith("continuous validation")
    with pytest.raises(ValueError, match="unknown metric"):
        cv.metric("f1")
