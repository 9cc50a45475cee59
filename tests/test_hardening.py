"""Hardening: adversarial training, catastrophic overfitting, TRADES, distillation, transforms, BPDA, EOT."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from functools import partial

import pytest
import torch
from margins import assert_gap, assert_paired_gap, assert_rate_above, assert_rate_below, gap_lower
from torch import nn

import labkit as lk
from labkit import hardening as H
from labkit.attacks.threat import ProbabilityOutputWarning

EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def train_data() -> lk.data.LabData:
    return lk.data.load("digits", split="train", profile="ci")


@pytest.fixture(scope="module")
def test_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return lk.data.load("digits", split="test", profile="ci").batch(200)


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    """The whole digits test split (360): accuracy comparisons need every example they can get."""
    data = lk.data.load("digits", split="test", profile="ci")
    return data.x, data.y


@pytest.fixture(scope="module")
def standard() -> lk.LabModel:
    return lk.models.pretrained("digits-cnn", profile="ci", progress=False)


def still_right(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | None = None
) -> torch.Tensor:
    """Per example: right on x and, when given, on x_adv too."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
        return ok if x_adv is None else ok & (model(x_adv).argmax(1) == y)


def pgd20_right(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: right both clean and under PGD-20 (what :func:`pgd20` averages)."""
    x_adv = lk.attacks.pgd(model, x, y, eps=EPS, steps=20, generator=torch.Generator().manual_seed(0))
    return still_right(model, x, y, x_adv)


def small_cnn(data: lk.data.LabData, width: int = 16, seed: int = 0) -> lk.LabModel:
    recipe = dataclasses.replace(lk.models.RECIPES["digits-cnn"], arch={"width": width})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return lk.models.build(recipe, data)


# --------------------------------------------------------------------------------------------
# Adversarial training
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pgd_trained(train_data: lk.data.LabData) -> tuple[lk.LabModel, H.AdversarialHistory]:
    model = small_cnn(train_data)
    history = H.pgd_at(
        model, train_data, eps=EPS, epochs=5, steps=3, lr=3e-3, monitor_size=128, progress=False
    )
    return model, history


def test_pgd_training_raises_robust_accuracy_well_above_the_standard_model(
    pgd_trained: tuple[lk.LabModel, H.AdversarialHistory],
    standard: lk.LabModel,
    test_set: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """A short PGD-AT run beats the standard CNN's PGD-20 accuracy, significantly on 360 digits."""
    model, history = pgd_trained
    x, y = test_set
    n = len(y)
    assert_paired_gap(
        pgd20_right(model, x, y), pgd20_right(standard, x, y), what="PGD-20, PGD-AT over standard"
    )
    assert_rate_above(lk.models.accuracy(model, x, y), n, 0.9, what="PGD-AT clean accuracy")
    assert not model.training and model.meta["defense"] == "PGD adversarial training"
    assert len(history) == 5 and {"clean_acc", "robust_acc", "train_adv_acc", "lr"} <= set(history.final)
    robust = history["robust_acc"]
    assert_gap(robust[-1], 128, robust[0], 128, what="monitor robust accuracy, last over first epoch")
    assert "training time" in history._repr_markdown_()


def test_training_is_reproducible_and_leaves_data_alone(train_data: lk.data.LabData) -> None:
    """Same generator, same weights; the data and the global RNG are untouched; eval mode after."""
    data = train_data.subset(range(96))
    x_before = data.x.clone()
    state = torch.get_rng_state()
    weights = []
    for _ in range(2):
        model = small_cnn(data, width=8)
        H.fast_at(
            model,
            data,
            eps=EPS,
            epochs=1,
            monitor_size=32,
            generator=torch.Generator().manual_seed(3),
            progress=False,
        )
        assert not model.training and model.check_inputs
        weights.append(model.state_dict())
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(data.x, x_before)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_any_attack_callable_plugs_in(train_data: lk.data.LabData) -> None:
    """The loop takes any (model, x, y) -> x_adv, here the validated lk.attacks.pgd, without warnings."""
    data = train_data.subset(range(64))
    model = small_cnn(data, width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = H.adversarial_training(
            model,
            data,
            attack=partial(lk.attacks.pgd, eps=EPS, steps=2),
            epochs=1,
            clean_weight=0.5,
            progress=False,
        )
    assert {"train_acc", "train_adv_acc", "robust_acc"} <= set(history.final)


def test_catastrophic_overfitting_is_detected_and_the_best_epoch_restored(
    train_data: lk.data.LabData, standard: lk.LabModel
) -> None:
    """When robust accuracy on the monitor batch collapses, the loop warns, stops and restores the best weights."""
    data = train_data.subset(range(128))
    model = copy.deepcopy(standard)
    attack = partial(H.fgsm_rs_attack, eps=EPS)
    with pytest.warns(H.CatastrophicOverfittingWarning, match="catastrophic overfitting at epoch 3"):
        history = H.adversarial_training(
            model, data, attack=attack, epochs=5, lr=1e-4, monitor_attack=_collapsing_after(2), progress=False
        )
    best = history.rows[history.restored_epoch - 1]["robust_acc"] if history.restored_epoch else 0.0
    assert best > 0.9 and history.rows[-1]["robust_acc"] < 0.5
    assert history.catastrophic_overfitting and history.overfit_epoch == 3
    assert history.restored_epoch in (1, 2)
    assert len(history) == 3  # stopped early
    x, y = data.x, data.y
    assert lk.models.accuracy(model, x, y) > 0.9  # the restored weights


def _collapsing_after(epochs: int) -> lk.attacks.whitebox.Attack:
    """A monitor attack that finds nothing for ``epochs`` epochs, then defeats every example."""
    calls = {"n": 0}

    def monitor(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return x if calls["n"] <= epochs else torch.rand_like(x).round()

    return monitor


def _no_attack(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x


def _train_until_collapse(
    model: lk.LabModel, data: lk.data.LabData, **options: object
) -> H.AdversarialHistory:
    """Five epochs on unattacked batches while the monitor attack collapses robust accuracy at epoch 3."""
    return H.adversarial_training(
        model, data, attack=_no_attack, epochs=5, lr=1e-4, monitor_attack=_collapsing_after(2), progress=False,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


def test_gap_alarm_catches_a_model_that_beats_only_its_training_attack(
    train_data: lk.data.LabData, standard: lk.LabModel
) -> None:
    """With the drop alarm off, a wide lead of training-attack accuracy over PGD accuracy still stops training."""
    data = train_data.subset(range(128))
    model = copy.deepcopy(standard)
    with pytest.warns(
        H.CatastrophicOverfittingWarning, match="the model beats its training attack, not the threat model"
    ):
        history = _train_until_collapse(model, data, overfit_drop=None, overfit_gap=0.3)
    assert history.overfit_epoch == 3 and len(history) == 3
    assert history.restored_epoch in (1, 2)
    last = history.rows[-1]
    assert last["attack_acc"] - last["robust_acc"] > 0.3
    assert all(row["attack_acc"] - row["robust_acc"] < 0.05 for row in history.rows[:2])
    assert history.overfit_reason is not None and "monitor_attack only" in history.overfit_reason
    assert "catastrophic overfitting at epoch 3" in history._repr_markdown_()
    labels = [line.get_label() for line in history.plot().axes[0].lines]
    assert "attack_acc" in labels


def test_gap_alarm_fires_on_the_slow_form_where_the_drop_alarm_cannot(
    train_data: lk.data.LabData, standard: lk.LabModel
) -> None:
    """Robust accuracy that never rose gives the drop alarm nothing to fall from; the gap alarm still fires."""
    data = train_data.subset(range(128))
    strong = partial(lk.attacks.pgd, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0))

    def run(gap: float | None) -> H.AdversarialHistory:
        return H.adversarial_training(
            copy.deepcopy(standard), data, attack=_no_attack, epochs=3, lr=1e-5, monitor_attack=strong,
            monitor_size=64, overfit_gap=gap, progress=False,
        )  # fmt: skip

    quiet = run(None)
    assert not quiet.catastrophic_overfitting and len(quiet) == 3  # PGD accuracy near 0 throughout: no drop
    with pytest.warns(H.CatastrophicOverfittingWarning, match="at epoch 2"):  # judged from the second epoch
        loud = run(0.3)
    assert loud.overfit_epoch == 2 and len(loud) == 2 and loud.restored_epoch == 1
    assert all(row["attack_acc"] > 0.9 and row["robust_acc"] < 0.2 for row in loud.rows)


def test_without_early_stop_the_alarm_warns_once_and_training_goes_on(
    train_data: lk.data.LabData, standard: lk.LabModel
) -> None:
    """early_stop=False: one warning at the first bad epoch, every epoch trained, no weights restored."""
    data = train_data.subset(range(128))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = _train_until_collapse(copy.deepcopy(standard), data, early_stop=False)
    alarms = [w for w in caught if issubclass(w.category, H.CatastrophicOverfittingWarning)]
    assert len(alarms) == 1 and "at epoch 3" in str(alarms[0].message)
    assert history.overfit_epoch == 3 and len(history) == 5 and history.restored_epoch is None
    assert "training went on" in history._repr_markdown_()


def test_sane_fast_at_does_not_trigger_the_detector(train_data: lk.data.LabData) -> None:
    """FGSM with a random start and step 1.25 eps trains without a robust-accuracy collapse."""
    data = train_data.subset(range(512))
    model = small_cnn(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", H.CatastrophicOverfittingWarning)
        history = H.fast_at(
            model, data, eps=EPS, epochs=4, lr=3e-3, monitor_size=128, overfit_gap=0.3, progress=False
        )
    assert not history.catastrophic_overfitting and history.restored_epoch is None
    assert max(a - r for a, r in zip(history["attack_acc"], history["robust_acc"], strict=True)) < 0.3
    robust = history["robust_acc"]
    assert_gap(robust[-1], 128, robust[0], 128, what="monitor robust accuracy, last over first epoch")


def test_trades_trades_clean_accuracy_for_robustness(
    train_data: lk.data.LabData, standard: lk.LabModel, test_set: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A short TRADES run (beta=6) is significantly more robust than the standard CNN, and no more accurate."""
    x, y = test_set
    n = len(y)
    model = small_cnn(train_data)
    history = H.trades(
        model, train_data, eps=EPS, beta=6.0, epochs=4, steps=3, lr=3e-3, monitor_size=64, progress=False
    )
    assert history.notes["method"] == "TRADES" and "train_acc" in history.final
    assert_paired_gap(
        pgd20_right(model, x, y), pgd20_right(standard, x, y), what="PGD-20, TRADES over standard"
    )
    # the clean cost is a few points, too few to resolve on 360 digits: only refuse a clean *gain*
    clean_trades, clean_std = lk.models.accuracy(model, x, y), lk.models.accuracy(standard, x, y)
    assert gap_lower(clean_trades, n, clean_std, n) < 0, (clean_trades, clean_std)


# --------------------------------------------------------------------------------------------
# Defensive distillation
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distilled(standard: lk.LabModel, train_data: lk.data.LabData) -> lk.LabModel:
    return H.distill(standard, train_data, temperature=100, progress=False)


def test_distillation_masks_gradients_and_logit_attacks_see_through(
    distilled: lk.LabModel, standard: lk.LabModel, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Plain PGD on the T=1 softmax looks strong against distillation; PGD on z/T and CW on logits break it."""
    x, y = test_batch
    n = len(y)
    student, teacher = lk.models.accuracy(distilled, x, y), lk.models.accuracy(standard, x, y)
    assert gap_lower(teacher, n, student, n) < 0, (teacher, student)  # no clean accuracy lost to resolve
    assert distilled.meta["temperature"] == 100.0
    x_adv = x[:32].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(distilled(x_adv), y[:32])
    (grad,) = torch.autograd.grad(loss, x_adv)
    zero = float((grad.flatten(1).norm(dim=1) == 0).float().mean())
    assert_rate_above(zero, 32, 0.5, what="zero-gradient share")  # saturated softmax
    naive = pgd20_right(distilled, x, y)
    x_scaled = lk.attacks.pgd(
        H.with_temperature(distilled, 100),
        x,
        y,
        eps=EPS,
        steps=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert_paired_gap(naive, still_right(distilled, x, y, x_scaled), what="PGD-20, T=1 softmax over z/T")
    cw_adv = lk.attacks.cw(distilled, x[:64], y[:64], steps=30, search_steps=3)
    fooled = float((distilled.predict(cw_adv) != y[:64]).float().mean())
    assert_rate_above(fooled, 64, 0.5, what="CW success on the distilled model")


def test_softmax_output_wrapper_warns_and_masks(
    distilled: lk.LabModel, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """The softmax-output wrapper shares weights, returns probabilities, and attacks warn about it."""
    x, y = test_batch
    probs = H.softmax_output(distilled)
    assert torch.allclose(probs(x[:8]).sum(1), torch.ones(8))
    assert probs.meta["base"] is distilled
    with pytest.warns(ProbabilityOutputWarning):
        lk.attacks.fgsm(probs, x[:8], y[:8], eps=EPS)


# --------------------------------------------------------------------------------------------
# Input transforms, feature squeezing, BPDA, EOT
# --------------------------------------------------------------------------------------------


def test_transforms_do_what_they_say() -> None:
    """Bit depth rounds to 2^b levels, the median filter removes salt noise, JPEG stays close to its smooth twin."""
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    squeezed = H.BitDepth(2)(x)
    assert set(torch.unique(squeezed * 3).round().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (squeezed - x).abs().max() <= 1 / 6 + 1e-6
    salt = torch.zeros(1, 1, 8, 8)
    salt[0, 0, 3, 4] = 1.0
    assert H.MedianFilter(3)(salt).abs().max() == 0
    assert H.MedianFilter(2)(x).shape == x.shape
    jpeg = H.JPEG(quality=50)
    assert (jpeg(x) - jpeg.approx(x)).abs().mean() < 0.03
    assert (H.JPEG(quality=95)(x) - x).abs().mean() < (jpeg(x) - x).abs().mean()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(jpeg.approx(xg).sum(), xg)
    assert float(g.abs().sum()) > 0  # the approximation is differentiable where JPEG is not
    (g0,) = torch.autograd.grad(jpeg(xg).sum(), xg, allow_unused=True)
    assert g0 is None or float(g0.abs().sum()) == 0 or not jpeg.differentiable


def test_bpda_keeps_the_forward_pass_and_replaces_the_gradient() -> None:
    """BPDA(BitDepth) equals BitDepth in value and has the identity's gradient (rounding has none)."""
    x = torch.rand(2, 1, 4, 4).requires_grad_(True)
    exact = H.BitDepth(3)
    assert torch.equal(H.bpda(exact)(x), exact(x))
    (g_exact,) = torch.autograd.grad(exact(x).sum(), x)
    (g_bpda,) = torch.autograd.grad(H.bpda(exact)(x).sum(), x)
    assert float(g_exact.abs().max()) == 0.0
    assert torch.equal(g_bpda, torch.ones_like(x))


def test_bpda_of_a_random_composition_still_passes_gradients_through_the_rounding() -> None:
    """BPDA(BitDepth then noise) keeps one noisy, rounded forward pass and the identity's gradient."""
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    noise = H.GaussianNoise(0.05, generator=torch.Generator().manual_seed(1))
    composed = H.bpda(H.Compose(H.BitDepth(3), noise))
    assert composed.random
    noise.generator = torch.Generator().manual_seed(1)
    out = composed(x)
    noise.generator = torch.Generator().manual_seed(1)
    assert torch.equal(out, noise(H.BitDepth(3)(x)))
    (grad,) = torch.autograd.grad(out.sum(), x)
    inside = (out > 0) & (out < 1)  # the noise is clipped to [0, 1], which has no gradient
    assert inside.any() and torch.equal(grad[inside], torch.ones_like(grad[inside]))


@pytest.fixture(scope="module")
def squeezed(standard: lk.LabModel) -> lk.LabModel:
    return H.squeeze(standard, bits=3, median=None)


def test_bpda_breaks_feature_squeezing(
    squeezed: lk.LabModel, standard: lk.LabModel, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Naive PGD through the rounding gets zero gradients and fails; PGD through BPDA breaks the same model."""
    x, y = test_batch
    n = len(y)
    clean = lk.models.accuracy(squeezed, x, y)
    assert_rate_above(clean, n, 0.9, what="squeezed clean accuracy")
    naive = pgd20_right(squeezed, x, y)
    x_adv = lk.attacks.pgd(
        H.bpda(squeezed), x, y, eps=EPS, steps=20, generator=torch.Generator().manual_seed(0)
    )
    # zero gradients: naive PGD changes (almost) nothing, so it keeps the clean accuracy
    assert gap_lower(clean, n, float(naive.float().mean()), n) < 0, (clean, naive.float().mean())
    assert_paired_gap(naive, still_right(squeezed, x, y, x_adv), what="PGD-20, naive over BPDA")
    assert H.bpda(squeezed).meta["base"] is standard


def test_squeeze_detector_flags_adversarial_examples_more_than_clean(
    standard: lk.LabModel, test_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """At a 5% false positive rate on clean digits, most successful PGD examples are flagged."""
    x, y = test_batch
    detector = H.SqueezeDetector(standard).fit(x[:100], fpr=0.05)
    x_adv = lk.attacks.pgd(standard, x[100:], y[100:], eps=EPS, steps=20)
    fooled = standard.predict(x_adv) != y[100:]
    clean_rate = float(detector.detect(x[100:]).float().mean())
    adv_rate = float(detector.detect(x_adv)[fooled].float().mean())
    n_clean, n_adv = len(y) - 100, int(fooled.sum())
    assert_rate_below(clean_rate, n_clean, 0.2, what="false positives at a 5% target")
    assert_rate_above(adv_rate, n_adv, 0.5, what="successful PGD examples flagged")
    assert_gap(adv_rate, n_adv, clean_rate, n_clean, what="flag rate, adversarial over clean")
    assert "threshold" in detector._repr_markdown_()


def test_eot_averages_a_random_defence() -> None:
    """EOT attacks a random (noise) defence through the average of several draws, in one batched call."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1]]))
        net[1].bias.zero_()
    base = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    noisy = H.preprocess(base, H.GaussianNoise(0.05, generator=torch.Generator().manual_seed(0)))
    x = torch.rand(64, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    y = base.predict(x)
    attack = H.eot(partial(lk.attacks.pgd, eps=0.2, steps=10), n=8)
    x_adv = attack(noisy, x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.2 + 1e-6
    assert_rate_below(
        float((base.predict(x_adv) == y).float().mean()), 64, 0.5, what="accuracy under EOT-PGD"
    )
    assert "eot(pgd, 8)" in attack.__name__  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_arguments_raise_with_clear_messages(standard: lk.LabModel, train_data: lk.data.LabData) -> None:
    """Negative eps, non-positive temperatures, bad bit depths and the wrong types are refused."""
    data = train_data.subset(range(16))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        H.pgd_at(standard, data, eps=-0.1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        H.distill(standard, data, temperature=0, progress=False)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        H.with_temperature(standard, -1.0)
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        H.BitDepth(0)
    with pytest.raises(ValueError, match="quality must be in 1..100"):
        H.JPEG(quality=101)
    with pytest.raises(ValueError, match="loss must be 'ce' or 'trades'"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=1, loss="kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clean_weight must be in"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=1, clean_weight=1.5)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=0)
    with pytest.raises(ValueError, match="overfit_gap must be in"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=1, overfit_gap=1.5)
    with pytest.raises(ValueError, match="overfit_gap must be a finite number >= 0"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=1, overfit_gap=-0.1)
    with pytest.raises(ValueError, match="needs one: pass a stronger attack"):
        H.adversarial_training(standard, data, attack=H.fgsm_rs_attack, epochs=1, overfit_gap=0.3)
    with pytest.raises(ValueError, match="set monitor_size above 0"):
        H.adversarial_training(
            standard,
            data,
            attack=H.fgsm_rs_attack,
            epochs=1,
            overfit_gap=0.3,
            monitor_attack=_no_attack,
            monitor_size=0,
        )
    with pytest.raises(TypeError, match="attack must be a callable"):
        H.adversarial_training(standard, data, attack="pgd", epochs=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a labkit.LabModel"):
        H.squeeze(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs bits, median or both"):
        H.squeeze(standard, bits=None, median=None)
    with pytest.raises(ValueError, match="call .fit"):
        H.SqueezeDetector(standard).detect(data.x)
    with pytest.raises(ValueError, match="fpr must be"):
        H.SqueezeDetector(standard).fit(data.x, fpr=1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        H.eot(lk.attacks.fgsm, n=0)
    with pytest.raises(ValueError, match="preprocess or squeeze"):
        H.bpda(standard)
