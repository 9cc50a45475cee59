"""Black-box, transfer and physical attacks: budgets, transfer rates, the stop-sign sticker.

The eps-ball properties of simba, square, nes_pgd, hopskipjump, mi_fgsm and di_fgsm live in the
table of test_attacks.py; this file checks what the table cannot: that every query is counted
and the budget holds, what happens when it runs out, transfer between model families, and the
physical attacks, which are bounded by a patch size or a rotation rather than an eps ball.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from margins import assert_gap, assert_rate_above, assert_rate_below
from torch import nn

import labkit as lk
from labkit import attacks
from labkit.attacks.physical import _rotate_translate
from labkit.attacks.threat import ProbabilityOutputWarning
from labkit.data.signs import render


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small batches on a shared CPU: one intra-op thread, restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits_test() -> lk.data.LabData:
    return lk.data.load("digits", split="test")


class Counting(nn.Module):
    """Passes inputs to a model and counts them, and whether any arrived with autograd on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0
        self.with_grad = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.with_grad += int(torch.is_grad_enabled())
        return self.inner(x)


BLACKBOX: list[tuple[str, Callable[..., attacks.BlackBoxResult]]] = [
    ("simba-pixel", partial(attacks.simba, eps=0.1)),
    ("simba-dct", partial(attacks.simba, eps=0.1, basis="dct")),
    ("square", partial(attacks.square, eps=0.1)),
    ("nes-pgd", partial(attacks.nes_pgd, eps=0.1, samples=6)),
    ("hopskipjump", partial(attacks.hopskipjump, eps=0.1, norm="linf", init_evals=10)),
]
BB_IDS = [name for name, _ in BLACKBOX]


def quiet(fn: Callable[..., attacks.BlackBoxResult], *args: Any, **kwargs: Any) -> attacks.BlackBoxResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", attacks.QueryBudgetWarning)
        return fn(*args, **kwargs)


# --- query budgets ------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [7, 60])
@pytest.mark.parametrize(("name", "attack"), BLACKBOX, ids=BB_IDS)
def test_every_query_is_counted_and_the_budget_holds(
    name: str, attack: Any, budget: int, digits_model: lk.LabModel, digits_test: Any
) -> None:
    """The model sees exactly sum(queries) inputs, no example goes over budget, and no query
    runs with autograd on; a reported success is a real misclassification."""
    x, y = digits_test.x[:16], digits_test.y[:16]
    counted = Counting(digits_model).eval()
    result = quiet(attack, counted, x, y, max_queries=budget, generator=torch.Generator().manual_seed(0))
    assert counted.rows == int(result.queries.sum())
    assert int(result.queries.min()) >= 1 and int(result.queries.max()) <= budget
    assert counted.with_grad == 0
    assert result.queries.dtype == torch.int64 and result.success.dtype == torch.bool
    pred = digits_model.predict(result.x_adv)
    assert torch.equal(result.success, pred != y)
    assert not bool((result.exhausted & result.success).any()) or name == "hopskipjump"


@pytest.mark.parametrize(("name", "attack"), BLACKBOX, ids=BB_IDS)
def test_an_exhausted_budget_warns_and_is_reported(
    name: str, attack: Any, digits_model: lk.LabModel, digits_test: Any
) -> None:
    """Three queries cannot break a digit at eps 0.1: a QueryBudgetWarning names the budget and
    result.exhausted marks the examples that ran out."""
    x, y = digits_test.x[:8], digits_test.y[:8]
    with pytest.warns(attacks.QueryBudgetWarning, match=r"used their whole budget of max_queries=3"):
        result = attack(digits_model, x, y, max_queries=3, generator=torch.Generator().manual_seed(0))
    assert int(result.queries.max()) <= 3
    assert bool(result.exhausted[~result.success].all())


@pytest.mark.parametrize(("name", "attack"), BLACKBOX, ids=BB_IDS)
def test_a_budget_of_one_query_only_reads_the_clean_input(
    name: str, attack: Any, digits_model: lk.LabModel, digits_test: Any
) -> None:
    """max_queries=1 pays for the clean input only: x comes back unchanged."""
    x, y = digits_test.x[:8], digits_test.y[:8]
    result = quiet(attack, digits_model, x, y, max_queries=1)
    assert torch.equal(result.x_adv, x) and bool((result.queries == 1).all())


@pytest.mark.parametrize("bad", [0, -5])
@pytest.mark.parametrize(("name", "attack"), BLACKBOX, ids=BB_IDS)
def test_a_budget_below_one_is_rejected(
    name: str, attack: Any, bad: int, tiny_model: Any, batch: Any
) -> None:
    """A budget must pay at least for the clean input."""
    x, y = batch
    with pytest.raises(
        ValueError, match=rf"max_queries must be a positive number of queries per example, got {bad}"
    ):
        attack(tiny_model, x, y, max_queries=bad)
    with pytest.raises(TypeError, match=r"max_queries must be an integer"):
        attack(tiny_model, x, y, max_queries=2.5)


def test_examples_stop_as_soon_as_they_succeed(digits_model: lk.LabModel, digits_test: Any) -> None:
    """Examples already misclassified cost one query; broken ones stop early."""
    x, y = digits_test.x[:32], digits_test.y[:32].clone()
    y[:4] = (y[:4] + 1) % 10  # wrong labels: the model already "misclassifies" these
    result = quiet(
        attacks.square,
        digits_model,
        x,
        y,
        eps=0.2,
        max_queries=300,
        generator=torch.Generator().manual_seed(0),
    )
    assert bool((result.queries[:4] == 1).all()) and torch.equal(result.x_adv[:4], x[:4])
    broken = result.success[4:]
    assert int(broken.sum()) >= 8
    assert int(result.queries[4:][broken].max()) < 300
    assert result.median_queries() < 100
    assert "success rate" in result._repr_markdown_()


def test_a_prediction_function_returning_probabilities_works_silently(
    digits_model: lk.LabModel, digits_test: Any
) -> None:
    """A plain function returning softmax scores (what an API returns) is a valid target, and
    probabilities raise no gradient-masking warning: nothing is differentiated. A function has
    no training mode either, so no train-mode warning."""
    x, y = digits_test.x[:16], digits_test.y[:16]

    def api(batch: torch.Tensor) -> torch.Tensor:
        return digits_model(batch).softmax(dim=1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = attacks.simba(
            api, x, y, eps=0.2, max_queries=300, generator=torch.Generator().manual_seed(0)
        )
    assert not [w for w in caught if issubclass(w.category, ProbabilityOutputWarning)]
    assert not [w for w in caught if issubclass(w.category, lk.TrainModeWarning)]
    assert result.success_rate > 0.5
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module or a function"):
        attacks.square(42, x, y, eps=0.1)  # type: ignore[arg-type]


def test_square_and_dct_need_images() -> None:
    """Square windows and DCT directions only exist for (N, C, H, W) images."""
    tabular = lk.LabModel(nn.Linear(4, 2), input_shape=(4,), num_classes=2).eval()
    x = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    y = tabular.predict(x)
    with pytest.raises(ValueError, match=r"square needs images of shape \(N, C, H, W\)"):
        attacks.square(tabular, x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"basis='dct' needs images"):
        attacks.simba(tabular, x, y, eps=0.1, basis="dct")
    with pytest.raises(ValueError, match=r"basis must be one of 'pixel', 'dct'"):
        attacks.simba(tabular, x, y, eps=0.1, basis="haar")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"samples must be even"):
        attacks.nes_pgd(tabular, x, y, eps=0.1, samples=5)


def test_hopskipjump_targeted_starts_from_the_target_class(
    digits_model: lk.LabModel, digits_test: Any
) -> None:
    """Targeted, it needs starting points of the target class; from there it walks towards x
    while staying on target."""
    x, y = digits_test.x[:12], digits_test.y[:12]
    target = (y + 1) % 10
    with pytest.raises(ValueError, match=r"targeted hopskipjump needs starting_points"):
        attacks.hopskipjump(digits_model, x, target, targeted=True)
    pool_x = digits_test.x[100:]
    pool_pred = digits_model.predict(pool_x)  # start from images the model assigns to the target
    first = torch.tensor([int((pool_pred == t).nonzero()[0]) for t in target.tolist()])
    start = pool_x[first]
    result = attacks.hopskipjump(
        digits_model,
        x,
        target,
        targeted=True,
        starting_points=start,
        max_queries=400,
        init_evals=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert bool((digits_model.predict(result.x_adv) == target).all())
    assert bool(((result.x_adv - x).flatten(1).norm(dim=1) < (start - x).flatten(1).norm(dim=1)).all())


def test_as_attack_plugs_into_robust_accuracy(digits_model: lk.LabModel, digits_test: Any) -> None:
    """as_attack binds the settings and keeps x_adv, for tools that take (model, x, y) -> x_adv."""
    x, y = digits_test.x[:32], digits_test.y[:32]
    attack = attacks.as_attack(
        attacks.simba, eps=0.2, max_queries=100, generator=torch.Generator().manual_seed(0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", attacks.QueryBudgetWarning)
        robust = attacks.robust_accuracy(digits_model, x, y, attack)
    assert_gap(lk.models.accuracy(digits_model, x, y), 32, robust, 32, what="accuracy, clean over SimBA")


# --- transfer -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_surrogate() -> lk.LabModel:
    return attacks.train_surrogate(lk.data.load("digits", split="train"), family="mlp", seed=2, epochs=10)


def test_transfer_from_another_family_is_weaker_than_white_box(
    mlp_surrogate: lk.LabModel, digits_model: lk.LabModel, digits_test: Any
) -> None:
    """MI-FGSM crafted on an MLP fools the CNN sometimes, but less often than crafted on the CNN
    itself (measured: 63% against 93% at eps 0.2)."""
    x, y = digits_test.x[:200], digits_test.y[:200]
    attack = partial(attacks.mi_fgsm, eps=0.2)
    transfer = attacks.transfer_rate(mlp_surrogate, digits_model, x, y, attack)
    white_box = attacks.transfer_rate(digits_model, digits_model, x, y, attack)
    right = digits_model.predict(x) == y  # the rates count examples both models classify correctly
    n_transfer, n_white = int((right & (mlp_surrogate.predict(x) == y)).sum()), int(right.sum())
    assert_rate_above(transfer, n_transfer, 0.0, what="transfer rate")
    assert_gap(white_box, n_white, transfer, n_transfer, what="fooling rate, white-box over transfer")


def test_transfer_matrix_holds_white_box_rates_on_its_diagonal(
    mlp_surrogate: lk.LabModel, digits_model: lk.LabModel, digits_test: Any
) -> None:
    """Entry (i, j) is the rate from model i to model j; the diagonal is white-box success."""
    x, y = digits_test.x[:64], digits_test.y[:64]
    attack = partial(attacks.mi_fgsm, eps=0.2, steps=5)
    matrix = attacks.transfer_matrix({"cnn": digits_model, "mlp": mlp_surrogate}, x, y, attack)
    assert matrix.names == ["cnn", "mlp"]
    assert matrix.rate("mlp", "mlp") == attacks.transfer_rate(mlp_surrogate, mlp_surrogate, x, y, attack)
    assert matrix.rate("cnn", "mlp") == attacks.transfer_rate(digits_model, mlp_surrogate, x, y, attack)
    assert "| cnn |" in matrix._repr_markdown_()


def test_surrogates_are_seeded_and_can_learn_from_the_targets_labels(digits_model: lk.LabModel) -> None:
    """The same seed gives the same weights, the global RNG is untouched, and labels can come
    from the target's predictions (the black-box setting)."""
    data = lk.data.load("digits", split="train")
    state = torch.random.get_rng_state()
    a = attacks.train_surrogate(data, family="mlp", seed=5, epochs=1)
    b = attacks.train_surrogate(data, family="mlp", seed=5, epochs=1, labels_from=digits_model)
    assert torch.equal(torch.random.get_rng_state(), state)
    c = attacks.train_surrogate(data, family="mlp", seed=5, epochs=1)
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values(), strict=True)
    )
    assert b.meta["labels_from_target"] and not a.meta["labels_from_target"]
    with pytest.raises(ValueError, match=r"family must be 'cnn' or 'mlp'"):
        attacks.train_surrogate(data, family="rnn")  # type: ignore[arg-type]


def test_di_fgsm_without_diversity_is_mi_fgsm(tiny_model: lk.LabModel, batch: Any) -> None:
    """With p = 0 input diversity does nothing: DI with momentum reduces to MI-FGSM exactly."""
    x, y = batch
    di = attacks.di_fgsm(tiny_model, x, y, eps=0.1, decay=1.0, diversity_prob=0.0)
    assert torch.equal(di, attacks.mi_fgsm(tiny_model, x, y, eps=0.1))
    with pytest.raises(ValueError, match=r"diversity_prob must be a probability"):
        attacks.di_fgsm(tiny_model, x, y, eps=0.1, diversity_prob=1.5)


# --- physical: patch, occlusion, spatial --------------------------------------------------------


def test_apply_patch_at_a_location_copies_the_pixels() -> None:
    """At a fixed place and without transformations the sticker's pixels are copied exactly."""
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    patch = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(1))
    x_copy = x.clone()
    out = attacks.apply_patch(x, patch, location=(2, 7))
    assert torch.equal(x, x_copy)
    assert torch.equal(out[:, :, 2:6, 7:12], patch.expand(3, -1, -1, -1))
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[:, :, 2:6, 7:12] = False
    assert torch.equal(out[outside], x[outside])


def test_apply_patch_places_the_sticker_at_random() -> None:
    """Random placements differ per image, repeat with the same generator, stay in [0, 1], and
    an unrotated sticker at nominal size changes at most a (size + 1)^2 window."""
    x = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    patch = torch.ones(3, 4, 4)
    fixed = attacks.EOT(max_rotation=0, scale=(1.0, 1.0), brightness=(1.0, 1.0))
    out = attacks.apply_patch(x, patch, eot=fixed, generator=torch.Generator().manual_seed(1))
    again = attacks.apply_patch(x, patch, eot=fixed, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.min() >= 0 and out.max() <= 1
    changed = (out != x).any(dim=1)
    assert int(changed.flatten(1).sum(1).max()) <= 25
    where = [tuple(c.nonzero().min(0).values.tolist()) for c in changed]
    assert len(set(where)) > 8
    turned = attacks.apply_patch(
        x, patch, eot=attacks.EOT(max_rotation=30), generator=torch.Generator().manual_seed(1)
    )
    assert not torch.equal(turned, out)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"patch": torch.rand(1, 4, 4)}, r"patch has 1 channels but the images have 3"),
        ({"patch": torch.rand(3, 20, 4)}, r"does not fit"),
        ({"patch": torch.rand(3, 4, 4), "location": (14, 0)}, r"outside images"),
    ],
)
def test_apply_patch_rejects_a_patch_that_does_not_fit(kwargs: dict[str, Any], error: str) -> None:
    """Wrong channels, a patch bigger than the image, a place off the image: clear errors."""
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=error):
        attacks.apply_patch(x, **kwargs)
    with pytest.raises(ValueError, match=r"scale must be \(low, high\)"):
        attacks.EOT(scale=(1.2, 0.8))


@pytest.fixture(scope="module")
def stop_signs() -> tuple[lk.LabModel, torch.Tensor, torch.Tensor]:
    model = lk.models.pretrained("signs-cnn", progress=False)
    train = render(torch.zeros(64, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    test = render(torch.zeros(50, dtype=torch.long), generator=torch.Generator().manual_seed(2))
    return model, train, test


def test_a_sticker_on_the_stop_sign_makes_it_read_as_something_else(stop_signs: Any) -> None:
    """An 8x8 sticker optimised over random placements on the sign (30 steps here) drops the
    stop-sign accuracy of held-out signs far below clean, while a random sticker of the same
    size does not (measured with 100 steps on 256 signs: 99% clean, 3% patched, 88% random)."""
    model, train, test = stop_signs
    y_train = torch.zeros(train.shape[0], dtype=torch.long)
    y_test = torch.zeros(test.shape[0], dtype=torch.long)
    train_copy = train.clone()
    eot = attacks.EOT(region=(6, 6, 26, 26))
    result = attacks.patch_attack(
        model,
        train,
        y_train,
        patch_size=8,
        steps=30,
        batch_size=32,
        eot=eot,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(train, train_copy) and all(p.grad is None for p in model.parameters())
    assert result.patch.shape == (3, 8, 8) and result.patch.min() >= 0 and result.patch.max() <= 1
    assert result.losses[-1] < result.losses[0]
    clean = lk.models.accuracy(model, test, y_test)
    patched = result.accuracy(model, test, y_test, trials=4, generator=torch.Generator().manual_seed(3))
    control = attacks.PatchResult(
        patch=torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5)), eot=eot, target=None
    )
    random_sticker = control.accuracy(
        model, test, y_test, trials=4, generator=torch.Generator().manual_seed(3)
    )
    assert clean > 0.9 and random_sticker > 0.7
    n = 4 * len(y_test)  # four placements of the patch per test image
    assert_gap(random_sticker, n, patched, n, what="accuracy, random sticker over the patch")
    assert_rate_below(patched, n, 0.5, what="accuracy with the patch")


def test_occlusion_finds_the_square_that_hurts_most(digits_model: lk.LabModel, digits_test: Any) -> None:
    """The map has one value per position, the worst occlusion covers exactly one square, and
    success means the model's answer changed."""
    x, y = digits_test.x[:16], digits_test.y[:16]
    result = attacks.occlusion(digits_model, x, y, size=3, stride=1, fill=0.0)
    assert result.sensitivity.shape == (16, 6, 6)
    changed = (result.x_adv != x).flatten(1).sum(1)
    assert int(changed.max()) <= 9
    assert torch.equal(result.success, digits_model.predict(result.x_adv) != y)
    top, left = result.worst[0].tolist()
    assert torch.equal(result.x_adv[0, :, top : top + 3, left : left + 3], torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"fill must be a number in the valid range"):
        attacks.occlusion(digits_model, x, y, size=3, fill=2.0)
    with pytest.raises(ValueError, match=r"size 9 is larger than the images"):
        attacks.occlusion(digits_model, x, y, size=9)


def test_spatial_attack_properties(digits_model: lk.LabModel, digits_test: Any) -> None:
    """Worst-of-10 rotations (30 degrees) and shifts (1 pixel) break most digits; no range
    returns x; the same generator repeats; x and the model are left alone."""
    x, y = digits_test.x[:64], digits_test.y[:64]
    x_copy = x.clone()
    run = partial(attacks.spatial_attack, digits_model, x, y, max_rotation=30, max_translation=1, k=10)
    x_adv = run(generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x_copy) and all(p.grad is None for p in digits_model.parameters())
    assert torch.equal(x_adv, run(generator=torch.Generator().manual_seed(0)))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    robust = float(((digits_model.predict(x_adv) == y) & (digits_model.predict(x) == y)).float().mean())
    assert_gap(lk.models.accuracy(digits_model, x, y), 64, robust, 64, what="accuracy, clean over spatial")
    assert torch.equal(attacks.spatial_attack(digits_model, x, y, max_rotation=0, max_translation=0), x)
    with pytest.raises(ValueError, match=r"max_rotation must be a number in \[0, 180\]"):
        attacks.spatial_attack(digits_model, x, y, max_rotation=-5)
    with pytest.raises(ValueError, match=r"k must be at least 1"):
        attacks.spatial_attack(digits_model, x, y, k=0)


def test_spatial_transform_moves_pixels_the_documented_way() -> None:
    """A shift of (1, 2) moves content one pixel down and two right; +90 degrees turns the image
    clockwise as displayed."""
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    shifted = _rotate_translate(x, torch.zeros(1), torch.tensor([[1.0, 2.0]]))
    expected = torch.zeros_like(x)
    expected[..., 1:, 2:] = x[..., :-1, :-2]
    torch.testing.assert_close(shifted, expected, rtol=0, atol=1e-6)
    turned = _rotate_translate(x, torch.tensor([math.pi / 2]), torch.zeros(1, 2))
    torch.testing.assert_close(turned, torch.rot90(x, -1, dims=(2, 3)), rtol=0, atol=1e-6)


# --- the benchmark still runs -------------------------------------------------------------------


def test_the_attack_benchmark_runs(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/attacks.py --quick prints a row per attack with both timings (a smoke run, so
    the benchmark does not rot; its numbers are not checked here)."""
    pytest.importorskip("torchattacks", reason='optional peer: pip install --no-deps "torchattacks>=3.5"')
    spec = importlib.util.spec_from_file_location("bench_attacks", root / "benchmarks" / "attacks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    assert module.main(["--quick", "--models", "digits-cnn", "--batch", "8"]) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out
    for name in ("FGSM", "PGD-10", "CW-5", "Square-20"):
        assert f"| {name}" in out
    assert "k x (fwd+bwd)" in out


# --- results a learner looks at -----------------------------------------------------------------


def test_results_render_as_tables_and_figures(digits_model: lk.LabModel, digits_test: Any) -> None:
    """Every result has a markdown table and a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = digits_test.x[:8], digits_test.y[:8]
    blackbox = quiet(attacks.square, digits_model, x, y, eps=0.2, max_queries=20)
    occluded = attacks.occlusion(digits_model, x, y, size=4, stride=2)
    matrix = attacks.transfer_matrix({"a": digits_model}, x, y, partial(attacks.mi_fgsm, eps=0.1, steps=2))
    patch = attacks.patch_attack(
        digits_model, x, y, patch_size=3, steps=2, generator=torch.Generator().manual_seed(0)
    )
    for result, figure in (
        (blackbox, blackbox.plot()),
        (occluded, occluded.plot(x)),
        (matrix, matrix.plot()),
        (patch, patch.plot(x)),
    ):
        assert result._repr_markdown_().startswith("|")
        assert figure.axes
    budgets, rates = blackbox.success_curve()
    assert budgets[-1] == 20 and rates == sorted(rates) and rates[-1] == blackbox.success_rate
    plt.close("all")
