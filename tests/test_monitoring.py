"""labkit.monitoring: PSI and KS per feature, MMD on embeddings, and the windowed DriftMonitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import labkit as lk
from labkit.monitoring import (
    DriftMonitor,
    embed,
    ks_test,
    mmd_test,
    prediction_psi,
    prediction_test,
    psi,
    psi_from_proportions,
)
from labkit.stress import corrupt


@pytest.fixture(scope="module")
def reference() -> lk.data.LabData:
    return lk.data.load("transactions", split="train", n=4000)


@pytest.fixture(scope="module")
def stream() -> lk.data.LabData:
    return lk.data.load("transactions", split="test", n=8000)


def test_psi_matches_a_hand_computed_example() -> None:
    # expected 50/50, actual 25/75: (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    hand = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi_from_proportions([0.5, 0.5], [0.25, 0.75]) == pytest.approx(hand)
    assert psi_from_proportions([50, 50], [25, 75]) == pytest.approx(hand)  # counts work too
    # decile bins of 0..999; the current sample fills only the lower five, 20 % each
    eps = 1e-4
    actual = np.array([0.2] * 5 + [eps] * 5) / (1 + 5 * eps)
    expected = np.full(10, 0.1)
    hand = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert psi(np.arange(1000.0), np.arange(500.0), bins=10) == pytest.approx(hand, rel=1e-9)
    assert psi(np.arange(1000.0), np.arange(1000.0)) == pytest.approx(0.0, abs=1e-12)


def test_psi_bins_flags_by_value() -> None:
    ref = torch.tensor([0.0] * 80 + [1.0] * 20)
    cur = torch.tensor([0.0] * 50 + [1.0] * 50)
    hand = (0.5 - 0.8) * math.log(0.5 / 0.8) + (0.5 - 0.2) * math.log(0.5 / 0.2)
    assert psi(ref, cur) == pytest.approx(hand, rel=1e-3)  # the unseen-value bin adds ~1e-4


def test_ks_and_prediction_psi() -> None:
    g = np.random.default_rng(0)
    same, shifted = ks_test(g.normal(size=(400, 2)), np.c_[g.normal(size=400), g.normal(size=400) + 0.5])
    assert same[1] > 0.01 and shifted[1] < 1e-6
    p = torch.softmax(torch.randn(300, 4, generator=torch.Generator().manual_seed(0)), 1)
    assert prediction_psi(p, p) == pytest.approx(0.0, abs=1e-9)
    assert prediction_psi(p, p[:, [1, 0, 2, 3]]) > 0.01
    assert prediction_test(p, p) > 0.99 and prediction_test(p, p[:, [1, 0, 2, 3]]) < 0.05
    scores = torch.rand(400, generator=torch.Generator().manual_seed(1))
    binary = torch.stack([1 - scores, scores], 1)
    assert prediction_test(binary, binary.flip(1)) > 0.01  # symmetric scores: same distribution
    assert prediction_test(binary, torch.stack([1 - scores**2, scores**2], 1)) < 1e-6


def test_mmd_detects_a_shift_and_not_its_absence() -> None:
    g = torch.Generator().manual_seed(0)
    a, b, c = (
        torch.randn(120, 8, generator=g),
        torch.randn(120, 8, generator=g),
        torch.randn(120, 8, generator=g),
    )
    null = mmd_test(a, b, permutations=200, generator=g)
    shift = mmd_test(a, c + 0.6, permutations=200, generator=g)
    assert null.p_value > 0.05 and abs(null.statistic) < 0.02
    assert shift.p_value < 0.01 and shift.statistic > 5 * abs(null.statistic)
    assert 1 / 201 <= shift.p_value <= 1


def test_monitor_alerts_on_drifted_transactions_and_stays_quiet_at_zero_drift(
    reference: lk.data.LabData, stream: lk.data.LabData
) -> None:
    model = lk.models.pretrained("transactions-mlp", progress=False)
    alerts = []
    monitor = DriftMonitor(reference, model=model, on_alert=alerts.append)
    for i in range(8):  # eight months of undrifted traffic
        monitor.update(stream.x[i * 1000 : (i + 1) * 1000], label=f"month {i}")
    assert monitor.alerts == [], monitor._repr_markdown_()
    drifted = lk.data.load("transactions", split="test", n=1000, drift=0.7, seed=3)
    step = monitor.update(drifted, label="drift 0.7")
    metrics = {a.metric for a in step.alerts}
    assert {"ks_min_p", "psi_max", "prediction_p"} <= metrics
    assert alerts == step.alerts and step.metrics["ks_drifted"] >= 5
    assert "online" in step.drifted_features() or "log_amount" in step.drifted_features()
    assert max(monitor.metric("psi_max")[:8]) < 0.05 < step.metrics["psi_max"]
    assert "drift 0.7" in monitor._repr_markdown_() and "<table>" in monitor._repr_html_()
    import matplotlib

    matplotlib.use("Agg")
    fig = monitor.plot()
    assert len(fig.axes) == 4  # KS, PSI, output test, output PSI
    import matplotlib.pyplot as plt

    _, grid = plt.subplots(4, 1)  # the numpy array plt.subplots returns is accepted as it is
    assert monitor.plot(axes=grid) is grid[0].figure


def test_ks_false_alarm_rate_is_controlled() -> None:
    g = torch.Generator().manual_seed(1)
    monitor = DriftMonitor(torch.randn(2000, 6, generator=g), ks_alpha=0.05, psi_threshold=None)
    for _ in range(40):
        monitor.update(torch.randn(300, 6, generator=g))
    assert len(monitor.alerts) <= 5  # Bonferroni keeps it at about 5 % of steps or less


def test_window_spans_batches_and_patience_delays_alerts(
    reference: lk.data.LabData, stream: lk.data.LabData
) -> None:
    monitor = DriftMonitor(reference, window=1500, patience=2, psi_threshold=None)
    steps = [monitor.update(stream.x[i * 500 : (i + 1) * 500]) for i in range(4)]
    assert [s.n for s in steps] == [500, 1000, 1500, 1500]
    drifted = lk.data.load("transactions", split="test", n=1500, drift=1.0, seed=4).x
    first = monitor.update(drifted[:500])
    second = monitor.update(drifted[500:1000])
    assert first.metrics["ks_min_p"] < monitor.thresholds["ks_min_p"]  # crossed once ...
    assert first.alerts == [] and [a.metric for a in second.alerts] == ["ks_min_p"]  # ... alerts the 2nd time


def test_image_monitor_uses_embeddings_and_flags_corrupted_digits() -> None:
    model = lk.models.pretrained("digits-cnn", progress=False)
    train, test = lk.data.load("digits", split="train", n=400), lk.data.load("digits", split="test")
    assert embed(model, test.x[:5]).shape == (5, 128)
    monitor = DriftMonitor(
        train, model=model, permutations=100, max_samples=200, generator=torch.Generator().manual_seed(0)
    )
    quiet = monitor.update(test.x[:150], label="clean")
    noisy = corrupt(test.x[150:300], "gaussian_noise", 5, generator=torch.Generator().manual_seed(0))
    loud = monitor.update(noisy, label="noise s5")
    assert quiet.alerts == [] and quiet.metrics["mmd_p"] > 0.01
    assert "mmd_p" in [a.metric for a in loud.alerts] and loud.metrics["mmd_p"] < 0.01
    assert loud.metrics["mmd"] > 2 * abs(quiet.metrics["mmd"])


def test_monitor_rejects_bad_input(reference: lk.data.LabData) -> None:
    with pytest.raises(ValueError, match="NaN"):
        DriftMonitor(torch.full((10, 3), float("nan")))
    with pytest.raises(ValueError, match="psi_threshold must be a number"):
        DriftMonitor(reference, psi_threshold=float("nan"))
    with pytest.raises(ValueError, match="ks_alpha must be in"):
        DriftMonitor(reference, ks_alpha=1.5)
    with pytest.raises(ValueError, match="window"):
        DriftMonitor(reference, window=1)
    with pytest.raises(ValueError, match="feature_names has 2 names"):
        DriftMonitor(reference.x, feature_names=["a", "b"])
    monitor = DriftMonitor(reference)
    with pytest.raises(ValueError, match=r"expected \(N, 12\)"):
        monitor.update(torch.zeros(5, 11))
    with pytest.raises(TypeError, match="floating-point"):
        monitor.update(torch.zeros(5, 12, dtype=torch.long))
    with pytest.raises(ValueError, match="nothing to plot"):
        monitor.plot()
    with pytest.raises(ValueError, match="different lengths|bins"):
        psi_from_proportions([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="bins"):
        psi([1.0, 2.0], [1.0], bins=1)
    with pytest.raises(ValueError, match="at least two rows"):
        mmd_test(torch.zeros(1, 3), torch.zeros(4, 3))
