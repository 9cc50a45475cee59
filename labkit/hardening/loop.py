"""The adversarial-training loop: train on whatever an attack returns, watch for overfitting.

:func:`adversarial_training` is the inner-max / outer-min loop of Madry et al.
(arXiv:1706.06083) for *any* attack callable ``(model, x, y) -> x_adv``, with a clean loss or
the TRADES loss, a one-cycle schedule, a held-out monitor batch, detection of catastrophic
overfitting (and early stopping on it), and data-parallel training under ``torch.distributed``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from labkit import speed as _speed
from labkit._checks import check_fraction, check_int, check_number
from labkit.attacks.whitebox import Attack
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.hardening.history import AdversarialHistory, CatastrophicOverfittingWarning
from labkit.models.loop import StepOutput, fit
from labkit.utils import check_images, eval_mode

__all__ = ["Loss", "adversarial_training"]


Loss = Literal["ce", "trades"]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def adversarial_training(
    model: nn.Module,
    data: LabData,
    *,
    attack: Attack,
    epochs: int,
    loss: Loss = "ce",
    beta: float = 6.0,
    clean_weight: float = 0.0,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    val: LabData | None = None,
    monitor_attack: Attack | None = None,
    monitor_size: int = 32,
    overfit_drop: float | None = 0.2,
    overfit_gap: float | None = None,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AdversarialHistory:
    """Train ``model`` on adversarial examples from ``attack``, crafted afresh for every batch.

    Each step draws a batch :math:`(x, y)`, runs ``x_adv = attack(model, x, y)`` with the model
    in eval mode, then takes an Adam step (one-cycle learning-rate schedule, as
    :func:`labkit.models.train`) on

    * ``loss="ce"``: :math:`(1 - w)\\, L(f(x_{adv}), y) + w\\, L(f(x), y)` with
      :math:`w` = ``clean_weight`` (0 for Madry et al., 0.5 for Goodfellow et al. and
      ensemble adversarial training);
    * ``loss="trades"``: :math:`L(f(x), y) + \\beta\\, \\mathrm{KL}(f(x) \\,\\|\\, f(x_{adv}))`
      (pair it with :func:`trades_attack`).

    After every epoch it measures clean and robust accuracy (against ``monitor_attack``,
    default ``attack``) on a held-out monitor batch: the first ``monitor_size`` examples of
    ``val``, else of ``data``. Two alarms watch for *catastrophic overfitting* (Wong et al.),
    a model that learns to defeat its own training attack instead of every attack in the ball:

    * **drop** (``overfit_drop``): robust accuracy falls more than ``overfit_drop`` below its best
      so far, the sudden collapse seen on CIFAR-10;
    * **gap** (``overfit_gap``, off by default): accuracy on the monitor batch against the
      training ``attack`` (column ``attack_acc``) exceeds robust accuracy against
      ``monitor_attack`` by more than ``overfit_gap``. This also catches the slow form, in which
      robust accuracy never rose, so there was nothing to drop from. It is judged from the
      second epoch on (after one epoch, a single step can trail PGD widely on any model at a
      large budget) and costs one run of the training attack on the monitor batch per epoch
      (drawing from the attack's random generator, if it has one).

    When either fires, a :class:`CatastrophicOverfittingWarning` is raised (once per run),
    ``history.overfit_epoch`` and ``history.overfit_reason`` are set and, with ``early_stop``,
    training stops and the weights of the epoch with the best robust accuracy are restored.

    The model is trained in place and left in eval mode; ``data`` is not modified. Host
    synchronisations happen once per epoch, not per batch (on a GPU, batches copied from
    pageable memory still block the host until ``pin_memory`` is on).

    **Speed** (:mod:`labkit.speed`, off unless the profile turns it on; the ``gpu`` profile
    does): batches reach the GPU through pinned memory without blocking the host, and the
    forward passes of the attack and of the training step run under bfloat16 autocast
    (float16 with a gradient scaler). Call ``labkit.speed.prepare(model)`` before training for
    ``channels_last`` weights and a compiled network.

    **Several processes** (``torchrun``, PyTorch's DistributedDataParallel): when a
    ``torch.distributed`` process group is initialised, the same call trains data-parallel with
    no change to the caller's code. Every process runs the function on the full ``data``; each
    global batch of ``batch_size`` examples (rank 0's shuffle, broadcast) is split across the
    processes, each crafts adversarial examples for its share with its own copy of the model,
    and DDP averages the gradients so an optimiser step equals the single-process step on the
    whole batch (each share's loss is weighted by its size). The history (loss and accuracy
    summed over all processes) is the same on every rank, the progress bar shows on rank 0
    only, and ranks above 0 reseed ``generator`` so their random starts and dropout differ.
    Batch-norm statistics stay per process, as in plain DDP. ``labkit.hardening.distributed``
    has a ready-made ``torchrun`` entry point.

    Parameters
    ----------
    model:
        A classifier returning logits, usually a :class:`~labkit.LabModel` (then ``data.x`` is
        checked against its input shape and range once).
    data:
        Training data.
    attack:
        Any ``(model, x, y) -> x_adv``: :func:`pgd_train_attack`, :func:`fgsm_rs_attack`,
        :func:`trades_attack` with their settings bound by ``functools.partial``, or any attack
        of :mod:`labkit.attacks`.
    epochs, lr, batch_size, weight_decay:
        Optimisation settings.
    loss:
        ``"ce"`` or ``"trades"``.
    beta:
        TRADES' weight on the KL term (``loss="trades"`` only).
    clean_weight:
        Weight ``w`` in ``[0, 1]`` of the clean loss (``loss="ce"`` only).
    val:
        Held-out data for the monitor batch.
    monitor_attack:
        Attack for the per-epoch robust accuracy; use PGD when training with FGSM.
    monitor_size:
        Examples in the monitor batch (0 turns monitoring off). The default 32 keeps the
        monitor within about 15% of a digits epoch on the ci profile (PGD-10 on 32 examples:
        measured +15% for FGSM training, +4% for PGD training, CPU time); a larger batch gives
        a steadier robust-accuracy curve at a proportional cost (256: +74% and +29%).
    overfit_drop:
        Drop in robust accuracy, below the best epoch's, that counts as catastrophic
        overfitting; ``None`` turns this alarm off.
    overfit_gap:
        Lead of accuracy against the training attack over robust accuracy, on the monitor batch,
        that counts as catastrophic overfitting (0.3 suits FGSM training); ``None`` (default)
        turns this alarm off. Needs a ``monitor_attack`` and a monitor batch.
    early_stop:
        On catastrophic overfitting, stop and restore the best epoch's weights.
    generator:
        Source of the shuffling (and of the attacks' randomness when the recipes bind it);
        dropout is seeded from it too, so a run is reproducible. The global RNG is untouched.
    progress:
        Show a progress bar with clean and robust accuracy per epoch.

    Returns
    -------
    AdversarialHistory
        One row per epoch; ``.plot()`` draws clean and robust accuracy.

    Examples
    --------
    >>> from functools import partial
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> model = lk.models.build("digits-cnn", data)
    >>> attack = partial(lk.attacks.pgd, eps=0.1, steps=2)          # any attack plugs in
    >>> history = adversarial_training(model, data, attack=attack, epochs=1, clean_weight=0.5,
    ...                                progress=False)
    >>> [k for k in history.final if k.endswith("acc")]
    ['train_acc', 'train_adv_acc', 'clean_acc', 'robust_acc']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData (from labkit.data.load), got {type(data).__name__}")
    if not callable(attack):
        raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
    if monitor_attack is not None and not callable(monitor_attack):
        raise TypeError(f"monitor_attack must be a callable or None, got {type(monitor_attack).__name__}")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    monitor_size = check_int(monitor_size, "monitor_size", minimum=0)
    lr = check_number(lr, "lr")
    weight_decay = check_number(weight_decay, "weight_decay", strict=False)
    if loss not in ("ce", "trades"):
        raise ValueError(f"loss must be 'ce' or 'trades', got {loss!r}")
    beta = check_number(beta, "beta", strict=False)
    clean_weight = check_fraction(clean_weight, "clean_weight")
    if overfit_drop is not None:
        overfit_drop = check_fraction(overfit_drop, "overfit_drop")
    if overfit_gap is not None:
        overfit_gap = check_fraction(overfit_gap, "overfit_gap")
        if monitor_attack is None:
            raise ValueError(
                "overfit_gap compares the training attack with monitor_attack, so it needs one: pass "
                "a stronger attack than the training one (e.g. PGD-10 when training with FGSM)"
            )
        if monitor_size == 0:
            raise ValueError("overfit_gap needs a monitor batch; set monitor_size above 0")
    if val is not None and not isinstance(val, LabData):
        raise TypeError(f"val must be a LabData or None, got {type(val).__name__}")
    if isinstance(model, LabModel):
        check_images(data.x, name="data.x", shape=model.input_shape, value_range=model.value_range)
    if len(data) == 0:
        raise ValueError("data is empty")

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    monitor_attack = monitor_attack if monitor_attack is not None else attack
    source = val if val is not None else data
    n_mon = min(monitor_size, len(source))
    x_mon = source.x[:n_mon].to(device)
    y_mon = source.y[:n_mon].to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    fast = _speed.current()  # opt-in speed features (labkit.speed; all off unless a caller turns them on)
    mixed = loss == "trades" or clean_weight > 0  # the step sees clean logits too

    def step(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> StepOutput:
        """Attack the batch with the model in eval mode, then the training loss on the result."""
        model.eval()
        x_adv = attack(model, xb, yb).detach()
        model.train()
        with _speed.autocast(device, fast):  # a no-op unless the profile turns it on
            if loss == "trades":
                if net is not model:  # one forward pass per backward pass under DDP
                    both = net(torch.cat([xb, x_adv]))
                    logits, logits_adv = both[: len(xb)], both[len(xb) :]
                else:
                    logits = net(xb)
                    logits_adv = net(x_adv)
                kl = F.kl_div(logits_adv.log_softmax(dim=1), logits.softmax(dim=1), reduction="batchmean")
                objective = F.cross_entropy(logits, yb) + beta * kl
            elif clean_weight > 0:
                both = net(torch.cat([x_adv, xb]))
                logits_adv, logits = both[: len(xb)], both[len(xb) :]
                objective = (1 - clean_weight) * F.cross_entropy(
                    logits_adv, yb
                ) + clean_weight * F.cross_entropy(logits, yb)
            else:
                logits = logits_adv = net(x_adv)
                objective = F.cross_entropy(logits_adv, yb)
        hits = (logits_adv.detach().argmax(1) == yb).sum()
        return objective, logits if mixed else None, {"train_adv_acc": hits}

    history = AdversarialHistory()
    watch = _OverfitWatch(
        history,
        drop=overfit_drop,
        gap=overfit_gap,
        early_stop=early_stop,
        monitor=lambda m, a: _monitor(m, x_mon, y_mon, a) if n_mon else (math.nan, math.nan),
        attack=attack,
        monitor_attack=monitor_attack,
        optimiser=optimiser,
    )
    started = time.perf_counter()
    history.rows = fit(
        model,
        data.x,
        data.y,
        epochs=epochs,
        step=step,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimiser,
        callbacks=[watch],
        generator=generator,
        isolate_rng=True,
        distributed=True,
        progress=progress,
        desc="adversarial training",
    ).rows
    if history.overfit_epoch is not None and early_stop and watch.best_state is not None:
        model.load_state_dict(watch.best_state)
        history.restored_epoch = watch.best_epoch
    history.train_seconds = time.perf_counter() - started
    return history


class _OverfitWatch:
    """The per-epoch callback of :func:`adversarial_training`: monitor-batch accuracy, the two
    catastrophic-overfitting alarms, and the best epoch's weights for early stopping."""

    def __init__(
        self,
        history: AdversarialHistory,
        *,
        drop: float | None,
        gap: float | None,
        early_stop: bool,
        monitor: Callable[[nn.Module, Attack], tuple[float, float]],
        attack: Attack,
        monitor_attack: Attack,
        optimiser: torch.optim.Optimizer,
    ) -> None:
        self.history, self.drop, self.gap, self.early_stop = history, drop, gap, early_stop
        self.monitor, self.attack, self.monitor_attack, self.optimiser = (
            monitor,
            attack,
            monitor_attack,
            optimiser,
        )
        self.best_robust = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None

    def __call__(self, epoch: int, model: nn.Module, row: dict[str, float]) -> bool:
        clean, robust = self.monitor(model, self.monitor_attack)
        if not math.isnan(robust):
            row["clean_acc"], row["robust_acc"] = clean, robust
            if self.gap is not None:
                row["attack_acc"] = self.monitor(model, self.attack)[1]
        row["lr"] = float(self.optimiser.param_groups[0]["lr"])
        if math.isnan(robust):
            return False
        stop = False
        reason = None
        if self.drop is not None and robust < self.best_robust - self.drop:
            reason = (
                f"robust accuracy on the monitor batch fell from {self.best_robust:.1%} "
                f"(epoch {self.best_epoch}) to {robust:.1%}"
            )
        elif self.gap is not None and epoch > 1 and row["attack_acc"] - robust > self.gap:
            reason = (
                f"on the monitor batch the training attack leaves {row['attack_acc']:.1%} "
                f"correct but monitor_attack only {robust:.1%}: the model beats its "
                "training attack, not the threat model"
            )
        if reason is not None and self.history.overfit_epoch is None:
            # both alarms wait for a first epoch, so best_epoch is always set here
            self.history.overfit_epoch, self.history.overfit_reason = epoch, reason
            restore = (
                f"Stopping and restoring the weights of epoch {self.best_epoch}. " if self.early_stop else ""
            )
            warnings.warn(
                f"catastrophic overfitting at epoch {epoch}: {reason}. {restore if self.early_stop else ''}"
                "Use a smaller FGSM step (1.25*eps), more PGD steps, or a shorter schedule.",
                CatastrophicOverfittingWarning,
                stacklevel=4,
            )
            stop = self.early_stop
        if not stop and robust > self.best_robust:
            self.best_robust, self.best_epoch = robust, epoch
            if (self.drop is not None or self.gap is not None) and self.early_stop:
                self.best_state = copy.deepcopy(model.state_dict())
        return stop


def _monitor(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack) -> tuple[float, float]:
    """Clean and robust accuracy on the monitor batch (one host sync)."""
    with eval_mode(model):
        x_adv = attack(model, x, y)
        with torch.no_grad():
            clean_ok = model(x).argmax(1) == y
            adv_ok = model(x_adv).argmax(1) == y
    stats = torch.stack([clean_ok.float().mean(), (clean_ok & adv_ok).float().mean()]).tolist()
    return stats[0], stats[1]
