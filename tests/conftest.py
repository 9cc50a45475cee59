"""Shared fixtures: tiny models with fixed weights, seeded batches, the course root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import labkit as lk

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: the CPU is shared (pytest-xdist workers, other jobs), so more threads
    only oversubscribe it, and one thread keeps runs reproducible."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits_model() -> lk.LabModel:
    """The pretrained digits CNN of the active profile (trained once, then loaded from the cache)."""
    return lk.models.pretrained("digits-cnn", progress=False)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def course() -> lk.course.Course:
    return lk.course.load_course(ROOT / "course.yml")


@pytest.fixture
def tiny_model() -> lk.LabModel:
    """A 2-class linear model on 1x2x2 images with hand-set weights: class 1 iff the mean of the
    first row of pixels exceeds the mean of the second."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, -1.0]]))
        net[1].bias.zero_()
    return lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 2, 2, generator=g)
    y = (x[:, 0, 0].mean(1) > x[:, 0, 1].mean(1)).long()
    return x, y
