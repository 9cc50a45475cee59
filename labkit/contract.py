"""The lab model contract: what every model in the course promises.

A :class:`LabModel` wraps any ``nn.Module`` and guarantees, for every lesson and attack:

* inputs are images (or feature vectors) in the valid range, checked on every call;
* normalisation lives *inside* the model, so epsilons are always in pixel units;
* the output is raw logits, one row per input;
* calling it in training mode gives a warning, because dropout and batch-norm statistics would
  make attacks and evaluations noisy and wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from labkit.utils import check_dtype, check_images

__all__ = ["LabModel", "TrainModeWarning"]


class TrainModeWarning(UserWarning):
    """A model was evaluated while in training mode."""


def _as_buffer(values: float | Sequence[float] | torch.Tensor, channels: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        raise ValueError(f"{what} has {t.numel()} values, expected 1 or {channels} (one per channel)")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite, got {t.tolist()}")
    return t


class LabModel(nn.Module):
    """Wrap a network so it obeys the lab model contract.

    Parameters
    ----------
    net:
        Any module mapping normalised inputs to logits of shape ``(N, num_classes)``.
    input_shape:
        Shape of one input without the batch dimension, e.g. ``(3, 32, 32)`` or ``(12,)``.
    num_classes:
        Number of output classes.
    mean, std:
        Per-channel (images) or per-feature (tabular) normalisation applied inside ``forward``.
    value_range:
        Valid range of raw inputs, ``(0, 1)`` for images; ``None`` for unbounded tabular
        features (then only shape and finiteness are checked).
    class_names:
        Optional names of the classes, used by plots and reports.
    check_inputs:
        Validate every batch (one host synchronisation per call). Attacks that call the model
        thousands of times on inputs they already keep in range may switch it off with
        :meth:`unchecked`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> model = LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
    >>> model(torch.rand(3, 1, 2, 2)).shape
    torch.Size([3, 2])
    >>> model(torch.full((1, 1, 2, 2), 1.5))
    Traceback (most recent call last):
    ...
    ValueError: x has values outside [0.0, 1.0]: found min 1.5, max 1.5. ...
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        mean: float | Sequence[float] | torch.Tensor = 0.0,
        std: float | Sequence[float] | torch.Tensor = 1.0,
        value_range: tuple[float, float] | None = (0.0, 1.0),
        class_names: Sequence[str] | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if isinstance(net, LabModel):
            raise TypeError("net is already a LabModel; wrap the inner network instead")
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"input_shape must be positive sizes such as (3, 32, 32), got {input_shape}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if value_range is not None and not value_range[0] < value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        if class_names is not None and len(class_names) != int(num_classes):
            raise ValueError(f"class_names has {len(class_names)} names, expected num_classes={num_classes}")
        self.net = net
        self.input_shape = shape
        self.num_classes = int(num_classes)
        self.value_range = value_range
        self.class_names = list(class_names) if class_names is not None else None
        self.check_inputs = check_inputs
        self.meta: dict[str, Any] = {}
        channels = shape[0]
        std_t = _as_buffer(std, channels, "std")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        view = (1, channels) + (1,) * (len(shape) - 1)
        self.register_buffer("mean", _as_buffer(mean, channels, "mean").view(view))
        self.register_buffer("std", std_t.view(view))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_inputs:
            check_images(x, shape=self.input_shape, value_range=self.value_range)
            if not torch.is_autocast_enabled():
                check_dtype(x, self.mean.dtype)
        if self.training:
            warnings.warn(
                "LabModel called in training mode: dropout and batch-norm make predictions and "
                "attacks noisy. Call model.eval() (or use labkit.eval_mode(model)) first.",
                TrainModeWarning,
                stacklevel=2,
            )
        logits = self.net((x - self.mean) / self.std)
        if logits.dim() != 2 or logits.shape != (x.shape[0], self.num_classes):
            raise ValueError(
                f"the wrapped network returned shape {tuple(logits.shape)}, expected "
                f"({x.shape[0]}, {self.num_classes}) logits"
            )
        return logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class indices for a batch (no gradients)."""
        return self(x).argmax(dim=1)

    def unchecked(self) -> _Unchecked:
        """Context manager that skips input validation inside the block (for hot loops)."""
        return _Unchecked(self)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, value_range={self.value_range}"
        )


class _Unchecked:
    def __init__(self, model: LabModel) -> None:
        self.model = model
        self.saved = model.check_inputs

    def __enter__(self) -> LabModel:
        self.model.check_inputs = False
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.check_inputs = self.saved
