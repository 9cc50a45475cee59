"""Ensembles: the three reductions on hand-set models, attacks through them, diversity, training."""

from __future__ import annotations

import dataclasses
import math
import warnings
from functools import partial

import pytest
import torch
from torch import nn

import labkit as lk
from labkit import ensembles
from labkit.ensembles import Ensemble

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def linear(weight: list[list[float]], bias: list[float] | None = None) -> lk.LabModel:
    """A LabModel on 1x1x2 inputs whose logits are ``weight @ x + bias``."""
    w = torch.tensor(weight)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, w.shape[0]))
    with torch.no_grad():
        net[1].weight.copy_(w)
        net[1].bias.copy_(torch.tensor(bias) if bias is not None else torch.zeros(w.shape[0]))
    return lk.LabModel(net, input_shape=(1, 1, 2), num_classes=w.shape[0]).eval()


@pytest.fixture
def members() -> list[lk.LabModel]:
    # Three 3-class models with constant logits (zero weights), so the reductions are easy to check.
    return [
        linear([[0.0, 0.0]] * 3, [2.0, 0.0, 0.0]),  # votes class 0, p = (0.79, 0.11, 0.11)
        linear([[0.0, 0.0]] * 3, [0.0, 1.0, 0.0]),  # votes class 1, p = (0.21, 0.58, 0.21)
        linear([[0.0, 0.0]] * 3, [0.0, 1.5, 0.0]),  # votes class 1, p = (0.15, 0.68, 0.15)
    ]


X = torch.full((4, 1, 1, 2), 0.5)


def test_mean_logits_averages_the_member_logits(members: list[lk.LabModel]) -> None:
    """mean_logits returns the plain average of the member logits."""
    out = Ensemble(members, reduce="mean_logits")(X)
    assert torch.allclose(out, torch.tensor([2.0, 2.5, 0.0]).div(3).expand(4, 3))


def test_soft_vote_is_the_log_of_the_mean_probability(members: list[lk.LabModel]) -> None:
    """soft_vote's softmax equals the mean of the members' softmax outputs."""
    out = Ensemble(members, reduce="soft_vote")(X)
    expected = torch.stack([m(X).softmax(1) for m in members]).mean(0)
    assert torch.allclose(out.softmax(1), expected, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-6)


def test_hard_vote_counts_votes_and_breaks_ties_by_probability(members: list[lk.LabModel]) -> None:
    """hard_vote follows the majority (1 of 3 says 0, 2 of 3 say 1), not the mean logits."""
    hard = Ensemble(members, reduce="hard_vote")
    assert hard(X).argmax(1).tolist() == [1] * 4
    share = hard(X).exp()
    assert torch.allclose(share[:, :2], torch.tensor([1 / 3, 2 / 3]).expand(4, 2), atol=1e-3)
    # a tie (one vote each) goes to the member whose class has the higher mean probability
    tie = Ensemble(members[:2], reduce="hard_vote")
    assert tie(X).argmax(1).tolist() == [0] * 4


def test_weights_shift_the_decision(members: list[lk.LabModel]) -> None:
    """Weights are normalised and change the vote."""
    weighted = Ensemble(members, reduce="hard_vote", weights=[4.0, 1.0, 1.0])
    assert weighted.weights.sum().item() == pytest.approx(1.0)
    assert weighted(X).argmax(1).tolist() == [0] * 4


def test_an_ensemble_is_a_lab_model_in_eval_mode(members: list[lk.LabModel]) -> None:
    """The ensemble keeps the contract: checked inputs, names, indexing, eval mode."""
    ens = Ensemble({"a": members[0], "b": members[1]})
    assert isinstance(ens, lk.LabModel) and not ens.training
    assert ens.names == ["a", "b"] and ens["b"] is members[1] and len(ens) == 2
    with pytest.raises(ValueError, match="outside"):
        ens(torch.full((1, 1, 1, 2), 2.0))
    assert ens.member_logits(X).shape == (2, 4, 3)


@pytest.fixture
def diverse() -> list[lk.LabModel]:
    # two-class models whose decision depends on the input, with different weights
    return [
        linear([[1.0, -1.0], [-1.0, 1.0]]),
        linear([[2.0, -0.5], [-2.0, 0.5]]),
        linear([[0.5, -2.0], [-0.5, 2.0]]),
    ]


@pytest.mark.parametrize("reduce", ["mean_logits", "soft_vote"])
def test_gradients_flow_and_pgd_breaks_differentiable_reductions(
    diverse: list[lk.LabModel], reduce: str
) -> None:
    """PGD through mean_logits and soft_vote finds adversarial examples: the gradients are real."""
    ens = Ensemble(diverse, reduce=reduce)  # type: ignore[arg-type]
    x = torch.rand(64, 1, 1, 2, generator=torch.Generator().manual_seed(0))
    y = ens.predict(x)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(ens(xg), y), xg)
    assert bool((g.flatten(1).norm(dim=1) > 0).all())
    x_adv = lk.attacks.pgd(ens, x, y, eps=0.3, steps=10, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert float((ens.predict(x_adv) == y).float().mean()) < 0.5


def test_hard_vote_has_zero_gradients_and_its_twin_attacks_it(diverse: list[lk.LabModel]) -> None:
    """A hard vote is piecewise constant (zero gradient): PGD on it fails, PGD on mean_logits transfers."""
    hard = Ensemble(diverse, reduce="hard_vote")
    x = torch.rand(64, 1, 1, 2, generator=torch.Generator().manual_seed(1))
    y = hard.predict(x)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(hard(xg), y), xg)
    assert float(g.abs().max()) == 0.0
    attack = partial(lk.attacks.pgd, eps=0.3, steps=10, random_start=False)
    assert float((hard.predict(attack(hard, x, y)) == y).float().mean()) == 1.0
    twin = hard.with_reduce("mean_logits")
    assert twin.members[0] is hard.members[0]
    assert float((hard.predict(attack(twin, x, y)) == y).float().mean()) < 0.5


def test_disagreement_and_transfer_matrix(diverse: list[lk.LabModel]) -> None:
    """Disagreement is symmetric with a zero diagonal; the transfer matrix is M x M with white-box diagonal."""
    x = torch.rand(128, 1, 1, 2, generator=torch.Generator().manual_seed(2))
    y = diverse[0].predict(x)
    d = ensembles.disagreement(Ensemble(diverse), x, y)
    assert [d.matrix[i][i] for i in range(3)] == [0.0, 0.0, 0.0]
    assert all(d.matrix[i][j] == d.matrix[j][i] for i in range(3) for j in range(3))
    assert 0 < d.mean < 1 and d.accuracy["member0"] == 1.0
    assert "mean pairwise disagreement" in d._repr_markdown_()
    matrix = ensembles.member_transfer(diverse, x, y, partial(lk.attacks.pgd, eps=0.6, steps=10))
    assert len(matrix.rates) == 3 and all(len(r) == 3 for r in matrix.rates)
    white = [matrix.rates[i][i] for i in range(3)]
    assert min(white) > 0.5
    assert all(0.0 <= r <= 1.0 for row in matrix.rates for r in row)


def test_ensemble_adversarial_training_uses_static_sources() -> None:
    """Ensemble adversarial training runs, draws its sources among self and static models, leaves them alone."""
    data = lk.data.load("digits", split="train", n=128)
    small = dataclasses.replace(lk.models.RECIPES["digits-cnn"], arch={"width": 4, "hidden": 16})
    torch.manual_seed(0)
    static = {"a": lk.models.build(small, data).eval(), "b": lk.models.build(small, data).eval()}
    before = {k: [p.clone() for p in m.parameters()] for k, m in static.items()}
    model = lk.models.build(small, data)
    x_before = data.x.clone()
    history = ensembles.ensemble_adversarial_training(
        model, data, static=static, eps=0.1, epochs=2, batch_size=32, monitor_size=32, progress=False
    )
    counts = history.notes["source_counts"]
    assert set(counts) == {"self", "a", "b"} and sum(counts.values()) == 2 * 4
    assert len(history) == 2 and not model.training
    assert torch.equal(data.x, x_before)
    for k, m in static.items():
        assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before[k], strict=True))
        assert all(p.grad is None for p in m.parameters())


def test_train_family_builds_named_diverse_members() -> None:
    """A custom family trains one model per spec, CNN and MLP, named after the spec."""
    data = lk.data.load("digits", split="train", n=128)
    specs = [ensembles.MemberSpec(width=8, seed=0), ensembles.MemberSpec(family="mlp", hidden=(32,), seed=1)]
    family = ensembles.train_family(data, specs, epochs=1)
    assert list(family) == ["cnn-w8-s0", "mlp-32-s1"]
    ens = Ensemble(family, reduce="soft_vote")
    assert ens(data.x[:3]).shape == (3, 10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"models": []}, ValueError, "at least one member"),
        ({"models": {}}, ValueError, "at least one member"),
        ({"models": "abc"}, TypeError, "list or a dict"),
        ({"reduce": "median"}, ValueError, "reduce must be one of"),
        ({"weights": [1.0]}, ValueError, "weights has 1 values"),
        ({"weights": [1.0, -1.0]}, ValueError, "non-negative"),
    ],
)
def test_bad_ensembles_raise(members: list[lk.LabModel], kwargs: dict, error: type, match: str) -> None:
    """Empty ensembles, unknown reductions and bad weights are refused with a clear message."""
    args = {"models": members[:2], **kwargs}
    with pytest.raises(error, match=match):
        Ensemble(**args)


def test_mismatched_members_raise(members: list[lk.LabModel]) -> None:
    """Members must agree on input shape, classes and valid range, and be LabModels."""
    other_shape = lk.LabModel(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(1, 2, 2), num_classes=3
    )
    with pytest.raises(ValueError, match="same input shape"):
        Ensemble([members[0], other_shape])
    with pytest.raises(ValueError, match="same classes"):
        Ensemble([members[0], linear([[0.0, 0.0]] * 2)])
    with pytest.raises(TypeError, match="must be a labkit.LabModel"):
        Ensemble([members[0], nn.Linear(2, 3)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least two"):
        ensembles.disagreement([members[0]], X)


def test_ensemble_handles_finite_outputs_only(members: list[lk.LabModel]) -> None:
    """Every reduction returns finite values (attacks refuse infinite logits)."""
    for reduce in ("mean_logits", "soft_vote", "hard_vote"):
        out = Ensemble(members, reduce=reduce)(X)  # type: ignore[arg-type]
        assert bool(torch.isfinite(out).all())
        assert not math.isnan(float(out.detach().sum()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ProbabilityOutputWarning: hard votes are log shares
        lk.attacks.fgsm(Ensemble(members, reduce="hard_vote"), X, torch.zeros(4, dtype=torch.long), eps=0.1)
