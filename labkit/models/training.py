"""Training and evaluating classifiers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.models.history import History
from labkit.models.loop import Callback, cross_entropy_step, fit, one_cycle
from labkit.utils import check_dtype, check_images, check_labels, eval_mode, model_dtype

__all__ = ["History", "accuracy", "one_cycle", "predict", "train"]


def _logits_by_batch(model: nn.Module, x: object, batch_size: int) -> tuple[torch.Tensor, int]:
    """Predicted classes for ``x`` in batches, and the number of classes of the model's output."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if x.is_floating_point() and not torch.is_autocast_enabled():
        check_dtype(x, model_dtype(model))
    preds, classes = [], 0
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size])
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"the model must return logits of shape (N, classes), got {got}")
            classes = logits.shape[1]
            preds.append(logits.argmax(1))
    return torch.cat(preds), classes


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes for ``x``, computed in evaluation mode and in batches.

    ``x`` must be a non-empty floating-point batch in the model's dtype (a ``TypeError`` says
    which dtype was expected; nothing is cast silently).
    """
    return _logits_by_batch(model, x, batch_size)[0]


def accuracy(
    model: nn.Module,
    x: torch.Tensor | LabData,
    y: torch.Tensor | None = None,
    *,
    batch_size: int = 512,
) -> float:
    """Fraction of examples the model classifies correctly, in ``[0, 1]``.

    Accepts ``(model, x, y)`` tensors or ``(model, data)`` with a :class:`LabData`. Runs in
    evaluation mode without gradients and restores the model's mode afterwards. Labels must be
    integers in ``[0, num_classes)``: a label the model cannot output raises ``ValueError``
    instead of counting as a silent miss.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    ...     _ = net[1].bias.zero_()
    >>> x = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]).view(2, 1, 2, 2)
    >>> accuracy(net, x, torch.tensor([0, 0]))
    0.5
    >>> accuracy(net, x, torch.tensor([0, 99]))
    Traceback (most recent call last):
    ...
    ValueError: y has label 99, outside the model's 2 classes (expected labels in [0, 1])
    """
    if isinstance(x, LabData):
        if y is not None:
            raise TypeError("pass either (model, data) or (model, x, y), not both")
        data = x
        x, y = data.x, data.y
    if y is None:
        raise TypeError("accuracy needs labels: call accuracy(model, x, y) or accuracy(model, data)")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or a LabData, got {type(x).__name__}")
    # A LabModel knows its classes before any forward pass; other models tell by their logits.
    check_labels(y, model.num_classes if isinstance(model, LabModel) else None)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    device = next((p.device for p in model.parameters()), x.device)
    pred, classes = _logits_by_batch(model, x.to(device), batch_size)
    check_labels(y, classes)
    return float((pred == y.to(device)).float().mean())


def train(
    model: nn.Module,
    data: LabData,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    val: LabData | None = None,
    class_weight: torch.Tensor | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> History:
    """Train a classifier with Adam and a one-cycle learning-rate schedule.

    The model trains on the device its parameters live on; the data follow. The model is left
    in evaluation mode, ready for attacks.

    Parameters
    ----------
    model:
        Usually a :class:`~labkit.LabModel`; any module returning logits works.
    data:
        Training data.
    epochs, lr, batch_size, weight_decay:
        The usual optimisation settings.
    val:
        Optional held-out data; its accuracy is recorded each epoch.
    class_weight:
        Per-class loss weights (for rare classes such as fraud).
    augment:
        Optional ``(x, generator) -> x`` applied to each training batch.
    generator:
        Controls shuffling and augmentation, for reproducible runs.
    progress:
        Show a progress bar with the loss and accuracies.

    Returns
    -------
    History
        One row per epoch: ``loss``, ``train_acc``, ``val_acc`` (when ``val`` is given), ``seconds``.
    """
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData (from labkit.data.load), got {type(data).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(model, LabModel):
        check_images(data.x, name="data.x", shape=model.input_shape, value_range=model.value_range)
    callbacks = [] if val is None else [_validation_accuracy(val)]
    return fit(
        model,
        data.x,
        data.y,
        epochs=epochs,
        step=cross_entropy_step(class_weight),
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        augment=augment,
        callbacks=callbacks,
        generator=generator,
        progress=progress,
    )


def _validation_accuracy(val: LabData) -> Callback:
    """A :func:`~labkit.models.loop.fit` callback that records ``val_acc`` each epoch."""

    def record(epoch: int, model: nn.Module, row: dict[str, float]) -> None:
        row["val_acc"] = accuracy(model, val)

    return record
