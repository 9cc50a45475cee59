"""labkit.stress: corruptions, the corruption benchmark, tabular stress and endpoint fuzzing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from margins import assert_auc_paired_gap, assert_gap, auc_gap_lower
from torch import nn

import labkit as lk
from labkit.stress import (
    CORRUPTIONS,
    TABULAR_STRESSES,
    corrupt,
    corruption_benchmark,
    fuzz,
    fuzz_inputs,
    jpeg,
    stress_tabular,
    tabular_stress_report,
)

NAMES = sorted(CORRUPTIONS)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def signs() -> torch.Tensor:
    return lk.data.load("signs", split="test", n=24).x


@pytest.fixture(scope="module")
def digits() -> lk.data.LabData:
    return lk.data.load("digits", split="test")


@pytest.fixture(scope="module")
def small_digits(digits: lk.data.LabData) -> torch.Tensor:
    return digits.x[:24]


@pytest.fixture(scope="module")
def transactions() -> tuple[lk.data.LabData, lk.data.LabData]:
    return (
        lk.data.load("transactions", split="train", n=4000),
        lk.data.load("transactions", split="test", n=4000),
    )


@pytest.fixture(scope="module")
def fraud_model() -> lk.LabModel:
    return lk.models.pretrained("transactions-mlp", progress=False)


# --------------------------------------------------------------------------- corruptions
def test_there_are_at_least_twelve_corruptions_in_five_families() -> None:
    assert len(CORRUPTIONS) >= 12
    assert {c.family for c in CORRUPTIONS.values()} == {"noise", "blur", "weather", "digital", "geometric"}
    assert all(len(c.levels) == 5 for c in CORRUPTIONS.values())


@pytest.mark.parametrize("name", NAMES)
def test_corruption_keeps_shape_dtype_range_and_leaves_input_alone(name: str, signs: torch.Tensor) -> None:
    x = signs.clone()
    out = corrupt(x, name, 3, generator=seeded())
    assert torch.equal(x, signs), "the input was modified"
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - x).abs().mean()) > 1e-3, "severity 3 should visibly change the images"


@pytest.mark.parametrize("name", NAMES)
def test_corruption_is_deterministic_under_a_seeded_generator(name: str, signs: torch.Tensor) -> None:
    a = corrupt(signs, name, 4, generator=seeded(7))
    b = corrupt(signs, name, 4, generator=seeded(7))
    assert torch.equal(a, b)
    if CORRUPTIONS[name].random:
        c = corrupt(signs, name, 4, generator=seeded(8))
        assert not torch.equal(a, c), "another seed should give another corruption"


@pytest.mark.parametrize("name", NAMES)
def test_distance_to_the_clean_image_grows_with_severity(
    name: str, signs: torch.Tensor, small_digits: torch.Tensor
) -> None:
    for x in (signs, small_digits):  # 32x32 RGB and 8x8 grey
        mse = [float((corrupt(x, name, s, generator=seeded()) - x).pow(2).mean()) for s in range(1, 6)]
        assert all(a < b for a, b in itertools.pairwise(mse)), f"{name}: {mse}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_corruptions_follow_the_input_dtype(dtype: torch.dtype, signs: torch.Tensor) -> None:
    x = signs[:4].to(dtype)
    for name in ("gaussian_noise", "jpeg", "rotation", "pixelate"):
        out = corrupt(x, name, 2, generator=seeded())
        assert out.dtype == dtype and out.shape == x.shape


def test_severity_lowers_digit_accuracy_on_average(
    digits: lk.data.LabData, digits_model: lk.LabModel
) -> None:
    x, y = digits.batch(60)
    mean_acc = []
    for s in (1, 3, 5):  # every corruption of the 80 digits in one batch, so one forward pass
        xs = torch.cat([corrupt(x, n, s, generator=seeded()) for n in NAMES])
        mean_acc.append(lk.models.accuracy(digits_model, xs, y.repeat(len(NAMES))))
    n = len(y) * len(NAMES)
    assert_gap(mean_acc[0], n, mean_acc[1], n, what="accuracy, severity 1 over 3")
    assert_gap(mean_acc[1], n, mean_acc[2], n, what="accuracy, severity 3 over 5")


def test_jpeg_error_grows_as_quality_falls(signs: torch.Tensor) -> None:
    errors = [float((jpeg(signs, quality=q) - signs).abs().mean()) for q in (95, 50, 10)]
    assert errors[0] < errors[1] < errors[2]
    assert torch.equal(jpeg(signs, quality=50), jpeg(signs, quality=50))


def test_contrast_at_full_strength_is_exact() -> None:
    x = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2)
    out = corrupt(x, "contrast", 5)  # factor 0.15 around the mean 0.4
    assert torch.allclose(out.flatten(), torch.tensor([0.4 - 0.2 * 0.15, 0.4 + 0.2 * 0.15]))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "snow", "severity": 1}, ValueError, "unknown corruption 'snow'"),
        ({"name": "fog", "severity": 0}, ValueError, "severity must be an integer from 1"),
        ({"name": "fog", "severity": 6}, ValueError, "severity must be an integer from 1"),
        ({"name": "fog", "severity": 2.5}, ValueError, "severity must be an integer from 1"),
        ({"name": "fog", "severity": True}, ValueError, "severity must be an integer from 1"),
        ({"name": "fog", "severity": 1, "generator": 3}, TypeError, "generator must be a torch.Generator"),
    ],
)
def test_corrupt_rejects_bad_arguments(kwargs: dict, error: type, match: str, signs: torch.Tensor) -> None:
    with pytest.raises(error, match=match):
        corrupt(signs, **kwargs)


def test_corrupt_rejects_bad_images(signs: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="empty batch"):
        corrupt(signs[:0], "fog", 1)
    with pytest.raises(ValueError, match="outside"):
        corrupt(signs * 2, "fog", 1)
    with pytest.raises(ValueError, match="NaN"):
        corrupt(torch.full((1, 1, 4, 4), float("nan")), "fog", 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        corrupt(signs[0], "fog", 1)
    with pytest.raises(TypeError, match="floating-point"):
        corrupt((signs * 255).to(torch.uint8), "fog", 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        corrupt(signs.numpy(), "fog", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quality"):
        jpeg(signs, quality=0)


# --------------------------------------------------------------------------- benchmark
def test_mce_of_a_model_against_itself_is_100(digits: lk.data.LabData, digits_model: lk.LabModel) -> None:
    report = corruption_benchmark(
        digits_model,
        digits,
        corruptions=["contrast", "rotation"],
        severities=[2, 4],
        baseline=digits_model,
        n=64,
        generator=seeded(),
        progress=False,
    )
    assert report.mce == pytest.approx(100.0)
    assert report.relative_mce == pytest.approx(100.0)
    assert all(a >= b for a, b in (report.accuracy[c] for c in report.corruptions))
    md, html = report._repr_markdown_(), report._repr_html_()
    assert "mCE 100.0" in md and "| rotation |" in md and "<table>" in html
    import matplotlib

    matplotlib.use("Agg")
    fig = report.plot()
    assert fig.axes and fig.axes[0].get_title().startswith("model: accuracy")


def test_benchmark_is_reproducible_and_reuses_a_baseline_report(
    digits: lk.data.LabData, digits_model: lk.LabModel
) -> None:
    kwargs = {"corruptions": ["occlusion"], "severities": [3, 5], "n": 64, "progress": False}
    a = corruption_benchmark(digits_model, digits, generator=seeded(1), **kwargs)
    b = corruption_benchmark(digits_model, digits, generator=seeded(1), **kwargs)
    assert a.accuracy == b.accuracy and a.mce is None
    with torch.random.fork_rng():
        torch.manual_seed(0)
        weak = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # an untrained baseline: near chance
    base = corruption_benchmark(weak, digits, generator=seeded(1), **kwargs)
    c = corruption_benchmark(digits_model, digits, baseline=base, generator=seeded(1), **kwargs)
    assert c.mce is not None and c.mce < 60, "a trained CNN errs far less than an untrained baseline"


def test_benchmark_rejects_bad_arguments(digits: lk.data.LabData, digits_model: lk.LabModel) -> None:
    with pytest.raises(ValueError, match="unknown corruption 'snow'"):
        corruption_benchmark(digits_model, digits, corruptions=["snow"], progress=False)
    with pytest.raises(ValueError, match="severity must be an integer from 1"):
        corruption_benchmark(digits_model, digits, severities=[0], progress=False)
    with pytest.raises(ValueError, match="empty"):
        corruption_benchmark(digits_model, (digits.x[:0], digits.y[:0]), progress=False)
    with pytest.raises(ValueError, match="labels"):
        corruption_benchmark(digits_model, (digits.x[:5], digits.y[:4]), progress=False)
    with pytest.raises(ValueError, match="images"):
        corruption_benchmark(digits_model, lk.data.load("transactions", split="test", n=50), progress=False)


# --------------------------------------------------------------------------- tabular stress
@pytest.mark.parametrize("name", sorted(TABULAR_STRESSES))
def test_tabular_stress_is_pure_and_seeded(name: str, transactions: tuple) -> None:
    train, test = transactions
    x = test.x.clone()
    kwargs = {"feature_names": test.feature_names, "reference": train.x}
    a = stress_tabular(x, name, 4, generator=seeded(3), **kwargs)
    b = stress_tabular(x, name, 4, generator=seeded(3), **kwargs)
    assert torch.equal(x, test.x)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, x)
    assert bool(torch.isfinite(a).all())


def test_unit_error_is_cents_instead_of_dollars(transactions: tuple) -> None:
    _, test = transactions
    out = stress_tabular(test.x, "unit_error", 5, feature_names=test.feature_names)
    shift = out - test.x
    j, k = test.feature_names.index("log_amount"), test.feature_names.index("amount_vs_typical")
    assert torch.allclose(shift[:, j], torch.full_like(shift[:, j], math.log(100.0)))
    assert torch.allclose(shift[:, k], torch.full_like(shift[:, k], math.log(100.0)))
    others = [i for i in range(shift.shape[1]) if i not in (j, k)]
    assert bool((shift[:, others] == 0).all())


def test_missing_values_as_nan_or_imputed(transactions: tuple) -> None:
    _, test = transactions
    nan = stress_tabular(test.x, "missing", 3, missing="nan", generator=seeded())
    share = float(torch.isnan(nan).float().mean())
    assert 0.3 < share < 0.4  # severity 3 removes 35 %
    imputed = stress_tabular(test.x, "missing", 3, generator=seeded())
    assert not bool(torch.isnan(imputed).any())
    changed, holes = imputed != test.x, torch.isnan(nan)  # the same seed picks the same cells
    assert not bool((changed & ~holes).any())
    assert int(changed.sum()) >= 0.95 * int(holes.sum())


def test_tabular_stress_lowers_auc(transactions: tuple, fraud_model: lk.LabModel) -> None:
    train, test = transactions
    report = tabular_stress_report(
        fraud_model, test, severities=[1, 5], reference=train, generator=seeded(), progress=False
    )
    clean = report.clean["auc"]
    assert clean > 0.9
    n_pos = int(test.y.sum())
    n_neg = len(test) - n_pos
    for stress in report.stresses:
        mild, harsh = report.metric(stress, "auc")
        assert auc_gap_lower(harsh, mild, n_pos, n_neg) < 0, (
            f"{stress}: severity 5 {harsh:.3f} beats 1 {mild:.3f}"
        )
    # The drop itself, paired on the same transactions (DeLong): with ~1.4% fraud, 4000 rows hold
    # too few frauds to resolve the smaller drops (unit errors: about 0.05 of AUC), 20000 do.
    big = lk.data.load("transactions", split="test", n=20000)
    fraud = big.y == 1

    def scores(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fraud_model(x).softmax(1)[:, 1]

    clean_scores = scores(big.x)
    for stress in report.stresses:
        xs = stress_tabular(
            big.x, stress, 5, feature_names=big.feature_names, reference=train.x, generator=seeded()
        )
        harsh_scores = scores(xs)
        assert_auc_paired_gap(
            clean_scores[fraud], clean_scores[~fraud], harsh_scores[fraud], harsh_scores[~fraud],
            what=f"ROC-AUC, clean over {stress} at severity 5",
        )  # fmt: skip
    assert "recall @ FPR 0.01" in report._repr_markdown_()


def test_nan_rows_are_refused_by_a_lab_model_and_recorded(
    transactions: tuple, fraud_model: lk.LabModel
) -> None:
    _, test = transactions
    report = tabular_stress_report(
        fraud_model, test, stresses=["missing"], severities=[1], missing="nan", progress=False
    )
    assert "NaN" in report.rows[0]["error"] and math.isnan(report.rows[0]["auc"])


def test_tabular_stress_rejects_bad_input(transactions: tuple) -> None:
    _, test = transactions
    with pytest.raises(ValueError, match="unknown tabular stress 'typo'"):
        stress_tabular(test.x, "typo", 1)
    with pytest.raises(ValueError, match="severity"):
        stress_tabular(test.x, "shift", 9)
    with pytest.raises(ValueError, match="NaN"):
        stress_tabular(torch.full((3, 2), float("nan")), "shift", 1)
    with pytest.raises(ValueError, match="empty"):
        stress_tabular(test.x[:0], "shift", 1)
    with pytest.raises(ValueError, match="feature_names has 2 names"):
        stress_tabular(test.x, "shift", 1, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="unit_error needs units"):
        stress_tabular(torch.rand(5, 3), "unit_error", 1)
    with pytest.raises(ValueError, match="missing must be"):
        stress_tabular(test.x, "missing", 1, missing="drop")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fuzzing
def test_fuzz_inputs_cover_the_edge_cases() -> None:
    names = {c.name for c in fuzz_inputs((3, 8, 8))}
    for expected in (
        "nan_one",
        "inf",
        "empty_batch",
        "huge_batch",
        "uint8",
        "float64",
        "wrong_size",
        "constant_low",
        "above_range",
        "none",
        "string",
        "numpy",
    ):
        assert expected in names
    tabular = {c.name for c in fuzz_inputs((12,), value_range=None)}
    assert "above_range" not in tabular and "nan_one" in tabular


def test_a_lab_model_rejects_every_invalid_input(digits_model: lk.LabModel) -> None:
    report = fuzz(
        digits_model, (1, 8, 8), num_classes=10, skip=["float64"], huge_batch=512, generator=seeded()
    )
    assert report.passed, report._repr_markdown_()
    invalid = [r for r in report.results if r.expect == "reject"]
    assert len(invalid) >= 15 and all(r.outcome == "rejected" for r in invalid)
    assert report["valid"].outcome == "returned" and report["valid"].good


def test_a_lab_model_handles_float64_cleanly(digits_model: lk.LabModel) -> None:
    assert fuzz(digits_model, (1, 8, 8), huge_batch=16)["float64"].good


def test_a_naive_endpoint_fails_the_fuzzer(digits_model: lk.LabModel) -> None:
    net = digits_model.net
    report = fuzz(lambda x: net(x).softmax(1), (1, 8, 8), huge_batch=64, generator=seeded())
    assert not report.passed
    assert report["nan_one"].outcome == "returned" and "NaN" in report["nan_one"].detail
    assert report["above_range"].outcome == "returned" and not report["above_range"].good
    assert report["wrong_size"].outcome == "crashed"
    assert report["none"].outcome == "crashed"  # a TypeError from inside conv2d is not validation
    assert "raised inside torch" in report["none"].detail
    assert report.counts()["bad"] >= 10
    assert "BAD" in report._repr_markdown_()


def test_fuzz_with_a_declared_batch_limit_requires_rejection(digits_model: lk.LabModel) -> None:
    report = fuzz(digits_model, (1, 8, 8), max_batch=64, skip=["float64"])
    assert report["huge_batch"].expect == "reject" and not report["huge_batch"].good

    def limited(x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] > 64:
            raise ValueError("at most 64 images per request")
        return digits_model(x)

    assert fuzz(limited, (1, 8, 8), max_batch=64, skip=["float64"]).passed


def test_fuzz_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="callable"):
        fuzz(42, (1, 8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown fuzz case 'nan'"):
        fuzz(lambda x: x, (1, 8, 8), skip=["nan"])
    with pytest.raises(ValueError, match="input_shape"):
        fuzz(lambda x: x, (0, 8))
    with pytest.raises(ValueError, match="value_range"):
        list(fuzz_inputs((4,), value_range=(1.0, float("nan"))))
