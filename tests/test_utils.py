"""seed_everything, pick_device, eval_mode and check_images."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

import labkit as lk


def test_seed_everything_reproduces_all_generators() -> None:
    lk.seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    lk.seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    lk.seed_everything(124)
    assert not torch.equal(torch.rand(3), first[2])


def test_seed_everything_returns_seeded_generator() -> None:
    a = torch.rand(4, generator=lk.seed_everything(7))
    b = torch.rand(4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_everything_rejects_bad_seed(bad: object) -> None:
    with pytest.raises((TypeError, ValueError), match="seed"):
        lk.seed_everything(bad)  # type: ignore[arg-type]


def test_pick_device_cpu_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lk.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert lk.pick_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        monkeypatch.delenv("LABKIT_DEVICE")
        assert lk.pick_device().type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            lk.pick_device("cuda")


def test_eval_mode_restores_each_submodule() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2)).train()
    net[2].eval()  # a frozen batch-norm layer inside a training model
    with lk.eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[1].training and not net[2].training


def test_eval_mode_restores_after_exception() -> None:
    net = nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError), lk.eval_mode(net):
        raise RuntimeError("boom")
    assert net.training


def test_eval_mode_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="nn.Module"), lk.eval_mode("model"):  # type: ignore[arg-type]
        pass


def test_check_images_accepts_valid_and_returns_same_object() -> None:
    x = torch.rand(3, 1, 4, 4)
    assert lk.check_images(x, shape=(1, 4, 4)) is x
    edges = torch.tensor([0.0, 1.0]).view(2, 1)
    assert lk.check_images(edges, shape=(1,)) is edges


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.full((2, 1, 4, 4), 1.5), ValueError, r"outside \[0.0, 1.0\].*max 1.5"),
        (torch.full((2, 1, 4, 4), -0.2), ValueError, r"min -0.2"),
        (torch.tensor([[float("nan")]]), ValueError, "NaN"),
        (torch.tensor([[float("inf")]]), ValueError, "infinite"),
        (torch.ones(2, 1, 4, 4, dtype=torch.uint8), TypeError, "floating-point"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
)
def test_check_images_rejects_bad_values(x: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        lk.check_images(x)


def test_check_images_shape_message() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4, 4\), expected \(batch, 1, 4, 4\)"):
        lk.check_images(torch.rand(2, 3, 4, 4), shape=(1, 4, 4))


def test_check_images_unbounded_range_still_rejects_nan() -> None:
    x = torch.tensor([[5.0, -3.0]])
    assert lk.check_images(x, value_range=None) is x
    with pytest.raises(ValueError, match="NaN"):
        lk.check_images(torch.tensor([[float("nan"), 1.0]]), value_range=None)
