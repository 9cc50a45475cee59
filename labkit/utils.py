"""Small utilities every lesson uses: seeding, device choice, evaluation mode, input checks."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "check_dtype",
    "check_images",
    "check_labels",
    "eval_mode",
    "fresh_seed",
    "label_error",
    "model_dtype",
    "pick_device",
    "seed_everything",
]


def fresh_seed(generator: torch.Generator) -> int:
    """A seed for another random stream, drawn from ``generator`` (reproducible with it)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def seed_everything(seed: int = 0, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device).

    Only notebooks and tests should call this: library functions take an optional
    ``generator=`` instead of touching global state.

    Parameters
    ----------
    seed:
        A non-negative integer.
    deterministic:
        Also ask PyTorch for deterministic kernels (slower on a GPU).

    Returns
    -------
    torch.Generator
        A CPU generator seeded with ``seed``, handy for ``generator=`` arguments.

    Examples
    --------
    >>> a = torch.rand(2, generator=seed_everything(0))
    >>> b = torch.rand(2, generator=seed_everything(0))
    >>> bool(torch.equal(a, b))
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global RNG is the point
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def pick_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or the ``LABKIT_DEVICE`` environment variable) forces a choice such as
    ``"cpu"`` or ``"cuda:1"``; asking for a device that is not there raises ``ValueError``.

    Examples
    --------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    choice = prefer if prefer is not None else os.environ.get("LABKIT_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {choice!r} was asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put models in evaluation mode for the block, then restore each module's own mode.

    Submodules keep their individual ``training`` flags: a model with a frozen
    batch-norm layer comes back exactly as it went in.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training
    True
    """
    for m in models:
        if not isinstance(m, nn.Module):
            raise TypeError(f"eval_mode expects torch.nn.Module objects, got {type(m).__name__}")
    saved = [[(mod, mod.training) for mod in m.modules()] for m in models]
    try:
        for m, states in zip(models, saved, strict=True):
            if any(was_training for _, was_training in states):
                m.eval()
        yield
    finally:
        # Only the flags that changed are written: nn.Module's attribute setter is slow, and
        # attacks enter this block on every call.
        for states in saved:
            for mod, was_training in states:
                if mod.training != was_training:
                    mod.training = was_training


def check_images(
    x: object,
    *,
    name: str = "x",
    shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    atol: float = 1e-6,
) -> torch.Tensor:
    """Check a batch of inputs against the lab contract and return it unchanged.

    The contract: a floating-point tensor of shape ``(N, *shape)``, finite everywhere and,
    when ``value_range`` is given, inside ``[low, high]`` (up to ``atol``). Anything else raises
    a ``TypeError`` or ``ValueError`` that says what was found and what was expected. Nothing is
    clamped or cast silently.

    Examples
    --------
    >>> check_images(torch.zeros(2, 1, 8, 8), shape=(1, 8, 8)).shape
    torch.Size([2, 1, 8, 8])
    >>> check_images(torch.full((1, 3), 2.0))
    Traceback (most recent call last):
    ...
    ValueError: x has values outside [0.0, 1.0]: found min 2, max 2. ...
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}; "
            "convert images with x.float() / 255"
        )
    if shape is not None:
        expected = tuple(int(s) for s in shape)
        if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, expected (batch, {', '.join(map(str, expected))})"
            )
    if x.numel() == 0:
        return x
    # One pass over x and one host sync for the common case of a valid batch: the minimum and
    # maximum are NaN when any value is NaN and infinite when any value is, so they settle
    # finiteness and range together.
    low_seen, high_seen = (float(v) for v in torch.stack(_min_max(x)).tolist())
    if not (math.isfinite(low_seen) and math.isfinite(high_seen)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); inputs must be finite")
    if value_range is None:
        return x
    low, high = value_range
    if low_seen >= low - atol and high_seen <= high + atol:
        return x
    raise ValueError(
        f"{name} has values outside [{low}, {high}]: found min {low_seen:.4g}, "
        f"max {high_seen:.4g}. Images must be scaled to [{low}, {high}] "
        "(normalisation happens inside the model)"
    )


def _min_max(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x.amin(), x.amax())`` in one pass where the backend has a fused kernel for it."""
    try:
        low, high = torch.aminmax(x)
    except (RuntimeError, NotImplementedError):  # dtypes or backends without aminmax
        return x.amin(), x.amax()
    return low, high


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating-point dtype a model computes in: that of its first floating parameter (else
    buffer), ``None`` for a model that has neither.

    Examples
    --------
    >>> model_dtype(nn.Linear(2, 2).double())
    torch.float64
    """
    # Lazily: the first floating parameter ends the walk (attacks call this once per run).
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def check_dtype(x: torch.Tensor, expected: torch.dtype | None, *, name: str = "x") -> None:
    """Raise ``TypeError`` when ``x`` does not have the dtype the model computes in.

    Nothing is cast silently: a float64 batch for a float32 model is a mistake to fix at the
    source (``x.float()``), or the model is meant to run in float64 (``model.double()``).
    ``expected=None`` (a model without floating parameters) accepts any dtype.

    Examples
    --------
    >>> check_dtype(torch.zeros(1, 2, dtype=torch.float64), torch.float32)
    Traceback (most recent call last):
    ...
    TypeError: x has dtype torch.float64 but the model computes in torch.float32; ...
    """
    if expected is not None and x.dtype != expected:
        raise TypeError(
            f"{name} has dtype {x.dtype} but the model computes in {expected}; "
            f"convert the batch with {name}.to({expected}) (or the model with .to({x.dtype}))"
        )


def label_error(label: int, num_classes: int, *, name: str = "y") -> str:
    """The message for a class label outside ``[0, num_classes)``."""
    return (
        f"{name} has label {label}, outside the model's {num_classes} classes "
        f"(expected labels in [0, {num_classes - 1}])"
    )


def check_labels(y: object, num_classes: int | None, *, name: str = "y") -> torch.Tensor:
    """Check class labels: an integer tensor of shape ``(N,)`` with values in ``[0, num_classes)``.

    Returns ``y`` unchanged; raises ``TypeError``/``ValueError`` naming the bad label and the
    number of classes. One host synchronisation (none when ``num_classes`` is ``None``: then
    only the type and shape are checked).

    Examples
    --------
    >>> check_labels(torch.tensor([0, 99]), 10)
    Traceback (most recent call last):
    ...
    ValueError: y has label 99, outside the model's 10 classes (expected labels in [0, 9])
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int64 class labels, got {type(y).__name__}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold int64 class labels, got dtype {y.dtype}; use {name}.long()")
    if y.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(y.shape)}")
    if num_classes is None or y.numel() == 0:
        return y
    low, high = torch.stack([y.min(), y.max()]).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(label_error(int(low if low < 0 else high), num_classes, name=name))
    return y
