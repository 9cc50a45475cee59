"""Architectures, training, accuracy and the cached model zoo."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from margins import assert_gap, assert_rate_above
from torch import nn

import labkit as lk
from labkit.models import MLP, SmallCNN


def test_architectures_output_logits() -> None:
    assert SmallCNN(3, 10, image_size=32)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert SmallCNN(1, 10, image_size=8)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert MLP(12, 2)(torch.rand(5, 12)).shape == (5, 2)
    with pytest.raises(ValueError, match="multiple of 4"):
        SmallCNN(1, 10, image_size=10)


def test_accuracy_on_hand_set_model(
    tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    assert lk.models.accuracy(tiny_model, x, y) == 1.0
    assert lk.models.accuracy(tiny_model, x, 1 - y) == 0.0
    with pytest.raises(ValueError, match="16 examples but y has 3"):
        lk.models.accuracy(tiny_model, x, y[:3])
    with pytest.raises(TypeError, match="needs labels"):
        lk.models.accuracy(tiny_model, x)


@pytest.mark.parametrize("wrapped", [True, False], ids=["LabModel", "plain module"])
def test_accuracy_refuses_labels_the_model_cannot_output(
    wrapped: bool, tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A label of 99 on a 2-class model is a mistake, not a silent miss that lowers the number."""
    x, y = batch
    model: nn.Module = tiny_model if wrapped else tiny_model.net
    for bad, shown in ((99, "99"), (-1, "-1")):
        labels = y.clone()
        labels[3] = bad
        with pytest.raises(ValueError, match=rf"y has label {shown}, outside the model's 2 classes"):
            lk.models.accuracy(model, x, labels)
    with pytest.raises(TypeError, match=r"y must hold int64 class labels, got dtype torch.float32"):
        lk.models.accuracy(model, x, y.float())
    with pytest.raises(ValueError, match=r"y must have shape \(N,\), got \(16, 1\)"):
        lk.models.accuracy(model, x, y[:, None])


@pytest.mark.parametrize("wrapped", [True, False], ids=["LabModel", "plain module"])
def test_accuracy_and_predict_refuse_a_dtype_the_model_does_not_compute_in(
    wrapped: bool, tiny_model: lk.LabModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """float64 images for a float32 model get the contract's TypeError, not PyTorch's matmul error."""
    x, y = batch
    model: nn.Module = tiny_model if wrapped else tiny_model.net
    message = r"x has dtype torch.float64 but the model computes in torch.float32; convert the batch"
    with pytest.raises(TypeError, match=message):
        lk.models.accuracy(model, x.double(), y)
    with pytest.raises(TypeError, match=message):
        lk.models.predict(model, x.double())
    assert lk.models.accuracy(model.double(), x.double(), y) == 1.0  # consistent dtypes work


def test_accuracy_restores_train_mode() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Dropout(0.9)).train()
    x, y = torch.rand(64, 1, 2, 2), torch.zeros(64, dtype=torch.long)
    assert lk.models.accuracy(net, x, y) == lk.models.accuracy(net, x, y)
    assert net.training


def test_train_learns_digits_and_leaves_eval_mode() -> None:
    data = lk.data.load("digits", split="train", n=600)
    test = lk.data.load("digits", split="test")
    torch.manual_seed(0)
    model = lk.models.build("digits-cnn", data)
    before = lk.models.accuracy(model, test)
    history = lk.models.train(model, data, epochs=3, lr=3e-3, val=test, progress=False)
    after = lk.models.accuracy(model, test)
    assert not model.training
    assert all(p.grad is None for p in model.parameters()), "train must not leave gradients on the model"
    assert len(history) == 3 and history["val_acc"][-1] == pytest.approx(after)
    n = len(test)
    assert_gap(after, n, before, n, what="test accuracy, after over before training")
    assert_rate_above(after, n, 0.5, what="test accuracy after 3 epochs")
    assert history["loss"][-1] < history["loss"][0]


def test_train_rejects_bad_arguments(tiny_model: lk.LabModel) -> None:
    data = lk.data.load("digits", split="train", n=32)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        lk.models.train(tiny_model, data, epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        lk.models.train(tiny_model, data, epochs=1, lr=float("nan"))
    with pytest.raises(TypeError, match="LabData"):
        lk.models.train(tiny_model, (data.x, data.y), epochs=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected \(batch, 1, 2, 2\)"):
        lk.models.train(tiny_model, data, epochs=1)


def test_pretrained_trains_once_then_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    first = lk.models.pretrained("digits-cnn", progress=False)
    path = lk.models.weights_path("digits-cnn")
    assert path.is_file() and path.parent == tmp_path / "models"
    assert not first.training and first.meta["test_accuracy"] >= 0.97
    second = lk.models.pretrained("digits-cnn", progress=False)
    assert second.meta == first.meta
    x, _ = lk.data.load("digits", split="test").batch(50)
    assert torch.equal(first(x), second(x))
    # A damaged cache file is detected and the model retrained, not loaded half-way.
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        third = lk.models.pretrained("digits-cnn", progress=False)
    assert torch.allclose(third(x), first(x), atol=1e-5)


def test_pretrained_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of digits-cnn"):
        lk.models.pretrained("resnet")


def test_history_table_and_plot() -> None:
    import matplotlib

    matplotlib.use("Agg")
    history = lk.models.History(
        rows=[{"epoch": 1, "loss": 1.0, "train_acc": 0.5}, {"epoch": 2, "loss": 0.5, "train_acc": 0.8}]
    )
    assert "| epoch | loss | train_acc |" in history._repr_markdown_()
    fig = history.plot()
    assert len(fig.axes[0].lines) == 2


@pytest.mark.parametrize("n, epochs", [(100, 1), (256, 2), (500, 1), (1024, 1)])
def test_very_short_runs_train(n: int, epochs: int) -> None:
    """Runs of 1 to 8 optimiser steps train (OneCycleLR divides by zero at exactly 4 steps)."""
    data = lk.data.load("digits", split="train", n=n)
    model = lk.models.build("digits-cnn", data)
    history = lk.models.train(model, data, epochs=epochs, batch_size=128, progress=False)
    assert len(history.rows) == epochs and all(math.isfinite(r["loss"]) for r in history.rows)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4, 3))


def test_fit_runs_a_custom_sampler_and_reports_the_step_sums() -> None:
    """The batches come from ``batches`` (lazily, in its order); a step's reported sums become
    per-example means in the row, a reported ``loss`` replaces the optimised one, and without
    logits there is no ``train_acc``."""
    from labkit.models.loop import fit

    x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    seen: list[list[int]] = []

    def step(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor):  # type: ignore[no-untyped-def]
        seen.append(yb.tolist())
        logits = net(xb)
        hits = (logits.argmax(1) == yb).sum()
        return (
            nn.functional.cross_entropy(logits, yb),
            None,
            {"hits": hits, "loss": torch.tensor(7.0) * len(yb)},
        )

    history = fit(
        _tiny_net(),
        x,
        y,
        epochs=2,
        step=step,
        batches=lambda n, _: [torch.tensor([0, 1]), torch.tensor([5, 4, 3])],
        progress=False,
    )
    assert seen == [[0, 1], [2, 1, 0]] * 2
    assert [list(row) for row in history.rows] == [["epoch", "loss", "hits", "seconds"]] * 2
    assert history["loss"] == [7.0, 7.0]
    assert all(0.0 <= hits <= 1.0 for hits in history["hits"])


def test_fit_with_isolate_rng_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    """Dropout draws from a seed taken from ``generator``; the caller's global stream is kept."""
    from labkit.models.loop import fit

    x, y = torch.rand(32, 1, 2, 2), torch.randint(0, 3, (32,))
    weights = []
    for _ in range(2):
        torch.manual_seed(123)  # the global stream dropout would draw from without isolation
        before = torch.get_rng_state()
        net = _tiny_net()
        torch.set_rng_state(before)
        torch.manual_seed(int(torch.randint(0, 10**6, (1,))))  # a different global stream each run
        state = torch.get_rng_state()
        fit(
            net,
            x,
            y,
            epochs=2,
            batch_size=8,
            isolate_rng=True,
            generator=torch.Generator().manual_seed(4),
            progress=False,
        )
        assert torch.equal(torch.get_rng_state(), state), "fit moved the caller's global random stream"
        weights.append(net[2].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_one_training_loop() -> None:
    """Only labkit/models/loop.py steps an optimiser over a model's weights; every trainer is a
    step and callbacks of its fit (model inversion optimises an input, not a model)."""
    import re

    root = Path(lk.__file__).parent
    pattern = re.compile(r"\b(\w*(opt|optimiser|optimizer)\w*|scaler)\.step\(")
    allowed = {"models/loop.py", "privacy/inversion.py"}
    found = [
        f"{path.relative_to(root)}:{i}"
        for path in sorted(root.rglob("*.py"))
        if str(path.relative_to(root)) not in allowed
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, f"optimiser steps outside labkit/models/loop.py's fit: {found}"


def test_cached_weights_are_keyed_by_the_training_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights trained by an older training loop are not loaded for the current one: the cache
    file's fingerprint covers the loop's source and the PyTorch version, not only the recipe."""
    from labkit.models import loop, zoo

    prof = lk.config.active_profile("ci")
    recipe = zoo.RECIPES["digits-cnn"]
    before = recipe.fingerprint(prof, 100)
    edited = tmp_path / "loop.py"
    edited.write_text(Path(str(loop.__file__)).read_text(encoding="utf-8") + "\n# a changed loop\n")
    monkeypatch.setattr(loop, "__file__", str(edited))
    changed_code = recipe.fingerprint(prof, 100)
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    changed_torch = recipe.fingerprint(prof, 100)
    assert len({before, changed_code, changed_torch}) == 3
