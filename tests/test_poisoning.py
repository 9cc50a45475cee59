"""labkit.poisoning: label flipping, backdoors, their metrics, detection and mitigation."""

from __future__ import annotations

import pytest
import torch
from margins import assert_gap, assert_rate_above, assert_rate_below, gap_lower

import labkit as lk
from labkit import poisoning as P
from labkit.data import LabData
from labkit.models.zoo import Recipe

SMALL = Recipe("digits-small", "digits", "SmallCNN width 16 for fast tests", arch={"width": 16})
EPOCHS = 6


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def train_data() -> LabData:
    return lk.data.load("digits", split="train")


@pytest.fixture(scope="module")
def test_data() -> LabData:
    return lk.data.load("digits", split="test")


def fit(data: LabData, seed: int = 0) -> torch.nn.Module:
    return P.retrain_without(
        data, [], model=SMALL, epochs=EPOCHS, generator=torch.Generator().manual_seed(seed), progress=False
    )


@pytest.fixture(scope="module")
def clean_model(train_data: LabData) -> torch.nn.Module:
    return fit(train_data)


@pytest.fixture(scope="module")
def poisoned(train_data: LabData) -> P.Poisoned:
    trigger = P.patch_trigger(train_data.input_shape, size=2)
    return P.backdoor(
        train_data, trigger=trigger, target=0, rate=0.05, generator=torch.Generator().manual_seed(1)
    )


@pytest.fixture(scope="module")
def backdoored(poisoned: P.Poisoned) -> torch.nn.Module:
    return fit(poisoned.data)


# ---------------------------------------------------------------------------- label flipping


def test_random_flipping_flips_exactly_the_fraction(train_data: LabData) -> None:
    """round(rate * N) labels change, each to a different class; inputs and the original stay."""
    y_before, x_before = train_data.y.clone(), train_data.x.clone()
    bad = P.flip_labels(train_data, rate=0.1, generator=torch.Generator().manual_seed(0))
    changed = torch.nonzero(bad.data.y != train_data.y).flatten()
    assert len(bad.indices) == round(0.1 * len(train_data))
    assert torch.equal(changed, bad.indices)  # every chosen label really changed
    assert torch.equal(bad.original_labels, train_data.y[bad.indices])
    assert torch.equal(bad.data.x, train_data.x)
    assert torch.equal(train_data.y, y_before) and torch.equal(train_data.x, x_before)
    assert bad.rate == pytest.approx(0.1, abs=1 / len(train_data))


def test_targeted_flipping_moves_only_the_source_class(train_data: LabData) -> None:
    """source=3 -> target=8 at rate 0.5: half the 3s become 8s, nothing else moves."""
    n3 = int((train_data.y == 3).sum())
    bad = P.flip_labels(train_data, rate=0.5, source=3, target=8, generator=torch.Generator().manual_seed(0))
    assert len(bad.indices) == round(0.5 * n3)
    assert bool((train_data.y[bad.indices] == 3).all()) and bool((bad.data.y[bad.indices] == 8).all())
    others = torch.ones(len(train_data), dtype=torch.bool)
    others[bad.indices] = False
    assert torch.equal(bad.data.y[others], train_data.y[others])
    data, indices = bad  # unpacks as (data, indices)
    assert data is bad.data and indices is bad.indices


def test_target_only_flipping_and_reproducibility(train_data: LabData) -> None:
    """Only a target: non-target examples become the target; the same generator repeats."""
    a = P.flip_labels(train_data, rate=0.2, target=5, generator=torch.Generator().manual_seed(3))
    b = P.flip_labels(train_data, rate=0.2, target=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.data.y, b.data.y)
    assert len(a.indices) == round(0.2 * int((train_data.y != 5).sum()))
    assert bool((a.data.y[a.indices] == 5).all()) and bool((train_data.y[a.indices] != 5).all())


# ---------------------------------------------------------------------------- triggers


def test_patch_and_blend_triggers_stay_in_range() -> None:
    """A patch replaces exactly its square; a blend moves every pixel by at most alpha."""
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    patch = P.patch_trigger((3, 8, 8), size=3, position="top-left", pattern="white")
    out = patch(x)
    assert torch.equal(out[:, :, :3, :3], torch.ones(5, 3, 3, 3))
    assert torch.equal(out[:, :, 3:, :], x[:, :, 3:, :]) and torch.equal(out[:, :, :, 3:], x[:, :, :, 3:])
    blend = P.blend_trigger((3, 8, 8), alpha=0.15, generator=torch.Generator().manual_seed(0))
    mixed = blend(x)
    assert float((mixed - x).abs().max()) <= 0.15 + 1e-6
    assert float(mixed.min()) >= 0 and float(mixed.max()) <= 1
    assert blend.area == pytest.approx(0.15)


def test_backdoor_poisons_the_rate_with_the_trigger(train_data: LabData, poisoned: P.Poisoned) -> None:
    """5% of rows, none from the target class, get the trigger and the target label."""
    idx = poisoned.indices
    assert len(idx) == round(0.05 * len(train_data))
    assert bool((train_data.y[idx] != 0).all()) and bool((poisoned.data.y[idx] == 0).all())
    assert torch.equal(poisoned.data.x[idx], poisoned.trigger(train_data.x[idx]))  # type: ignore[misc]
    mask = poisoned.mask
    assert torch.equal(poisoned.data.x[~mask], train_data.x[~mask])
    assert "backdoor" in poisoned._repr_markdown_()


# ---------------------------------------------------------------------------- metrics


def test_backdoor_works_and_keeps_clean_accuracy(
    clean_model: torch.nn.Module, backdoored: torch.nn.Module, poisoned: P.Poisoned, test_data: LabData
) -> None:
    """BadNets at 5%: most triggered digits go to the target, the clean model ignores the trigger,
    and the backdoor costs no clean accuracy that 360 test digits can resolve."""
    report = P.evaluate_backdoor(
        {"clean": clean_model, "backdoored": backdoored}, test_data, poisoned=poisoned
    )
    n, n_asr = len(test_data), int((test_data.y != 0).sum())
    assert_rate_above(report["backdoored"]["asr"], n_asr, 0.5, what="backdoored ASR")
    assert_rate_below(report["clean"]["asr"], n_asr, 0.1, what="clean model ASR")
    cost = gap_lower(report["clean"]["clean_acc"], n, report["backdoored"]["clean_acc"], n)
    assert cost < 0, f"the backdoor costs clean accuracy: {report['clean']} vs {report['backdoored']}"
    table = report._repr_markdown_()
    assert "| backdoored |" in table and "poison rate 5.0%" in table


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize("method", ["spectral", "clustering"])
def test_detection_rates_are_consistent_with_the_indices(
    method: str, backdoored: torch.nn.Module, poisoned: P.Poisoned
) -> None:
    """TPR/FPR are the overlap of flagged and poisoned rows; the detector beats chance (TPR > FPR)."""
    if method == "spectral":
        det = P.spectral_signatures(backdoored, poisoned.data, expected_rate=0.35)
    else:
        det = P.activation_clustering(backdoored, poisoned.data)
    score = det.evaluate(poisoned)
    flagged, truth = set(det.flagged.tolist()), set(poisoned.indices.tolist())
    n = len(poisoned.data)
    assert score.true_positives == len(flagged & truth)
    assert score.tpr == pytest.approx(len(flagged & truth) / len(truth))
    assert score.fpr == pytest.approx(len(flagged - truth) / (n - len(truth)))
    assert score.poison_rate == pytest.approx(poisoned.rate)
    assert_gap(score.tpr, len(truth), score.fpr, n - len(truth), what=f"{method}: TPR over FPR")
    assert "true positive rate" in score._repr_markdown_()


def test_detection_rates_by_hand() -> None:
    """Flagged {0,1,5} against poisoned {0,1,2,3} among 10 rows."""
    s = P.detection_rates([0, 1, 5], [0, 1, 2, 3], n=10)
    assert (s.tpr, s.fpr, s.precision) == (0.5, pytest.approx(1 / 6), pytest.approx(2 / 3))
    with pytest.raises(ValueError, match="must lie in 0..9"):
        P.detection_rates([12], [0], n=10)


def test_public_features_are_what_spectral_signatures_reads(
    backdoored: torch.nn.Module, poisoned: P.Poisoned
) -> None:
    """P.features gives the representations: the top-singular-vector score of a class matches."""
    reps = P.features(backdoored, poisoned.data.x)
    assert reps.shape == (len(poisoned.data), 2 * 16 * 2 * 2)  # SmallCNN width 16 on 8x8: 64 features
    idx = torch.nonzero(poisoned.data.y == 0).flatten()
    centred = reps[idx].double() - reps[idx].double().mean(0)
    tau = (centred @ torch.linalg.svd(centred, full_matrices=False).Vh[0]) ** 2
    det = P.spectral_signatures(backdoored, poisoned.data, expected_rate=0.1, classes=[0])
    assert torch.allclose(det.scores[idx].double(), tau, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- mitigation


def test_mitigations_lower_the_attack_success(
    backdoored: torch.nn.Module, poisoned: P.Poisoned, test_data: LabData
) -> None:
    """Retraining without the flagged rows, and fine-pruning on clean data, both cut the ASR."""
    defender, held_out = test_data.subset(range(180)), test_data.subset(range(180, 360))
    flagged = P.activation_clustering(backdoored, poisoned.data).flagged
    retrained = P.retrain_without(
        poisoned.data,
        flagged,
        model=SMALL,
        epochs=EPOCHS,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    pruned = P.fine_prune(backdoored, defender, generator=torch.Generator().manual_seed(0), progress=False)
    report = P.evaluate_backdoor(
        {"none": backdoored, "retrained": retrained, "fine-pruned": pruned.model}, held_out, poisoned=poisoned
    )
    before = report["none"]["asr"]
    n, n_asr = len(held_out), int((held_out.y != 0).sum())
    assert_gap(before, n_asr, report["retrained"]["asr"], n_asr, what="ASR, before over retrained")
    assert_gap(before, n_asr, report["fine-pruned"]["asr"], n_asr, what="ASR, before over fine-pruned")
    assert_rate_above(report["fine-pruned"]["clean_acc"], n, 0.8, what="fine-pruned clean accuracy")
    assert 0 < len(pruned.pruned) < pruned.channels
    assert len(pruned.accuracy_curve) == len(pruned.pruned) + 1
    # the suspect model itself is untouched: still backdoored
    assert P.attack_success_rate(backdoored, held_out, trigger=poisoned.trigger, target=0) == before  # type: ignore[arg-type]


def test_clean_label_backdoor_keeps_labels_and_beats_the_plain_trigger(
    clean_model: torch.nn.Module, train_data: LabData, test_data: LabData
) -> None:
    """Only target-class images change, labels stay; adversarial perturbation makes it work."""
    trigger = P.patch_trigger(train_data.input_shape, size=3)
    kwargs = {"trigger": trigger, "target": 0, "rate": 0.07, "surrogate": clean_model}
    plain = P.clean_label_backdoor(train_data, eps=0.0, generator=torch.Generator().manual_seed(1), **kwargs)  # type: ignore[arg-type]
    strong = P.clean_label_backdoor(train_data, eps=0.3, generator=torch.Generator().manual_seed(1), **kwargs)  # type: ignore[arg-type]
    assert torch.equal(strong.data.y, train_data.y)
    assert bool((train_data.y[strong.indices] == 0).all()) and len(strong.indices) == round(
        0.07 * len(train_data)
    )
    outside = trigger.mask[0] == 0
    delta = (strong.data.x[strong.indices] - train_data.x[strong.indices])[:, :, outside]
    assert float(delta.abs().max()) <= 0.3 + 1e-5
    asr_plain = P.attack_success_rate(fit(plain.data), test_data, trigger=trigger, target=0)
    asr_strong = P.attack_success_rate(fit(strong.data), test_data, trigger=trigger, target=0)
    n_asr = int((test_data.y != 0).sum())
    assert_gap(asr_strong, n_asr, asr_plain, n_asr, what="clean-label ASR, eps 0.3 over eps 0")


# ---------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(train_data: LabData, clean_model: torch.nn.Module) -> None:
    """Rates outside [0, 1], oversized triggers, unknown classes, impossible requests."""
    trig = P.patch_trigger(train_data.input_shape, size=2)
    with pytest.raises(ValueError, match=r"rate must be a fraction in \[0, 1\], got 1.5"):
        P.flip_labels(train_data, rate=1.5)
    with pytest.raises(ValueError, match=r"rate must be a fraction in \[0, 1\], got -0.1"):
        P.backdoor(train_data, trigger=trig, target=0, rate=-0.1)
    with pytest.raises(ValueError, match="a 9x9 patch does not fit in an image of 8x8 pixels"):
        P.patch_trigger(train_data.input_shape, size=9)
    with pytest.raises(ValueError, match=r"target=10 is not a class: expected an index in 0..9"):
        P.backdoor(train_data, trigger=trig, target=10, rate=0.1)
    with pytest.raises(ValueError, match="source and target are the same class"):
        P.flip_labels(train_data, rate=0.1, source=2, target=2)
    with pytest.raises(ValueError, match="only .* are eligible"):
        P.backdoor(train_data, trigger=trig, target=0, rate=0.2, source=1)
    with pytest.raises(ValueError, match="can only poison the target class"):
        P.clean_label_backdoor(train_data, trigger=trig, target=0, rate=0.5, surrogate=clean_model)
    with pytest.raises(ValueError, match=r"the trigger is for images of shape \(3, 8, 8\)"):
        P.backdoor(train_data, trigger=P.patch_trigger((3, 8, 8)), target=0, rate=0.1)
    with pytest.raises(TypeError, match="must be a LabData"):
        P.flip_labels(train_data.x, rate=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be in"):
        P.blend_trigger((1, 8, 8), alpha=0.0)
    with pytest.raises(ValueError, match="expected_rate must be a fraction"):
        P.spectral_signatures(clean_model, train_data, expected_rate=2.0)
    with pytest.raises(ValueError, match="every row is flagged"):
        P.remove_flagged(train_data, range(len(train_data)))
