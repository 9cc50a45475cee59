"""The synthetic transactions: shapes, determinism, fraud rate, drift, fairness hooks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

import labkit as lk
from labkit.data.transactions import FEATURES, GENERATOR_VERSION, PATTERNS, load_transactions


@pytest.fixture(scope="module")
def train() -> lk.data.LabData:
    return load_transactions("train", 20000, seed=0)


def test_generator_version_is_recorded_and_keys_the_cached_models(
    train: lk.data.LabData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bumping GENERATOR_VERSION (after any change to the generator) retires the cached models."""
    assert train.info["generator_version"] == GENERATOR_VERSION >= 1
    before = lk.models.weights_path("transactions-mlp", "ci")
    monkeypatch.setattr("labkit.data.transactions.GENERATOR_VERSION", GENERATOR_VERSION + 1)
    assert lk.models.weights_path("transactions-mlp", "ci") != before


def test_shapes_dtypes_and_names(train: lk.data.LabData) -> None:
    assert 10 <= len(FEATURES) <= 14
    assert train.name == "transactions" and train.split == "train"
    assert train.x.shape == (20000, len(FEATURES)) and train.x.dtype == torch.float32
    assert train.y.shape == (20000,) and train.y.dtype == torch.int64
    assert set(train.y.unique().tolist()) == {0, 1}
    assert train.classes == ["legit", "fraud"]
    assert train.feature_names == FEATURES
    assert bool(torch.isfinite(train.x).all())
    for flag in ("online", "foreign", "new_device"):
        column = train.x[:, FEATURES.index(flag)]
        assert set(column.unique().tolist()) <= {0.0, 1.0}
    assert train.info["drift"] == 0.0 and train.info["seed"] == 0
    assert sum(train.info["fraud_patterns"].values()) == int(train.y.sum())
    assert set(train.info["fraud_patterns"]) == set(PATTERNS)


@pytest.mark.parametrize("rate", [0.015, 0.1])
def test_fraud_rate_close_to_requested(rate: float) -> None:
    n = 100_000
    data = load_transactions("train", n, seed=3, fraud_rate=rate)
    observed = float(data.y.float().mean())
    tolerance = 5 * (rate * (1 - rate) / n) ** 0.5  # five binomial standard deviations
    assert abs(observed - rate) < tolerance
    assert data.info["observed_fraud_rate"] == pytest.approx(observed)


def test_same_arguments_same_data_and_streams_differ(train: lk.data.LabData) -> None:
    again = load_transactions("train", 20000, seed=0)
    assert torch.equal(train.x, again.x) and torch.equal(train.y, again.y)
    assert torch.equal(train.sensitive, again.sensitive)
    test = load_transactions("test", 20000, seed=0)
    other_seed = load_transactions("train", 20000, seed=1)
    assert not torch.equal(train.x, test.x)
    assert not torch.equal(train.x, other_seed.x)
    # The first n rows of a larger request are the rows of the smaller one.
    small = load_transactions("train", 5000, seed=0)
    assert torch.equal(small.x, train.x[:5000]) and torch.equal(small.y, train.y[:5000])


def test_global_rng_untouched() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    load_transactions("train", 1000)
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_np)


def test_registry_loads_transactions_with_options() -> None:
    data = lk.data.load("transactions", split="test", n=500, seed=2, drift=0.3)
    assert len(data) == 500 and data.info["drift"] == 0.3 and data.info["seed"] == 2
    assert torch.equal(data.x, load_transactions("test", 500, seed=2, drift=0.3).x)


def test_drift_shifts_features_smoothly(train: lk.data.LabData) -> None:
    amount, online = FEATURES.index("log_amount"), FEATURES.index("online")
    ks, online_share = [], []
    for drift in (0.0, 0.25, 0.5, 1.0):
        test = load_transactions("test", 20000, seed=0, drift=drift)
        ks.append(ks_2samp(train.x[:, amount].numpy(), test.x[:, amount].numpy()).statistic)
        online_share.append(float(test.x[:, online].mean()))
        # Drift changes behaviour, not who is a fraudster: labels stay the same.
        assert torch.equal(test.y, load_transactions("test", 20000, seed=0).y)
    assert ks[0] < 0.03  # drift 0 is the training distribution
    assert ks == sorted(ks) and ks[-1] > 0.1
    assert online_share == sorted(online_share) and online_share[-1] > online_share[0] + 0.1
    # A tiny drift changes the data a little, not completely.
    a = load_transactions("test", 5000, drift=0.0).x
    b = load_transactions("test", 5000, drift=0.01).x
    assert float((a - b).abs().mean()) < 0.05


def test_drift_makes_a_trained_model_worse(train: lk.data.LabData) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train.x.numpy(), train.y.numpy())
    aucs = []
    for drift in (0.0, 1.0):
        test = load_transactions("test", 10000, seed=0, drift=drift)
        aucs.append(roc_auc_score(test.y.numpy(), model.predict_proba(test.x.numpy())[:, 1]))
    # Learnable but not trivial without drift; clearly worse under full drift.
    assert 0.8 < aucs[0] < 0.995
    assert aucs[1] < aucs[0] - 0.05


def test_sensitive_attribute_binary_correlated_but_not_a_feature(train: lk.data.LabData) -> None:
    s = train.sensitive
    assert s is not None and s.dtype == torch.int64 and s.shape == (len(train),)
    assert set(s.unique().tolist()) == {0, 1}
    assert 0.2 < float(s.float().mean()) < 0.8
    assert not {"age", "age_group", "customer_age", "sensitive"} & set(FEATURES)
    sf = s.float()
    corr = [abs(float(torch.corrcoef(torch.stack([train.x[:, j], sf]))[0, 1])) for j in range(len(FEATURES))]
    assert max(corr) < 0.6  # not a copy of any column
    assert sum(c > 0.05 for c in corr) >= 2  # but habits differ between the groups


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "valid"}, "split"),
        ({"n": 0}, "n must be a positive integer"),
        ({"n": -5}, "n must be a positive integer"),
        ({"n": 2.5}, "n must be a positive integer"),
        ({"drift": -0.1}, r"drift must be a number in \[0, 1\]"),
        ({"drift": 1.5}, r"drift must be a number in \[0, 1\]"),
        ({"drift": float("nan")}, r"drift must be a number in \[0, 1\]"),
        ({"fraud_rate": 0.0}, r"fraud_rate must be a number in the open interval \(0, 0.5\)"),
        ({"fraud_rate": 0.5}, r"fraud_rate must be a number in the open interval \(0, 0.5\)"),
        ({"fraud_rate": -0.01}, r"fraud_rate must be a number in the open interval \(0, 0.5\)"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"drfit": 0.5}, "unknown option.*'drfit'.*expected only seed, drift and fraud_rate"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"split": "train", "n": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        load_transactions(**args)  # type: ignore[arg-type]


def test_bad_option_through_registry() -> None:
    with pytest.raises(ValueError, match="drfit"):
        lk.data.load("transactions", n=100, drfit=0.5)


def test_large_request_is_complete_and_reproducible() -> None:
    """200,000 rows come back whole and the same for the same seed (its speed is compared with
    parsing the same rows from CSV in benchmarks/run.py, not timed here)."""
    data = load_transactions("train", 200_000, seed=5)
    again = load_transactions("train", 200_000, seed=5)
    assert len(data) == 200_000 and data.x.shape[0] == data.y.shape[0] == 200_000
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y)
    assert bool(torch.isfinite(data.x).all())
    assert set(data.y.unique().tolist()) == {0, 1}
