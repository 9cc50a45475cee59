"""The training loop every labkit trainer runs: :func:`fit`, with a step and callbacks.

:func:`fit` owns what every trainer repeats: the device, Adam and the one-cycle schedule, the
shuffled batches from a seeded generator, training mode without the train-mode warning, the
model's input checks off for the hot loop (the data were checked once), the progress bar and the
:class:`~labkit.models.History` rows. What differs between trainers is the *step* (the loss of
one batch: cross-entropy, soft labels, an attack then cross-entropy, ...) and what happens after
each epoch (*callbacks*: validation accuracy, an overfitting alarm, early stopping).

>>> import labkit as lk
>>> data = lk.data.load("digits", split="train", n=64)
>>> model = lk.models.build("digits-cnn", data)
>>> history = fit(model, data.x, data.y, epochs=1, progress=False)
>>> sorted(history.final), model.training
(['epoch', 'loss', 'seconds', 'train_acc'], False)
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from labkit._checks import check_int, check_positive
from labkit.contract import LabModel, TrainModeWarning
from labkit.models.history import History

__all__ = ["Callback", "Step", "cross_entropy_step", "fit", "one_cycle", "soft_label_step"]


class Step(Protocol):
    """The loss of one batch: ``step(model, x, y) -> (loss, logits)``.

    ``loss`` is a scalar to minimise; ``logits`` (or ``None``) are the model's outputs on the
    batch, from which :func:`fit` counts ``train_acc`` when ``y`` holds class labels.
    """

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, /
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


StepOutput = tuple[torch.Tensor, torch.Tensor | None]
"""A step's ``(loss, logits or None)``."""

Callback = Callable[[int, nn.Module, dict[str, float]], bool | None]
"""``callback(epoch, model, row)`` after each epoch, the model in eval mode: it may add
entries to ``row`` (``val_acc``, ``robust_acc``) and returns ``True`` to stop training."""


def cross_entropy_step(weight: torch.Tensor | None = None) -> Step:
    """Cross-entropy to the labels (``weight``: per-class loss weights, e.g. for fraud)."""

    def step(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, /
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = model(x)
        w = None if weight is None else weight.to(logits.device)
        return F.cross_entropy(logits, y, weight=w), logits

    return step


def soft_label_step(temperature: float = 1.0) -> Step:
    """Cross-entropy to soft labels ``y`` ``(N, C)`` (rows summing to 1) of the model's logits
    divided by ``temperature`` (distillation trains at a high one)."""

    def step(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, /
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = model(x) if temperature == 1.0 else model(x) / temperature
        return -(y * F.log_softmax(logits, dim=1)).sum(1).mean(), None

    return step


def one_cycle(
    optimiser: torch.optim.Optimizer, *, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The one-cycle schedule every labkit training loop uses: 25% warm-up, then cosine decay.

    PyTorch's ``OneCycleLR`` divides by the length of its warm-up, which is zero for a run of
    exactly four steps (and meaningless for fewer); such short runs get a constant ``lr``.

    Examples
    --------
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> type(one_cycle(opt, lr=0.1, total_steps=4)).__name__
    'LambdaLR'
    """
    if total_steps < 5:
        return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total_steps, pct_start=0.25)


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    step: Step | None = None,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    schedule: bool = True,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "training",
    leave: bool = True,
) -> History:
    """Train ``model`` on ``(x, y)`` with Adam, one ``step`` per shuffled batch.

    The model trains on the device its parameters live on; each batch follows it. The inputs
    are not checked here: the caller checks the data once (a :class:`~labkit.LabModel` skips its
    per-call checks inside the loop). The model is left in evaluation mode, without gradients.

    Parameters
    ----------
    model:
        The network, usually a :class:`~labkit.LabModel`.
    x, y:
        Inputs and targets (class labels, or soft labels for :func:`soft_label_step`).
    epochs, lr, batch_size, weight_decay:
        The usual optimisation settings.
    step:
        The loss of a batch (:class:`Step`); default :func:`cross_entropy_step`.
    schedule:
        Use the one-cycle learning-rate schedule (:func:`one_cycle`); else a constant ``lr``.
    augment:
        Optional ``(x, generator) -> x`` applied to each training batch.
    callbacks:
        Run after each epoch in order (:data:`Callback`); one returning ``True`` stops training.
    generator:
        Controls shuffling and augmentation, for reproducible runs.
    progress, desc, leave:
        The progress bar: shown or not, its label, and whether it stays when done.

    Returns
    -------
    History
        One row per epoch: ``epoch``, ``loss``, ``train_acc`` (class labels only), what the
        callbacks add, ``seconds``.
    """
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_positive(lr, "lr")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"x and y must hold the same, non-zero number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    step = step if step is not None else cross_entropy_step()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    sched = one_cycle(optimiser, lr=lr, total_steps=epochs * math.ceil(n / batch_size)) if schedule else None
    labels = y.dim() == 1
    history = History()
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress, leave=leave)
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    try:
        with unchecked:
            for epoch in bar:
                start = time.perf_counter()
                model.train()
                order = torch.randperm(n, generator=gen)
                total_loss = torch.zeros((), device=device)
                correct = torch.zeros((), device=device)
                for i in range(0, n, batch_size):
                    idx = order[i : i + batch_size]
                    xb, yb = x[idx].to(device), y[idx].to(device)
                    if augment is not None:
                        xb = augment(xb, gen)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", TrainModeWarning)
                        loss, logits = step(model, xb, yb)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    if sched is not None:
                        sched.step()
                    total_loss += loss.detach() * len(idx)
                    if labels and logits is not None:
                        correct += (logits.detach().argmax(1) == yb).sum()
                model.eval()
                row: dict[str, float] = {"epoch": epoch, "loss": float(total_loss) / n}
                if labels:
                    row["train_acc"] = float(correct) / n
                stop = False
                for callback in callbacks:
                    stop = bool(callback(epoch, model, row)) or stop
                row["seconds"] = time.perf_counter() - start
                history.rows.append(row)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("epoch", "seconds")})
                if stop:
                    break
    finally:
        model.eval()
        optimiser.zero_grad(set_to_none=True)  # hand the model back without stale gradients
    return history
