"""Argument checks and small helpers shared by the poisoning modules."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from labkit import _checks
from labkit.data.base import LabData
from labkit.utils import eval_mode


def check_data(data: object, name: str = "data") -> LabData:
    if not isinstance(data, LabData):
        raise TypeError(f"{name} must be a LabData (from labkit.data.load), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")
    return data


def check_rate(rate: object, name: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(rate).__name__}")
    r = float(rate)
    if not (math.isfinite(r) and 0.0 <= r <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {rate}")
    return r


def check_class(value: object, num_classes: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a class index (int), got {type(value).__name__}")
    v = int(value)
    if not 0 <= v < num_classes:
        raise ValueError(f"{name}={v} is not a class: expected an index in 0..{num_classes - 1}")
    return v


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (:func:`labkit._checks.check_int`)."""
    return _checks.check_int(value, name, minimum=minimum)


def check_indices(indices: object, n: int, name: str = "indices") -> torch.Tensor:
    """Unique, sorted int64 indices into a data set of ``n`` rows."""
    idx = torch.as_tensor(indices, dtype=torch.long).flatten().cpu()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"{name} must lie in 0..{n - 1}, found {int(idx.min())}..{int(idx.max())}")
    return torch.unique(idx)


def draw_seed(generator: torch.Generator | None) -> int:
    """A seed drawn from ``generator`` (or the global RNG when there is none)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def representation_layer(model: nn.Module) -> nn.Linear:
    """Where the model's learned representation is read: the input of this module.

    For a CNN, the first ``nn.Linear`` after a convolution (its input is the flattened output
    of the convolutional feature extractor); otherwise the last ``nn.Linear`` (its input is the
    last hidden layer).
    """
    seen_conv = False
    linears = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            seen_conv = True
        elif isinstance(m, nn.Linear):
            if seen_conv:
                return m
            linears.append(m)
    if not linears:
        raise ValueError("the model has no nn.Linear layer; pass layer= to choose where to read features")
    return linears[-1]


@torch.no_grad()
def features(
    model: nn.Module, x: torch.Tensor, *, layer: nn.Module | None = None, batch_size: int = 512
) -> torch.Tensor:
    """Flattened activations feeding ``layer`` (default: :func:`representation_layer`).

    For the course's CNNs that is the output of the convolutional feature extractor, the
    "learned representation" that spectral signatures and activation clustering inspect.
    """
    target = layer if layer is not None else representation_layer(model)
    if not any(m is target for m in model.modules()):
        raise ValueError("layer is not a submodule of model")
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, inputs: tuple[Any, ...]) -> None:
        captured.append(inputs[0].detach().flatten(1))

    handle = target.register_forward_pre_hook(hook)
    device = model_device(model)
    try:
        with eval_mode(model):
            for i in range(0, x.shape[0], batch_size):
                model(x[i : i + batch_size].to(device))
    finally:
        handle.remove()
    return torch.cat(captured).float().cpu()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global CPU RNG inside the block and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
