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
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from labkit import speed as _speed
from labkit._checks import check_int, check_positive
from labkit.contract import LabModel, TrainModeWarning
from labkit.models.history import History
from labkit.utils import fresh_seed

__all__ = [
    "Callback",
    "Sampler",
    "Step",
    "StepOutput",
    "cross_entropy_step",
    "fit",
    "one_cycle",
    "process_group",
    "shuffled",
    "soft_label_step",
]

StepOutput = (
    tuple[torch.Tensor, torch.Tensor | None]
    | tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]
)
"""A step's ``(loss, logits or None)``, optionally with a third entry: per-batch *sums* to
report (``{"train_adv_acc": hits}``), each divided by the examples of the epoch for its row.
A reported ``"loss"`` sum replaces ``loss`` times the batch size in the row (a step whose
``loss`` is only a device for the gradient, as DP-SGD's, reports the real one)."""


class Step(Protocol):
    """The loss of one batch: ``step(model, x, y) -> (loss, logits)`` (:data:`StepOutput`).

    ``loss`` is a scalar to minimise; ``logits`` (or ``None``) are the model's outputs on the
    batch, from which :func:`fit` counts ``train_acc`` when ``y`` holds class labels.
    """

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, /) -> StepOutput: ...


Sampler = Callable[[int, torch.Generator], Iterable[torch.Tensor]]
"""``batches(n, generator)``: the index tensors of one epoch's batches over ``n`` examples
(:func:`shuffled` by default; DP-SGD draws Poisson lots). Draw lazily: a step may use the
generator between two batches."""

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
    optimizer: torch.optim.Optimizer | None = None,
    batches: Sampler | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    generator: torch.Generator | None = None,
    isolate_rng: bool = False,
    distributed: bool = False,
    progress: bool = True,
    desc: str = "training",
    leave: bool = True,
) -> History:
    """Train ``model`` on ``(x, y)``: one ``step`` and one optimiser step per batch.

    The model trains on the device its parameters live on; each batch follows it (from pinned
    memory when :mod:`labkit.speed` turns ``pin_memory`` on, with a gradient scaler when it turns
    float16 autocast on; both off by default). The inputs are not checked here: the caller checks
    the data once (a :class:`~labkit.LabModel` skips its per-call checks inside the loop). The
    model is left in evaluation mode, without gradients.

    Parameters
    ----------
    model:
        The network, usually a :class:`~labkit.LabModel`.
    x, y:
        Inputs and targets (class labels, or soft labels for :func:`soft_label_step`).
    epochs, lr, batch_size, weight_decay:
        The usual optimisation settings (``lr`` and ``weight_decay`` build the default Adam).
    step:
        The loss of a batch (:class:`Step`); default :func:`cross_entropy_step`.
    schedule:
        Use the one-cycle learning-rate schedule (:func:`one_cycle`); else a constant ``lr``.
    optimizer:
        The optimiser, built over ``model``'s parameters; default Adam with ``lr`` and
        ``weight_decay``.
    batches:
        The batches of one epoch (:data:`Sampler`); default :func:`shuffled` ``(batch_size)``,
        every example once per epoch.
    augment:
        Optional ``(x, generator) -> x`` applied to each training batch.
    callbacks:
        Run after each epoch in order (:data:`Callback`); one returning ``True`` stops training.
    generator:
        Controls shuffling and augmentation, for reproducible runs.
    isolate_rng:
        Seed the global random generator (dropout, attacks' random starts) from ``generator``
        inside :func:`torch.random.fork_rng`: the run is reproducible and the caller's global
        random state is left as it was.
    distributed:
        Train data-parallel when a ``torch.distributed`` process group is initialised (see
        :func:`labkit.hardening.adversarial_training`): each batch is split across the
        processes, ``step`` gets the :class:`~torch.nn.parallel.DistributedDataParallel`
        wrapper, and the epoch's sums are added over all processes. Without a process group
        this changes nothing.
    progress, desc, leave:
        The progress bar: shown or not (on the first process only), its label, and whether it
        stays when done.

    Returns
    -------
    History
        One row per epoch: ``epoch``, ``loss``, ``train_acc`` (when the step returns logits for
        class labels), the step's reported sums, what the callbacks add, ``seconds``.
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
    rank, world = process_group() if distributed else (0, 1)
    if rank > 0:  # different random starts and dropout on every process; rank 0 keeps the stream
        gen.manual_seed(fresh_seed(gen) + rank)
    trainer: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trainer = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    optimiser = (
        optimizer
        if optimizer is not None
        else torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    )
    n = x.shape[0]
    sched = one_cycle(optimiser, lr=lr, total_steps=epochs * math.ceil(n / batch_size)) if schedule else None
    sampler = batches if batches is not None else shuffled(batch_size, world=world)
    fast = _speed.current()
    # float16 gradients need loss scaling; bfloat16 and float32 do not (a disabled scaler is a no-op).
    scaler = torch.amp.GradScaler(device.type, enabled=fast.autocast == "fp16" and fast.applies_to(device))
    labels = y.dim() == 1
    record = History()
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress or rank > 0, leave=leave)
    unchecked = model.unchecked() if isinstance(model, LabModel) else contextlib.nullcontext()
    fork = [device] if device.type == "cuda" else []
    rng = torch.random.fork_rng(devices=fork) if isolate_rng else contextlib.nullcontext()
    try:
        with unchecked, rng:
            if isolate_rng:
                torch.manual_seed(fresh_seed(gen))
            for epoch in bar:
                start = time.perf_counter()
                model.train()
                # loss, hits, examples and the step's reported sums, added over processes at the end
                sums: dict[str, torch.Tensor] = {}
                any_logits = False
                for idx in sampler(n, gen):
                    share = idx
                    if world > 1:
                        if len(idx) < world:  # too few for every process to get one: skipped everywhere
                            continue
                        share = idx.tensor_split(world)[rank]
                    xb = _speed.to_device(x[share], device, fast)
                    yb = _speed.to_device(y[share], device, fast)
                    if augment is not None:
                        xb = augment(xb, gen)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", TrainModeWarning)
                        out = step(trainer, xb, yb)
                    loss, logits = out[0], out[1]
                    reported = out[2] if len(out) > 2 else None
                    optimiser.zero_grad(set_to_none=True)
                    # DDP averages gradients over processes; the weight makes that the batch mean
                    objective = loss * (len(share) * world / len(idx)) if world > 1 else loss
                    scaler.scale(objective).backward()
                    scaler.step(optimiser)
                    scaler.update()
                    if sched is not None:
                        sched.step()
                    batch = {"loss": loss.detach() * len(share)}
                    if labels and logits is not None:
                        any_logits = True
                        batch["train_acc"] = (logits.detach().argmax(1) == yb).sum()
                    batch.update(reported or {})
                    batch["examples"] = torch.tensor(len(share), device=device)
                    for key, value in batch.items():
                        total = sums.get(key)
                        sums[key] = value.detach().to(device) if total is None else total + value.detach()
                model.eval()
                row = _epoch_row(epoch, sums, world, any_logits)
                stop = False
                for callback in callbacks:
                    stop = bool(callback(epoch, model, row)) or stop
                row["seconds"] = time.perf_counter() - start
                record.rows.append(row)
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in row.items() if k not in ("epoch", "seconds", "lr")}
                )
                if stop:
                    break
    finally:
        model.eval()
        optimiser.zero_grad(set_to_none=True)  # hand the model back without stale gradients
    return record


def _epoch_row(epoch: int, sums: dict[str, torch.Tensor], world: int, any_logits: bool) -> dict[str, float]:
    """One epoch's row from its batch sums (one host sync; added over processes under DDP)."""
    keys = list(sums)
    values = torch.stack([sums[k].to(torch.float64) for k in keys]) if keys else torch.zeros(0)
    if world > 1:
        torch.distributed.all_reduce(values)
    totals = dict(zip(keys, values.tolist(), strict=True))
    seen = max(totals.pop("examples", 0.0), 1.0)
    row: dict[str, float] = {"epoch": epoch, "loss": totals.pop("loss", math.nan) / seen}
    if not any_logits:
        totals.pop("train_acc", None)
    row.update({k: v / seen for k, v in totals.items()})
    return row


def shuffled(batch_size: int, *, world: int = 1) -> Sampler:
    """Every example once per epoch, in a fresh shuffle from the generator, ``batch_size`` at a
    time (the default :data:`Sampler` of :func:`fit`). With ``world`` > 1 processes, all of them
    use the first process's shuffle."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)

    def epoch(n: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(n, generator=gen)
        if world > 1:
            backend = torch.distributed.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            order = order.to(device)
            torch.distributed.broadcast(order, src=0)
            order = order.cpu()
        for i in range(0, n, batch_size):
            yield order[i : i + batch_size]

    return epoch


def process_group() -> tuple[int, int]:
    """``(rank, world size)`` of the current ``torch.distributed`` process group, else ``(0, 1)``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
