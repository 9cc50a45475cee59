"""Running any classifier (a module or a callable returning logits) in batches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from labkit.utils import eval_mode

__all__ = ["Classifier", "batched_logits", "check_batch_size", "check_model", "model_device"]

Classifier = nn.Module | Callable[[torch.Tensor], torch.Tensor]
"""A model: any ``nn.Module`` or callable mapping a batch to logits ``(N, classes)``."""


def check_model(model: object, name: str = "model") -> Classifier:
    if not callable(model):
        raise TypeError(
            f"{name} must be a torch.nn.Module or a callable returning logits, got {type(model).__name__}"
        )
    return model


def check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def model_device(model: Classifier, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer, else ``fallback``."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
        for b in model.buffers():
            return b.device
    return fallback


@contextlib.contextmanager
def _evaluating(model: Classifier) -> Iterator[None]:
    if isinstance(model, nn.Module):
        with eval_mode(model):
            yield
    else:
        yield


@torch.no_grad()
def batched_logits(model: Classifier, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in evaluation mode, without gradients, on the model's device."""
    device = model_device(model, x.device)
    outs = []
    with _evaluating(model):
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i : i + batch_size].to(device))
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise TypeError("the model must return a tensor of logits of shape (N, classes)")
            outs.append(out)
    return torch.cat(outs)
