"""Evaluation: robustness reports with intervals, the gradient-masking checklist, randomized smoothing."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from functools import partial

import pytest
import torch
from margins import assert_paired_gap, gap_lower
from scipy.stats import beta, norm
from torch import nn

import labkit as lk
from labkit import hardening as H
from labkit.eval import certify, checklist, clopper_pearson, robustness

EPS = 0.1


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def train_data() -> lk.data.LabData:
    return lk.data.load("digits", split="train", profile="ci")


@pytest.fixture(scope="module")
def test_data() -> lk.data.LabData:
    return lk.data.load("digits", split="test", profile="ci")


@pytest.fixture(scope="module")
def standard() -> lk.LabModel:
    return lk.models.pretrained("digits-cnn", profile="ci", progress=False)


@pytest.fixture
def tiny_linear() -> lk.LabModel:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]]))
        net[1].bias.zero_()
    return lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()


# --------------------------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::labkit.attacks.QueryBudgetWarning")
def test_robustness_report_worst_case_intervals_and_display(
    standard: lk.LabModel, test_data: lk.data.LabData
) -> None:
    """Worst case is at most every attack, eps=0 is clean accuracy, intervals contain the estimates."""
    attacks = {
        "fgsm": lk.attacks.fgsm,
        "pgd-10": partial(lk.attacks.pgd, steps=10, generator=torch.Generator().manual_seed(0)),
        "square": partial(lk.attacks.square, max_queries=50, generator=torch.Generator().manual_seed(0)),
    }
    report = robustness(standard, test_data, attacks=attacks, eps=[0.0, 0.05, EPS], n=80)
    assert report.n == 80 and report.eps == [0.0, 0.05, EPS]
    clean = report.accuracy("clean")
    for e in report.eps:
        worst = report.accuracy("worst", e)
        for name in attacks:
            assert worst <= report.accuracy(name, e) <= clean
        low, high = report.interval("worst", e)
        assert low <= worst <= high
    assert report.accuracy("worst", 0.0) == clean
    # eps 0.05 breaks only a couple of the 80 digits, so a strict drop from clean would hang on
    # them; doubling eps breaks significantly more of the same examples
    assert_paired_gap(report.worst[1], report.worst[2], what=f"worst case, eps 0.05 over {EPS}")
    # the per-example worst case is the AND of the per-attack results
    assert torch.equal(
        report.worst[2], report.correct["fgsm"][2] & report.correct["pgd-10"][2] & report.correct["square"][2]
    )
    assert "worst case" in report._repr_markdown_() and "<table>" in report._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    assert report.plot() is not None


def test_robustness_overrides_a_bound_eps_and_rejects_bad_input(tiny_linear: lk.LabModel) -> None:
    """An eps bound by partial is overridden per budget; negative eps, empty attacks and bad confidence raise."""
    x = torch.rand(32, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = tiny_linear.predict(x)
    report = robustness(tiny_linear, (x, y), attacks={"fgsm": partial(lk.attacks.fgsm, eps=0.5)}, eps=[0.0])
    assert report.accuracy("fgsm", 0.0) == 1.0
    with pytest.raises(ValueError, match="eps must be non-negative"):
        robustness(tiny_linear, (x, y), eps=[0.1, -0.1])
    with pytest.raises(ValueError, match="attacks is empty"):
        robustness(tiny_linear, (x, y), attacks={}, eps=0.1)
    with pytest.raises(ValueError, match="confidence must be in"):
        robustness(tiny_linear, (x, y), eps=0.1, confidence=1.0)
    with pytest.raises(TypeError, match="LabData or a tuple"):
        robustness(tiny_linear, x, eps=0.1)  # type: ignore[arg-type]


def test_clopper_pearson_matches_the_beta_quantiles() -> None:
    """The interval is the textbook beta-quantile interval and always contains k/n."""
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 120)]:
        low, high = clopper_pearson(k, n, confidence=0.9)
        assert low <= k / n <= high
        if 0 < k < n:
            assert low == pytest.approx(beta.ppf(0.05, k, n - k + 1))
            assert high == pytest.approx(beta.ppf(0.95, k + 1, n - k))


# --------------------------------------------------------------------------------------------
# checklist
# --------------------------------------------------------------------------------------------

MASKING_ROWS = ("eps_sweep", "unbounded", "blackbox", "gradients")


@pytest.fixture(scope="module")
def adversarially_trained(train_data: lk.data.LabData) -> lk.LabModel:
    recipe = dataclasses.replace(lk.models.RECIPES["digits-cnn"], arch={"width": 16})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = lk.models.build(recipe, train_data)
    H.pgd_at(model, train_data, eps=EPS, epochs=5, steps=3, lr=3e-3, monitor_size=64, progress=False)
    return model


def run_checklist(model: lk.LabModel, data: lk.data.LabData, n: int = 48) -> lk.eval.Checklist:
    return checklist(model, data, eps=EPS, n=n, queries=300, generator=torch.Generator().manual_seed(0))


def test_checklist_flags_defensive_distillation(
    standard: lk.LabModel, train_data: lk.data.LabData, test_data: lk.data.LabData
) -> None:
    """Distillation: zero gradients, a flat eps curve, a stronger margin loss and black-box attack, saturated logits."""
    distilled = H.distill(standard, train_data, temperature=100, progress=False)
    report = run_checklist(distilled, test_data)
    assert report.verdict == "suspect"
    for key in (*MASKING_ROWS, "loss"):
        assert report.status(key) == "red", (key, report[key])
    assert report.status("logits") in ("amber", "red")
    assert report.status("randomness") == "green"


def test_checklist_flags_feature_squeezing(standard: lk.LabModel, test_data: lk.data.LabData) -> None:
    """Bit-depth squeezing: rounding zeroes every gradient, so the gradient rows and black-box row turn red."""
    report = run_checklist(H.squeeze(standard, bits=3, median=None), test_data)
    assert report.verdict == "suspect"
    for key in MASKING_ROWS:
        assert report.status(key) == "red", (key, report[key])
    assert report["gradients"].evidence["zero-gradient examples"] == 1.0
    assert "background:#ffcdd2" in report._repr_html_() and "🔴" in report._repr_markdown_()


def test_checklist_passes_an_adversarially_trained_model(
    adversarially_trained: lk.LabModel, test_data: lk.data.LabData
) -> None:
    """A PGD-trained CNN is green on every row (its robustness is real, not masked).

    At the default n = 200 every gap between attacks is within a few examples (PGD-20 vs
    PGD-50x2 about 1%), far from significant; a smaller batch would leave each row to a
    handful of examples.
    """
    report = run_checklist(adversarially_trained, test_data, n=200)
    statuses = {r.key: r.status for r in report.rows}
    assert all(s == "green" for s in statuses.values()), statuses
    assert report.verdict == "pass" and not report.suspect
    assert report.n == 200 and report.notes["alpha"] == 0.05


def test_checklist_needs_significance_to_leave_green() -> None:
    """A gap or rate turns a row only when an exact test on the paired examples finds it significant.

    McNemar: 4 examples broken by one attack only (and none the other way) have p = 1/16 > 0.05;
    5 have p = 1/32. Binomial: 3 of 48 surviving (6%) is within chance of a 2% rate, 5 of 48 is not.
    """
    from scipy.stats import binom

    from labkit.eval.checklist import _beats, _gap_status, _rate_above

    def paired(only_kept: int, only_other: int, both: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
        kept = torch.tensor([True] * (both + only_kept) + [False] * only_other)
        other = torch.tensor([True] * both + [False] * only_kept + [True] * only_other)
        return kept, other

    assert binom.sf(3, 4, 0.5) == pytest.approx(1 / 16) and binom.sf(4, 5, 0.5) == pytest.approx(1 / 32)
    assert not _beats(*paired(4, 0), alpha=0.05)
    assert _beats(*paired(5, 0), alpha=0.05)
    assert not _beats(*paired(6, 1), alpha=0.05)  # p = 8/128
    assert not _beats(*paired(0, 9), alpha=0.05)  # the other attack is the stronger one
    assert _gap_status(4 / 48, False, 0.1, tol=2 / 48) == "green"
    assert _gap_status(5 / 48, True, 0.1, tol=2 / 48) == "red"
    assert _gap_status(3 / 48, True, 0.1, tol=2 / 48) == "amber"
    assert _gap_status(1 / 48, True, 0.1, tol=2 / 48) == "green"

    def surviving(k: int, n: int = 48) -> torch.Tensor:
        return torch.arange(n) < k

    assert not _rate_above(surviving(3), 0.02, alpha=0.05)
    assert _rate_above(surviving(5), 0.02, alpha=0.05)
    assert not _rate_above(surviving(8), 0.1, alpha=0.05) and _rate_above(surviving(10), 0.1, alpha=0.05)
    with pytest.raises(ValueError, match="alpha must be in"):
        checklist(nn.Flatten(), (torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)), eps=0.1, alpha=0)


def test_checklist_detects_randomness_and_uses_eot(tiny_linear: lk.LabModel) -> None:
    """A random defence is marked amber and attacked through EOT; a softmax output is red."""
    x = torch.rand(48, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = tiny_linear.predict(x)
    noisy = H.preprocess(tiny_linear, H.GaussianNoise(0.02))
    report = checklist(noisy, (x, y), eps=0.1, queries=20, eot_samples=4, black_box=False)
    assert report.status("randomness") == "amber" and report.notes["random"]
    assert report.status("blackbox") == "skipped"
    probs = checklist(H.softmax_output(tiny_linear), (x, y), eps=0.1, black_box=False)
    assert probs.status("logits") == "red"


def test_checklist_rejects_bad_input(tiny_linear: lk.LabModel) -> None:
    """eps must be positive; the query budget must be usable."""
    x = torch.rand(8, 1, 2, 2)
    y = tiny_linear.predict(x)
    with pytest.raises(ValueError, match="eps must be non-negative"):
        checklist(tiny_linear, (x, y), eps=-0.1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        checklist(tiny_linear, (x, y), eps=0.0)
    with pytest.raises(ValueError, match="queries must be"):
        checklist(tiny_linear, (x, y), eps=0.1, queries=0)


# --------------------------------------------------------------------------------------------
# certify
# --------------------------------------------------------------------------------------------


def test_certified_radius_matches_the_formula(tiny_linear: lk.LabModel) -> None:
    """radius = sigma * Phi^-1(pA_lower) with pA_lower the one-sided Clopper-Pearson bound of the votes."""
    x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.51, 0.51], [0.49, 0.49]]], [[[0.0, 0.0], [1.0, 1.0]]]])
    cert = certify(
        tiny_linear, x, sigma=0.25, n0=50, n=500, alpha=0.001, generator=torch.Generator().manual_seed(0)
    )
    assert cert.prediction.tolist()[0] == 1 and cert.prediction.tolist()[2] == 0
    for i in range(3):
        k = int(cert.counts[i])
        lower = beta.ppf(0.001, k, 500 - k + 1) if k > 0 else 0.0
        assert float(cert.pa_lower[i]) == pytest.approx(lower, rel=1e-5)
        if lower > 0.5:
            assert float(cert.radius[i]) == pytest.approx(0.25 * norm.ppf(lower), rel=1e-5)
        else:
            assert int(cert.prediction[i]) == -1 and float(cert.radius[i]) == 0.0
    # the middle input sits near the boundary (logit gap 0.08, its noise std 1.0): no certificate
    assert bool(cert.abstained[1])
    assert "abstained" in cert._repr_markdown_()


def test_certify_abstains_with_too_few_samples(tiny_linear: lk.LabModel) -> None:
    """With n = 5 even unanimous votes bound pA below 1/2 at alpha = 0.001 (0.001 ** (1/5) = 0.25)."""
    x = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    cert = certify(tiny_linear, x, sigma=0.1, n0=5, n=5, alpha=0.001)
    assert int(cert.counts[0]) == 5 and int(cert.prediction[0]) == -1 and float(cert.radius[0]) == 0.0
    assert float(cert.pa_lower[0]) == pytest.approx(0.001 ** (1 / 5), rel=1e-4)


def test_certified_accuracy_curve_is_non_increasing(
    standard: lk.LabModel, test_data: lk.data.LabData
) -> None:
    """Certified accuracy falls (weakly) with the radius and starts at most at clean accuracy."""
    x, y = test_data.batch(40)
    cert = certify(standard, x, sigma=0.25, n0=20, n=200, generator=torch.Generator().manual_seed(0))
    radii, accs = cert.curve(y, [0.0, 0.1, 0.25, 0.5, 1.0, 10.0])
    assert all(b <= a for a, b in itertools.pairwise(accs))
    clean = lk.models.accuracy(standard, x, y)
    assert gap_lower(accs[0], 40, clean, 40) < 0, (accs[0], clean)  # not significantly above clean
    assert accs[-1] == 0.0
    assert radii[0] == 0.0 and 0.0 < accs[0]


def test_noise_training_runs_and_leaves_the_global_rng_alone(train_data: lk.data.LabData) -> None:
    """Noise-augmented training runs from a generator, without touching the global RNG."""
    data = train_data.subset(range(64))
    model = lk.models.build("digits-cnn", data)
    state = torch.get_rng_state()
    history = lk.eval.train_with_noise(model, data, sigma=0.25, epochs=1, progress=False)
    assert len(history) == 1 and not model.training and model.meta["sigma"] == 0.25
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sigma": -0.1}, ValueError, "sigma must be a finite number > 0"),
        ({"sigma": 0.0}, ValueError, "sigma must be a finite number > 0"),
        ({"alpha": 0.0}, ValueError, "alpha must be in \\(0, 1\\)"),
        ({"alpha": 1.5}, ValueError, "alpha must be in \\(0, 1\\)"),
        ({"n0": 200, "n": 100}, ValueError, "n0 \\(200\\) must not exceed n \\(100\\)"),
        ({"n": 0}, ValueError, "n must be at least 1"),
    ],
)
def test_certify_rejects_bad_input(tiny_linear: lk.LabModel, kwargs: dict, error: type, match: str) -> None:
    """Bad sigma, alpha and sample sizes raise with a message naming the argument."""
    args = {"sigma": 0.25, "n0": 10, "n": 100, **kwargs}
    with pytest.raises(error, match=match):
        certify(tiny_linear, torch.rand(2, 1, 2, 2), **args)


def test_certify_rejects_out_of_range_inputs(tiny_linear: lk.LabModel) -> None:
    """Inputs outside [0, 1] are refused, not clamped."""
    with pytest.raises(ValueError, match="outside"):
        certify(tiny_linear, torch.full((1, 1, 2, 2), 1.5), sigma=0.25)
