"""Property tests for the white-box attacks: one table over every attack, then the bad inputs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

import labkit as lk
from labkit import attacks
from labkit.attacks.threat import ProbabilityOutputWarning, lp_norm


@dataclass(frozen=True)
class Case:
    """One attack with its settings, and what it must achieve on the digits CNN."""

    name: str
    attack: Callable[..., torch.Tensor]  # settings bound, eps passed per call
    norm: str | None  # the ball it must stay in; None for the unbounded cw
    eps: float  # budget on the tiny model
    digits_eps: float | None  # budget on digits (None: unbounded)
    min_drop: float  # clean accuracy minus robust accuracy on digits, at least
    target_eps: float | None  # budget for the targeted run on digits
    min_target_rate: float  # fraction of digits sent to the target class, at least
    digits_n: int = 200  # digits test images the two digits tests use (black-box: fewer, for time)
    targeted: bool = True  # runs the generic targeted test (hopskipjump needs starting points)
    gradient: bool = True  # reads gradients (black-box attacks accept probabilities silently)


def x_adv_of(attack: Callable[..., Any]) -> Callable[..., torch.Tensor]:
    """Black-box attacks return a BlackBoxResult; the table compares the images."""

    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", attacks.QueryBudgetWarning)  # small budgets on purpose
            return attack(*args, **kwargs).x_adv

    return run


# Thresholds sit below what was measured on the first 200 digits test images with the ci
# profile's digits-cnn (clean 97.5%): fgsm 0.1 -> 74.5%, pgd-linf 0.1 -> 64.5%, apgd 0.1 -> 62%,
# pgd-l2 1.0 -> 1%, cw 20x3 -> 1.5%; targeted: fgsm 36%, pgd-linf 92%, pgd-l2 99%, apgd 97%, cw 72%.
CASES = [
    Case("fgsm", attacks.fgsm, "linf", 0.2, 0.1, 0.15, 0.3, 0.2),
    Case("pgd-linf", partial(attacks.pgd, norm="linf", steps=20), "linf", 0.2, 0.1, 0.25, 0.3, 0.8),
    Case("pgd-l2", partial(attacks.pgd, norm="l2", steps=20), "l2", 0.4, 1.0, 0.5, 2.0, 0.8),
    Case("cw", partial(attacks.cw, steps=20, search_steps=3), None, 0.4, None, 0.5, None, 0.5),
    Case("apgd", partial(attacks.apgd, steps=20), "linf", 0.2, 0.1, 0.25, 0.3, 0.8),
    # Transfer boosters (white-box on the surrogate), same 200 digits: mi-fgsm 0.1 -> 70%,
    # di-fgsm 0.1 -> 69.5%; targeted at 0.3: 64%, 74%.
    Case("mi-fgsm", attacks.mi_fgsm, "linf", 0.2, 0.1, 0.15, 0.3, 0.5),
    Case("di-fgsm", attacks.di_fgsm, "linf", 0.2, 0.1, 0.15, 0.3, 0.5),
    # Black-box attacks, on the first 32 digits (clean 96.9%) with small budgets to keep them
    # around a second each: simba 0.2/200 queries -> 0%, simba-dct L2 1.5/100 -> 0%,
    # square 0.2/100 -> 15.6%, nes 0.2/200 -> 18.8%, hopskipjump L2 1.5/300 -> 0%; targeted:
    # simba 0.3 91%, simba-dct 2.0 88%, square 0.3 50%, nes 0.3 50%.
    Case(
        "simba-pixel",
        x_adv_of(partial(attacks.simba, max_queries=200)),
        norm="linf",
        eps=0.2,
        digits_eps=0.2,
        min_drop=0.5,
        target_eps=0.3,
        min_target_rate=0.5,
        digits_n=32,
        gradient=False,
    ),
    Case(
        "simba-dct",
        x_adv_of(partial(attacks.simba, basis="dct", norm="l2", max_queries=100)),
        norm="l2",
        eps=0.4,
        digits_eps=1.5,
        min_drop=0.5,
        target_eps=2.0,
        min_target_rate=0.5,
        digits_n=32,
        gradient=False,
    ),
    Case(
        "square",
        x_adv_of(partial(attacks.square, max_queries=100)),
        norm="linf",
        eps=0.2,
        digits_eps=0.2,
        min_drop=0.5,
        target_eps=0.3,
        min_target_rate=0.3,
        digits_n=32,
        gradient=False,
    ),
    Case(
        "nes-pgd",
        x_adv_of(partial(attacks.nes_pgd, max_queries=200, samples=10)),
        norm="linf",
        eps=0.2,
        digits_eps=0.2,
        min_drop=0.5,
        target_eps=0.3,
        min_target_rate=0.3,
        digits_n=32,
        gradient=False,
    ),
    Case(
        "hopskipjump",
        x_adv_of(partial(attacks.hopskipjump, norm="l2", max_queries=300, init_evals=30)),
        norm="l2",
        eps=0.4,
        digits_eps=1.5,
        min_drop=0.5,
        target_eps=None,
        min_target_rate=0.0,
        digits_n=32,
        targeted=False,
        gradient=False,
    ),
]
IDS = [c.name for c in CASES]
WITH_NORM = [c for c in CASES if c.name.startswith(("pgd", "apgd", "simba", "nes", "hopskipjump"))]
TARGETED = [c for c in CASES if c.targeted]
GRADIENT = [c for c in CASES if c.gradient]


def run(case: Case, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    kwargs.setdefault("eps", case.eps if case.norm is not None else None)
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    return case.attack(model, x, y, **kwargs)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """These batches are small, so extra intra-op threads gain little and, on a shared 2-core
    machine or under pytest-xdist, oversubscribe it: measured 91 s instead of 11 s for this file
    and the parity file together. The setting is restored afterwards."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits() -> tuple[lk.LabModel, torch.Tensor, torch.Tensor]:
    model = lk.models.pretrained("digits-cnn", progress=False)
    data = lk.data.load("digits", split="test")
    return model, data.x[:200], data.y[:200]


# --- the table over every attack --------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_stays_in_the_ball_and_the_valid_range(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """Every output lies in [0, 1] and, for budgeted attacks, within eps of x in the attack's norm."""
    x, y = batch
    x_adv = run(case, tiny_model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if case.norm is not None:
        assert bool((lp_norm(x_adv - x, norm=case.norm) <= case.eps + 1e-5).all())  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_leaves_input_labels_model_mode_and_grads_alone(
    case: Case, tiny_model: lk.LabModel, batch: Any
) -> None:
    """x and y are not modified, no parameter gets a .grad, and the model stays in eval mode."""
    x, y = batch
    x_copy, y_copy = x.clone(), y.clone()
    run(case, tiny_model, x, y)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert all(p.grad is None for p in tiny_model.parameters())
    assert not tiny_model.training


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eps_zero_returns_the_input(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """With no budget there is nothing to change: the output equals x exactly."""
    x, y = batch
    x_adv = run(case, tiny_model, x, y, eps=0.0)
    assert torch.equal(x_adv, x)
    assert x_adv.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_generator_gives_the_same_output(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """Two runs with generators seeded alike agree bit for bit."""
    x, y = batch
    first = run(case, tiny_model, x, y, generator=torch.Generator().manual_seed(7))
    second = run(case, tiny_model, x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_output_has_the_shape_dtype_and_device_of_x(
    case: Case, dtype: torch.dtype, tiny_model: lk.LabModel, batch: Any
) -> None:
    """x_adv follows x: same shape, dtype and device."""
    x, y = batch
    model = tiny_model.to(dtype)
    x_adv = run(case, model, x.to(dtype), y)
    assert x_adv.shape == x.shape and x_adv.dtype == dtype and x_adv.device == x.device


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_runs_on_the_gpu(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """On CUDA the output stays on CUDA; a CPU generator still drives the random starts."""
    x, y = (t.cuda() for t in batch)
    x_adv = run(case, tiny_model.cuda(), x, y)
    assert x_adv.device == x.device and x_adv.shape == x.shape


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lowers_accuracy_on_digits(case: Case, digits: Any) -> None:
    """On the digits CNN each attack costs at least `min_drop` of accuracy at its budget."""
    model, x, y = digits
    x, y = x[: case.digits_n], y[: case.digits_n]
    clean = lk.models.accuracy(model, x, y)
    attack = partial(run, case, eps=case.digits_eps)
    robust = attacks.robust_accuracy(model, x, y, attack)
    assert robust < clean - case.min_drop, f"{case.name}: clean {clean:.3f}, robust {robust:.3f}"


@pytest.mark.parametrize("case", TARGETED, ids=[c.name for c in TARGETED])
def test_targeted_attack_reaches_the_target(case: Case, digits: Any) -> None:
    """Targeted towards (y + 1) mod 10, the attack lands on the target class often."""
    model, x, y = digits
    x, y = x[: case.digits_n], y[: case.digits_n]
    target = (y + 1) % 10
    x_adv = run(case, model, x, target, eps=case.target_eps, targeted=True)
    rate = float(attacks.attack_success(model, x_adv, target, targeted=True).float().mean())
    assert rate >= case.min_target_rate, f"{case.name}: {rate:.3f} reached the target"


# --- attack-specific behaviour ----------------------------------------------------------------


def test_pgd_restarts_keep_every_success_of_the_first_run(digits: Any) -> None:
    """The first restart replays the single run, so more restarts never lose a broken example."""
    model, x, y = digits
    one = attacks.pgd(model, x, y, eps=0.1, steps=5, restarts=1, generator=torch.Generator().manual_seed(0))
    three = attacks.pgd(model, x, y, eps=0.1, steps=5, restarts=3, generator=torch.Generator().manual_seed(0))
    broken_one = attacks.attack_success(model, one, y)
    broken_three = attacks.attack_success(model, three, y)
    assert bool((broken_three | ~broken_one).all())
    assert int(broken_three.sum()) >= int(broken_one.sum())


def test_cw_finds_the_minimal_perturbation_of_a_linear_model(tiny_model: lk.LabModel) -> None:
    """For the tiny linear model the closest boundary point is 0.1 away in L2; cw gets there."""
    x = torch.tensor([[[[0.6, 0.6], [0.5, 0.5]]]])
    x_adv = attacks.cw(tiny_model, x, torch.tensor([1]), steps=50)
    assert tiny_model.predict(x_adv).item() == 0
    assert float((x_adv - x).norm()) == pytest.approx(0.1, abs=2e-3)


def test_cw_with_eps_stays_in_the_l2_ball(tiny_model: lk.LabModel, batch: Any) -> None:
    """Given eps, cw projects its result onto the L2 ball like every other attack."""
    x, y = batch
    x_adv = attacks.cw(tiny_model, x, y, eps=0.05, steps=30, search_steps=2)
    assert bool((lp_norm(x_adv - x, norm="l2") <= 0.05 + 1e-6).all())


def test_cw_returns_examples_it_cannot_break_unchanged(tiny_model: lk.LabModel, batch: Any) -> None:
    """Where no round succeeds (zero steps of budget here), the output is the input."""
    x, y = batch
    assert torch.equal(attacks.cw(tiny_model, x, y, steps=0), x)


def test_robust_accuracy_matches_a_manual_count(tiny_model: lk.LabModel, batch: Any) -> None:
    """robust_accuracy counts examples right both clean and attacked, over uneven batches."""
    x, y = batch
    # No random start: each example's attack does not depend on the batch it runs in.
    attack = partial(attacks.pgd, eps=0.1, steps=5, random_start=False)
    x_adv = attack(tiny_model, x, y)
    ok = (tiny_model.predict(x) == y) & (tiny_model.predict(x_adv) == y)
    expected = float(ok.float().mean())
    assert 0.0 < expected < 1.0  # some examples survive and some break, so a miscount shows
    for batch_size in (16, 5, 3, 1):
        assert attacks.robust_accuracy(tiny_model, x, y, attack, batch_size=batch_size) == expected


def test_robust_accuracy_rejects_an_attack_that_changes_the_shape(
    tiny_model: lk.LabModel, batch: Any
) -> None:
    """An attack must return one adversarial input per input."""
    x, y = batch
    with pytest.raises(ValueError, match="attack returned"):
        attacks.robust_accuracy(tiny_model, x, y, lambda m, xb, yb: xb[:1])


def test_projection_handles_a_zero_perturbation() -> None:
    """Projecting a zero L2 perturbation gives zeros, not NaN."""
    out = attacks.project(torch.zeros(2, 1, 2, 2), norm="l2", eps=0.5)
    assert torch.equal(out, torch.zeros(2, 1, 2, 2))


# --- bad input --------------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], dict[str, Any]], type, str]] = [
    ("negative eps", lambda x, y: {"eps": -0.1}, ValueError, r"eps must be non-negative, got -0\.1"),
    ("nan eps", lambda x, y: {"eps": math.nan}, ValueError, r"eps must be finite, got nan"),
    ("inf eps", lambda x, y: {"eps": math.inf}, ValueError, r"eps must be finite, got inf"),
    ("string eps", lambda x, y: {"eps": "0.1"}, TypeError, r"eps must be a non-negative number"),
    ("x above range", lambda x, y: {"x": x + 1}, ValueError, r"x has values outside \[0\.0, 1\.0\]: found"),
    ("x below range", lambda x, y: {"x": x - 1}, ValueError, r"outside \[0\.0, 1\.0\]: found min -"),
    (
        "nan in x",
        lambda x, y: {"x": x.index_fill(0, torch.tensor([3]), math.nan)},
        ValueError,
        r"NaN or infinite",
    ),
    ("integer x", lambda x, y: {"x": (x * 255).to(torch.uint8)}, TypeError, r"floating-point"),
    (
        "mismatched batch",
        lambda x, y: {"y": y[:-1]},
        ValueError,
        r"x has 16 examples but y has 15 labels",
    ),
    ("float labels", lambda x, y: {"y": y.float()}, TypeError, r"y must hold int64 class labels"),
    (
        "label out of range",
        lambda x, y: {"y": y + 5},
        ValueError,
        r"y has label 6, outside the model's 2 classes \(expected labels in \[0, 1\]\)",
    ),
    (
        "float64 x for a float32 model",
        lambda x, y: {"x": x.double()},
        TypeError,
        r"x has dtype torch.float64 but the model computes in torch.float32; convert the batch",
    ),
    ("wrong shape", lambda x, y: {"x": x.view(16, 4)}, ValueError, r"x has shape \(16, 4\)"),
]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_raises_a_clear_error(case: Case, bad: Any, tiny_model: lk.LabModel, batch: Any) -> None:
    """Bad budgets, inputs and labels raise, naming what was wrong; nothing is clamped quietly."""
    _, change, error, message = bad
    x, y = batch
    args = {"x": x, "y": y, "eps": 0.1, **change(x, y)}
    with pytest.raises(error, match=message):
        run(case, tiny_model, args.pop("x"), args.pop("y"), **args)


LINF = [c for c in CASES if c.norm == "linf"]
L2 = [c for c in CASES if c.norm == "l2"]
GREY_LEVELS = r"eps=8 is above 1 for an L-inf budget on pixels in \[0, 1\]; did you mean 8/255 = 0\.0314\?"


@pytest.mark.parametrize("case", LINF, ids=[c.name for c in LINF])
def test_linf_budget_in_grey_levels_is_refused(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """eps=8 meant as 8/255 would allow every image in [0, 1]: the attack refuses it by name."""
    x, y = batch
    with pytest.raises(ValueError, match=GREY_LEVELS):
        run(case, tiny_model, x, y, eps=8)
    run(case, tiny_model, x, y, eps=1.0)  # the whole range is still a legal (if odd) budget


@pytest.mark.parametrize("case", L2, ids=[c.name for c in L2])
def test_l2_budget_above_one_is_accepted(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """An L2 budget is a length over the whole image, so values above 1 are legitimate."""
    x, y = batch
    x_adv = run(case, tiny_model, x, y, eps=1.5)
    assert bool((lp_norm(x_adv - x, norm="l2") <= 1.5 + 1e-5).all())


def test_linf_budget_is_only_capped_on_bounded_inputs(batch: Any) -> None:
    """Unbounded (tabular) features have no [0, 1] range, so no cap applies; a custom range caps at its width."""
    x, y = batch
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    tabular = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2, value_range=None).eval()
    assert attacks.pgd(tabular, x, y, eps=3.0, steps=2).shape == x.shape
    wide = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2, value_range=(0.0, 255.0)).eval()
    attacks.fgsm(wide, x * 255, y, eps=8.0)
    with pytest.raises(ValueError, match=r"eps=300 is above 255, the width of the valid range \[0, 255\]"):
        attacks.fgsm(wide, x * 255, y, eps=300.0)


def _digits_setup() -> tuple[lk.LabModel, Any]:
    data = lk.data.load("digits", split="train", n=16)
    return lk.models.build("digits-cnn", data).eval(), data


# Every public function outside lk.attacks that takes an L-inf budget, called with eps=8.
EPS_TAKERS: dict[str, Callable[[lk.LabModel, Any], object]] = {
    "hardening.pgd_at": lambda m, d: lk.hardening.pgd_at(m, d, eps=8, epochs=1, progress=False),
    "hardening.fast_at": lambda m, d: lk.hardening.fast_at(m, d, eps=8, epochs=1, progress=False),
    "hardening.trades": lambda m, d: lk.hardening.trades(m, d, eps=8, epochs=1, progress=False),
    "hardening.pgd_train_attack": lambda m, d: lk.hardening.pgd_train_attack(m, d.x, d.y, eps=8),
    "hardening.fgsm_rs_attack": lambda m, d: lk.hardening.fgsm_rs_attack(m, d.x, d.y, eps=8),
    "hardening.trades_attack": lambda m, d: lk.hardening.trades_attack(m, d.x, d.y, eps=8),
    "ensembles.ensemble_adversarial_training": lambda m, d: lk.ensembles.ensemble_adversarial_training(
        m, d, static=[m], eps=8, epochs=1, progress=False
    ),
    "eval.robustness": lambda m, d: lk.eval.robustness(m, (d.x, d.y), eps=[0, 8]),
    "eval.margin_pgd": lambda m, d: lk.eval.margin_pgd(m, d.x, d.y, eps=8),
    "eval.checklist": lambda m, d: lk.eval.checklist(m, (d.x, d.y), eps=8, n=8, queries=10),
    "attacks.robust_accuracy": lambda m, d: attacks.robust_accuracy(m, d.x, d.y, partial(attacks.pgd, eps=8)),
}


@pytest.mark.parametrize("name", list(EPS_TAKERS))
def test_every_linf_budget_refuses_grey_levels(name: str) -> None:
    """Adversarial training, ensembles and evaluation share the attacks' check of the budget."""
    model, data = _digits_setup()
    with pytest.raises(ValueError, match=GREY_LEVELS):
        EPS_TAKERS[name](model, data)


@pytest.mark.parametrize("case", WITH_NORM, ids=[c.name for c in WITH_NORM])
def test_unknown_norm_is_rejected(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """Only the L-inf and L2 balls exist."""
    x, y = batch
    with pytest.raises(ValueError, match=r"norm must be one of 'linf', 'l2', got 'l1'"):
        run(case, tiny_model, x, y, norm="l1")
    with pytest.raises(ValueError, match=r"norm must be one of"):
        attacks.project(x, norm="l1", eps=0.1)  # type: ignore[arg-type]


def test_bad_settings_are_rejected(tiny_model: lk.LabModel, batch: Any) -> None:
    """Step counts, restarts and cw's constants are checked too."""
    x, y = batch
    with pytest.raises(ValueError, match=r"steps must be at least 0, got -1"):
        attacks.pgd(tiny_model, x, y, eps=0.1, steps=-1)
    with pytest.raises(ValueError, match=r"restarts=2 would repeat the same run"):
        attacks.pgd(tiny_model, x, y, eps=0.1, restarts=2, random_start=False)
    with pytest.raises(ValueError, match=r"step_size must be positive, got 0"):
        attacks.pgd(tiny_model, x, y, eps=0.1, step_size=0.0)
    with pytest.raises(ValueError, match=r"rho must be a number in \(0, 1\)"):
        attacks.apgd(tiny_model, x, y, eps=0.1, rho=1.5)
    with pytest.raises(ValueError, match=r"initial_c must be positive"):
        attacks.cw(tiny_model, x, y, initial_c=0.0)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        attacks.fgsm(lambda t: t, x, y, eps=0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_train_mode_model_warns_and_is_attacked_in_eval_mode(
    case: Case, tiny_model: lk.LabModel, batch: Any
) -> None:
    """A model left in training mode gets a warning, is attacked in eval mode, and stays in training mode."""
    x, y = batch
    expected = run(case, tiny_model, x, y)
    tiny_model.train()
    with pytest.warns(lk.TrainModeWarning, match="training mode"):
        x_adv = run(case, tiny_model, x, y)
    assert tiny_model.training
    assert torch.equal(x_adv, expected)


@pytest.mark.parametrize("case", GRADIENT, ids=[c.name for c in GRADIENT])
def test_probability_outputs_are_detected(case: Case, tiny_model: lk.LabModel, batch: Any) -> None:
    """A model ending in a softmax gets a warning that its gradients saturate."""
    x, y = batch
    softmax_model = lk.LabModel(
        nn.Sequential(tiny_model.net, nn.Softmax(dim=1)), input_shape=(1, 2, 2), num_classes=2
    ).eval()
    with pytest.warns(ProbabilityOutputWarning, match="probabilities"):
        run(case, softmax_model, x, y)


@pytest.mark.parametrize("steps", [0, 3])
def test_pgd_validates_logits_without_a_clean_pass(steps: int, tiny_model: lk.LabModel, batch: Any) -> None:
    """PGD skips the clean forward pass, so its first pass must still catch probabilities and NaN."""
    x, y = batch
    softmax_model = nn.Sequential(tiny_model.net, nn.Softmax(dim=1)).eval()
    with pytest.warns(ProbabilityOutputWarning) as record:
        attacks.pgd(softmax_model, x, y, eps=0.1, steps=steps)
    assert record[0].filename == __file__, "the warning should point at the caller's line"
    nan_model = nn.Sequential(tiny_model.net, nn.Hardtanh(min_val=math.nan)).eval()
    with pytest.raises(ValueError, match=r"NaN or infinite outputs"):
        attacks.pgd(nan_model, x, y, eps=0.1, steps=steps)
    with pytest.raises(ValueError, match=r"NaN or infinite outputs"):
        attacks.fgsm(nan_model, x, y, eps=0.1)


def test_takes_budget_tells_a_budget_attack_from_a_bound_one() -> None:
    """The contract reads whether an attack still wants ``eps`` (evaluation passes it then)."""
    from labkit.attacks.contract import takes_budget

    def bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def open_ended(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **settings: Any) -> torch.Tensor:
        return x

    assert takes_budget(attacks.pgd) and takes_budget(attacks.square) and takes_budget(open_ended)
    assert not takes_budget(bound)
    assert not takes_budget(attacks.as_attack(attacks.square, eps=0.1, max_queries=5))
