"""labkit.privacy: extraction, membership inference, model inversion, DP-SGD and its accountant."""

from __future__ import annotations

import math

import pytest
import torch
from margins import (
    assert_auc_above,
    assert_auc_paired_gap,
    assert_gap,
    assert_rate_above,
    auc_paired_gap_lower,
)
from torch import nn
from torch.nn import functional as F

import labkit as lk
from labkit import privacy as Pv
from labkit.data import LabData
from labkit.serving import PredictionAPI, QueryBudgetExceeded

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def split() -> dict[str, LabData]:
    """Members (the target's training set), non-members, and data only the attacker holds."""
    train = lk.data.load("digits", split="train")
    test = lk.data.load("digits", split="test")
    return {
        "members": train.subset(range(300)),
        "attacker": train.subset(range(300, 1000)),
        "nonmembers": test.subset(range(300)),
        "test": test,
    }


@pytest.fixture(scope="module")
def overfit(split: dict[str, LabData]) -> lk.LabModel:
    return Pv.overfit_target(
        split["members"], epochs=30, generator=torch.Generator().manual_seed(0), progress=False
    )


@pytest.fixture(scope="module")
def overfit_loss(overfit: lk.LabModel, split: dict[str, LabData]) -> Pv.MembershipResult:
    return Pv.loss_attack(overfit, split["members"], split["nonmembers"])


@pytest.fixture(scope="module")
def overfit_auc(overfit_loss: Pv.MembershipResult) -> float:
    return overfit_loss.auc


def assert_leaks_more(a: Pv.MembershipResult, b: Pv.MembershipResult, what: str) -> None:
    """``a`` separates the same members from the same non-members significantly better than ``b``."""
    assert_auc_paired_gap(a.member_scores, a.nonmember_scores, b.member_scores, b.nonmember_scores, what=what)


# ---------------------------------------------------------------------------- accountant


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta", "reference"),
    [  # values from Opacus 1.6's RDP accountant (opacus.accountants.analysis.rdp)
        (256 / 60000, 1.1, 14062, 1e-5, 2.5965558689607486),
        (0.01, 4.0, 10000, 1e-5, 1.0354900660362476),
        (64 / 300, 1.0, 100, 1e-5, 17.098572992038385),
        (0.5, 5.0, 3, 1e-6, 0.8822686237113888),
    ],
)
def test_accountant_matches_opacus(
    q: float, sigma: float, steps: int, delta: float, reference: float
) -> None:
    """The RDP accountant of the sampled Gaussian mechanism agrees with Opacus."""
    eps = Pv.dp_sgd_epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta)
    assert eps == pytest.approx(reference, rel=1e-9)


def test_accountant_behaves_like_a_privacy_budget() -> None:
    """More steps or less noise spend more; no sampling spends nothing; no noise is no privacy."""

    def eps(**kw: float) -> float:
        args = {"sample_rate": 0.05, "noise_multiplier": 1.0, "steps": 100, "delta": 1e-5} | kw
        return Pv.dp_sgd_epsilon(**args)  # type: ignore[arg-type]

    assert eps(steps=200) > eps() > eps(steps=50)
    assert eps(noise_multiplier=0.8) > eps() > eps(noise_multiplier=2.0)
    assert eps(sample_rate=0.0) == 0.0
    assert math.isinf(eps(noise_multiplier=0.0))
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        eps(delta=0.0)
    with pytest.raises(ValueError, match=r"sample_rate must be in \[0, 1\]"):
        eps(sample_rate=1.5)


def test_accountant_reuses_the_per_step_rdp() -> None:
    """Epsilon after every epoch (same q and sigma) reuses the per-step RDP instead of recomputing it."""
    from labkit.privacy import accounting

    accounting._rdp_one.cache_clear()
    first = Pv.dp_sgd_epsilon(sample_rate=0.2, noise_multiplier=1.2, steps=5, delta=1e-5)
    later = Pv.dp_sgd_epsilon(sample_rate=0.2, noise_multiplier=1.2, steps=75, delta=1e-5)
    assert accounting._rdp_one.cache_info().hits >= len(Pv.DEFAULT_ORDERS)
    fresh = [75 * accounting._rdp_one.__wrapped__(0.2, 1.2, a) for a in Pv.DEFAULT_ORDERS]
    assert later == pytest.approx(Pv.rdp_to_epsilon(fresh, delta=1e-5)[0], rel=1e-12)
    assert later > first


# ---------------------------------------------------------------------------- DP-SGD pieces


def tiny_model() -> lk.LabModel:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return lk.LabModel(net, input_shape=(1, 4, 4), num_classes=3).eval()


def test_per_example_clipping_matches_a_loop() -> None:
    """vmap per-example gradients, clipped and summed, equal an explicit loop over examples."""
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    grads = Pv.per_example_gradients(model, x, y)
    summed, norms = Pv.clip_and_noise(grads, max_grad_norm=0.5, noise_multiplier=0.0)
    names = [n for n, _ in model.named_parameters()]
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        gi = torch.autograd.grad(loss, list(model.parameters()))
        norm = torch.stack([(t**2).sum() for t in gi]).sum().sqrt()
        assert norms[i] == pytest.approx(float(norm), rel=1e-4)
        for n, t in zip(names, gi, strict=True):
            assert torch.allclose(grads[n][i], t, atol=1e-5)
            expected[n] += t * min(1.0, 0.5 / (float(norm) + 1e-6))
    assert bool((norms > 0.5).any())  # the test does exercise clipping
    for n in names:
        assert torch.allclose(summed[n], expected[n], atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_noise_has_the_documented_scale() -> None:
    """With zero gradients the output is pure N(0, (sigma C)^2) noise."""
    grads = {"w": torch.zeros(4, 20000)}
    noisy, _ = Pv.clip_and_noise(
        grads, max_grad_norm=2.0, noise_multiplier=1.5, generator=torch.Generator().manual_seed(0)
    )
    assert float(noisy["w"].std()) == pytest.approx(3.0, rel=0.03)


def test_batchnorm_is_refused_and_replaceable() -> None:
    """BatchNorm has no per-example gradients; replace_batchnorm fixes a copy."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 2)).train()
    with pytest.raises(ValueError, match="replace_batchnorm"):
        Pv.per_example_gradients(net, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 0]))
    fixed = Pv.replace_batchnorm(net)
    assert (
        isinstance(fixed, nn.Sequential)
        and isinstance(fixed[1], nn.GroupNorm)
        and isinstance(net[1], nn.BatchNorm2d)
    )
    grads = Pv.per_example_gradients(fixed, torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 0]))
    assert grads["3.weight"].shape == (3, 2, 16)


# ---------------------------------------------------------------------------- membership inference


def test_membership_metrics_by_hand() -> None:
    """Perfectly separated scores: AUC 1 and full TPR at low FPR; identical scores: AUC 0.5."""
    perfect = Pv.membership_metrics(torch.arange(10.0) + 100, torch.arange(10.0))
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr[0.01] == 1.0 and perfect.balanced_accuracy == 1.0
    same = Pv.membership_metrics(torch.zeros(10), torch.zeros(10))
    assert same.auc == 0.5 and same.tpr_at_fpr[0.001] == 0.0
    with pytest.raises(ValueError, match="finite"):
        Pv.membership_metrics(torch.tensor([math.inf]), torch.zeros(2))


def test_loss_attack_exposes_an_overfit_model(
    overfit: lk.LabModel, overfit_auc: float, split: dict[str, LabData]
) -> None:
    """The overfit target leaks: loss-threshold AUC significantly above chance on 300 + 300 examples."""
    assert_auc_above(overfit_auc, 300, 300, what="loss-attack AUC of the overfit target")
    result = Pv.loss_attack(overfit, split["members"], split["nonmembers"])
    assert 0.5 < result.balanced_accuracy <= 1 and 0 <= result.tpr_at_fpr[0.01] <= 1
    assert "TPR @ 1% FPR" in result._repr_markdown_()


def test_label_only_and_regularisation_reduce_leakage(
    overfit: lk.LabModel, overfit_loss: Pv.MembershipResult, split: dict[str, LabData]
) -> None:
    """A label-only API leaves only the accuracy gap; weight decay + early stopping shrink the gap."""
    api = PredictionAPI(overfit, output="label")
    label_only = Pv.loss_attack(api, split["members"], split["nonmembers"])
    assert_leaks_more(overfit_loss, label_only, what="AUC, scores over labels only")
    assert api.queries_used == 600
    train_acc = lk.models.accuracy(overfit, split["members"])
    test_acc = lk.models.accuracy(overfit, split["nonmembers"])
    assert label_only.auc == pytest.approx(0.5 + 0.5 * (train_acc - test_acc), abs=1e-6)
    regular = Pv.overfit_target(
        split["members"],
        epochs=5,
        weight_decay=5e-3,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    regular_loss = Pv.loss_attack(regular, split["members"], split["nonmembers"])
    assert_leaks_more(overfit_loss, regular_loss, what="AUC, overfit over regularised")


def test_shadow_attack_finds_members(overfit: lk.LabModel, split: dict[str, LabData]) -> None:
    """Shadow models trained like the target teach an attack model what members look like."""
    result = Pv.shadow_attack(
        overfit,
        split["members"],
        split["nonmembers"],
        shadow_data=split["attacker"].subset(range(400)),
        n_shadows=2,
        epochs=30,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert_auc_above(result.auc, 300, 300, what="shadow-attack AUC")
    assert result.threshold == 0.0


def test_dp_sgd_lowers_membership_auc_at_a_cost(
    overfit: lk.LabModel, overfit_loss: Pv.MembershipResult, split: dict[str, LabData]
) -> None:
    """DP-SGD (sigma 1, C 1): finite epsilon, lower MIA AUC, lower accuracy than the overfit model."""
    members = split["members"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Pv.private_model(members)
    history = Pv.train_dp(
        model,
        members,
        epochs=8,
        batch_size=32,
        lr=3e-3,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert 0 < history.epsilon < 20 and history.steps == 8 * round(300 / 32)
    expected = Pv.dp_sgd_epsilon(sample_rate=32 / 300, noise_multiplier=1.0, steps=history.steps, delta=1e-5)
    assert history.epsilon == pytest.approx(expected)
    dp_loss = Pv.loss_attack(model, members, split["nonmembers"])
    assert_leaks_more(overfit_loss, dp_loss, what="AUC, overfit over DP-SGD")
    n = len(split["test"])
    dp_acc, overfit_acc = lk.models.accuracy(model, split["test"]), lk.models.accuracy(overfit, split["test"])
    assert_gap(overfit_acc, n, dp_acc, n, what="test accuracy, overfit over DP-SGD")
    assert_rate_above(dp_acc, n, 0.1, what="DP-SGD test accuracy (chance 10%)")  # it did learn something
    assert all(p.grad is None for p in model.parameters())
    assert "ε" in history._repr_markdown_()


# ---------------------------------------------------------------------------- extraction


def test_extraction_fidelity_rises_with_queries(overfit: lk.LabModel, split: dict[str, LabData]) -> None:
    """Natural queries through the API: more queries, a more faithful copy; every query counted."""
    api = PredictionAPI(overfit, output="label", query_budget=1000)
    result = Pv.extract(
        api,
        split["attacker"],
        budget=300,
        checkpoints=[20, 300],
        eval_data=split["test"],
        epochs=10,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.queries == [20, 300]
    n = len(split["test"])
    assert_gap(result.fidelity[1], n, result.fidelity[0], n, what="fidelity, 300 over 20 queries")
    assert_rate_above(result.fidelity[1], n, 0.5, what="fidelity after 300 queries")
    assert api.queries_used == 300 and len(api.log) == 300
    assert "fidelity" in result._repr_markdown_()
    if _has_attacks():
        x, y = split["test"].batch(100)
        transfer = Pv.transfer_attack(
            result.model, overfit, x, y, eps=0.2, generator=torch.Generator().manual_seed(0)
        )
        assert transfer.substitute_adv < transfer.substitute_clean
        n_ok = int((overfit.predict(x) == y).sum())  # the rates count examples the victim got right
        assert_gap(transfer.transfer_rate, n_ok, transfer.noise_rate, n_ok, what="transfer over noise")


def test_jacobian_augmentation_doubles_the_set_within_budget(
    overfit: lk.LabModel, split: dict[str, LabData]
) -> None:
    """Seed 20, then each round adds x + lambda * sign(gradient) for every known x, until the budget."""
    api = PredictionAPI(overfit, output="label")
    result = Pv.extract(
        api,
        split["attacker"],
        budget=70,
        strategy="jacobian",
        seed_size=20,
        step=0.1,
        eval_data=split["test"].subset(range(50)),
        epochs=2,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert result.queries == [20, 40, 70] and api.queries_used == 70
    queries = api.log.inputs
    assert torch.equal(queries[:20], split["attacker"].x[:20])
    step = (queries[20:40] - queries[:20]).abs()
    moved = ((step - 0.1).abs() < 1e-6) | (queries[20:40] == 0) | (queries[20:40] == 1)
    assert bool(moved.all())


def _has_attacks() -> bool:
    try:
        from labkit.attacks import pgd  # noqa: F401
    except ImportError:
        return False
    return True


def test_extraction_respects_the_budget(overfit: lk.LabModel, split: dict[str, LabData]) -> None:
    """A budget of 0, or more than the API has left, is refused before any query."""
    api = PredictionAPI(overfit, query_budget=50)
    with pytest.raises(ValueError, match="budget must be a positive number of queries, got 0"):
        Pv.extract(api, split["attacker"], budget=0, eval_data=split["test"])
    with pytest.raises(ValueError, match="more than the 50 queries the API has left"):
        Pv.extract(api, split["attacker"], budget=60, eval_data=split["test"])
    with pytest.raises(TypeError, match="PredictionAPI"):
        Pv.extract(overfit, split["attacker"], budget=10, eval_data=split["test"])  # type: ignore[arg-type]
    assert api.queries_used == 0
    api(split["test"].x[:45])
    with pytest.raises(QueryBudgetExceeded):
        api(split["test"].x[:10])


# ---------------------------------------------------------------------------- inversion


def test_inversion_reconstructs_images_the_model_assigns_to_their_class(overfit: lk.LabModel) -> None:
    """One image per class, in [0, 1], classified as that class with high confidence."""
    grads_before = [None if p.grad is None else p.grad.clone() for p in overfit.parameters()]
    result = Pv.invert(overfit, steps=150)
    assert result.images.shape == (10, 1, 8, 8)
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert overfit.predict(result.images).tolist() == list(range(10))
    assert bool((result.confidence > 0.5).all())
    for before, p in zip(grads_before, overfit.parameters(), strict=True):  # .grad untouched
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class 10 is not a class of the model"):
        Pv.invert(overfit, classes=[10])
    with pytest.raises(TypeError, match="LabModel"):
        Pv.invert(nn.Linear(64, 10))  # type: ignore[arg-type]


def test_privacy_bad_inputs(overfit: lk.LabModel, split: dict[str, LabData]) -> None:
    """Wrong types and impossible settings are named in the error."""
    with pytest.raises(TypeError, match="members must be a LabData"):
        Pv.loss_attack(overfit, split["members"].x, split["nonmembers"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_multiplier must be non-negative"):
        Pv.train_dp(Pv.private_model(split["members"]), split["members"], epochs=1, noise_multiplier=-1.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        Pv.train_dp(overfit, split["members"], epochs=1)
    with pytest.raises(ValueError, match="shadow models need at least 8"):
        Pv.shadow_attack(
            overfit, split["members"], split["nonmembers"], shadow_data=split["attacker"].subset(range(5))
        )


# ---------------------------------------------------------------------------- LiRA (offline)


@pytest.fixture(scope="module")
def lira_and_loss(overfit: lk.LabModel, split: dict[str, LabData]) -> tuple[Pv.MembershipResult, ...]:
    lira = Pv.lira_attack(
        overfit,
        split["members"],
        split["nonmembers"],
        shadow_data=split["attacker"].subset(range(400)),
        n_shadows=4,
        epochs=15,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    return lira, Pv.loss_attack(overfit, split["members"], split["nonmembers"])


def test_lira_beats_the_loss_threshold_at_low_fpr(lira_and_loss: tuple[Pv.MembershipResult, ...]) -> None:
    """Per-example calibration names more members at 1% FPR than one global loss threshold."""
    lira, loss = lira_and_loss
    assert lira.info["variance"] == "global"  # few shadows: one pooled variance, as the paper advises
    assert_gap(lira.tpr_at_fpr[0.01], 300, loss.tpr_at_fpr[0.01], 300, what="TPR at 1% FPR, LiRA over loss")
    assert_auc_above(loss.auc, 300, 300, what="loss-attack AUC")
    # its gain is at low FPR; over the whole curve it is at least not significantly worse
    worse = auc_paired_gap_lower(
        loss.member_scores, loss.nonmember_scores, lira.member_scores, lira.nonmember_scores
    )
    assert worse < 0, (lira.auc, loss.auc)
    assert len(lira.member_scores) == 300 and bool(torch.isfinite(lira.member_scores).all())


def test_lira_score_is_the_one_sided_gaussian_test(
    overfit: lk.LabModel, split: dict[str, LabData], lira_and_loss: tuple[Pv.MembershipResult, ...]
) -> None:
    """phi is the logit of p(true class); the score is -log P[Z >= phi] under N(mu_out, sigma_out)."""
    from scipy.stats import norm

    lira = lira_and_loss[0]
    with torch.no_grad():
        p = F.softmax(overfit(split["nonmembers"].x).double(), dim=1)
    p_y = p.gather(1, split["nonmembers"].y.view(-1, 1)).squeeze(1)
    phi = lira.info["phi"][300:]
    unsaturated = p_y < 0.999
    assert bool(unsaturated.any())
    assert torch.allclose(phi[unsaturated], torch.log(p_y / (1 - p_y))[unsaturated], atol=1e-4)
    mu, sigma = lira.info["mu_out"][300:], lira.info["sigma_out"][300:]
    assert bool((sigma == sigma[0]).all()) and float(sigma[0]) > 0
    expected = -norm.logsf(((phi - mu) / sigma).numpy())
    assert torch.allclose(lira.nonmember_scores, torch.as_tensor(expected, dtype=torch.float64), atol=1e-6)


def test_lira_through_an_api_and_per_example_variance(
    overfit: lk.LabModel, split: dict[str, LabData]
) -> None:
    """Rounded scores still leak; per-example variances differ between examples."""
    api = PredictionAPI(overfit, output="scores", rounding=3)
    result = Pv.lira_attack(
        api,
        split["members"],
        split["nonmembers"],
        shadow_data=split["attacker"].subset(range(200)),
        n_shadows=3,
        variance="per_example",
        epochs=5,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert "via API (scores)" in result.name and result.info["variance"] == "per_example"
    assert api.queries_used == 600
    assert result.info["sigma_out"].unique().numel() > 1
    assert_auc_above(result.auc, 300, 300, what="LiRA AUC through the API")


def test_lira_bad_inputs(overfit: lk.LabModel, split: dict[str, LabData]) -> None:
    """Too few shadows, an unknown variance, shadow data that holds candidates: each is named."""
    members, nonmembers = split["members"].subset(range(20)), split["nonmembers"].subset(range(20))
    pool = split["attacker"].subset(range(40))
    kw = {"epochs": 1, "progress": False}
    with pytest.raises(ValueError, match="n_shadows must be at least 2"):
        Pv.lira_attack(overfit, members, nonmembers, shadow_data=pool, n_shadows=1, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance must be 'auto', 'global' or 'per_example'"):
        Pv.lira_attack(overfit, members, nonmembers, shadow_data=pool, variance="pooled", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="5 of the members are also in shadow_data"):
        leaky = split["members"].subset(range(15, 45))
        Pv.lira_attack(overfit, members, nonmembers, shadow_data=leaky, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 4"):
        Pv.lira_attack(overfit, members, nonmembers, shadow_data=pool.subset(range(3)), **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="shadow_data must be a LabData"):
        Pv.lira_attack(overfit, members, nonmembers, shadow_data=pool.x, **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="train_shadow must return a LabModel"):
        Pv.lira_attack(
            overfit,
            members,
            nonmembers,
            shadow_data=pool,
            train_shadow=lambda d, g: nn.Linear(64, 10),
            progress=False,
        )
