"""Adversarial-training recipes: the loop of :mod:`labkit.hardening.training` with its attack bound.

* :func:`pgd_at`: PGD adversarial training (Madry et al., arXiv:1706.06083).
* :func:`fast_at`: FGSM from a random start (Wong, Rice and Kolter, arXiv:2001.03994), watched
  for catastrophic overfitting with a PGD monitor.
* :func:`trades`: TRADES (Zhang et al., arXiv:1901.08573).

Each one tags a :class:`~labkit.LabModel` with the defense it received.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from labkit._checks import check_int, check_number
from labkit.attacks.threat import (
    Norm,
    bounds_of,
    check_eps,
)
from labkit.attacks.whitebox import Attack
from labkit.contract import LabModel
from labkit.data.base import LabData
from labkit.hardening.history import AdversarialHistory
from labkit.hardening.loop import adversarial_training
from labkit.hardening.training_attacks import fgsm_rs_attack, pgd_train_attack, trades_attack

# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def _monitor_pgd(eps: float, generator: torch.Generator) -> Attack:
    return partial(pgd_train_attack, eps=eps, steps=10, generator=generator)


def _gen(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def pgd_at(
    model: nn.Module,
    data: LabData,
    *,
    eps: float,
    epochs: int = 10,
    steps: int = 5,
    step_size: float | None = None,
    norm: Norm = "linf",
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    val: LabData | None = None,
    monitor_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AdversarialHistory:
    """PGD adversarial training (Madry et al.): train only on PGD examples at radius ``eps``.

    Reference: Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models
    Resistant to Adversarial Attacks", ICLR 2018, arXiv:1706.06083.

    Parameters
    ----------
    model, data:
        As in :func:`adversarial_training`; build a fresh model with
        ``labkit.models.build("digits-cnn", data)`` or fine-tune a trained one.
    eps, norm:
        The threat model trained against, in pixel units.
    steps, step_size:
        PGD iterations per batch and their size (default :math:`2.5\\epsilon/\\text{steps}`).
    epochs, lr, batch_size, weight_decay, val, monitor_size, generator, progress:
        As in :func:`adversarial_training`; the monitor attack is PGD-10.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> model = lk.models.build("digits-cnn", data)
    >>> history = pgd_at(model, data, eps=0.1, epochs=1, steps=2, progress=False)
    >>> sorted(history.final)[:3], model.training
    (['clean_acc', 'epoch', 'loss'], False)
    """
    eps = check_eps(eps, norm=norm, bounds=bounds_of(model))
    steps = check_int(steps, "steps", minimum=1)
    gen = _gen(generator)
    attack = partial(pgd_train_attack, eps=eps, steps=steps, step_size=step_size, norm=norm, generator=gen)
    monitor = partial(pgd_train_attack, eps=eps, steps=10, norm=norm, generator=gen)
    history = adversarial_training(
        model,
        data,
        attack=attack,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        val=val,
        monitor_attack=monitor,
        monitor_size=monitor_size,
        overfit_drop=None,
        generator=gen,
        progress=progress,
    )
    history.notes.update({"method": "PGD-AT", "eps": eps, "steps": steps, "norm": norm})
    _tag(model, {"defense": "PGD adversarial training", "eps": eps, "norm": norm})
    return history


def fast_at(
    model: nn.Module,
    data: LabData,
    *,
    eps: float,
    epochs: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    val: LabData | None = None,
    monitor_size: int = 32,
    overfit_drop: float | None = 0.2,
    overfit_gap: float | None = None,
    early_stop: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AdversarialHistory:
    """FGSM adversarial training from a random start ("fast is better than free").

    One gradient step per batch (:func:`fgsm_rs_attack`, step :math:`1.25\\epsilon` by default)
    instead of PGD's several, so each epoch costs about as much as two of standard training.
    With too large a step (or no random start) the model can learn to defeat FGSM alone:
    *catastrophic overfitting*, PGD accuracy collapsing within an epoch. The loop watches PGD-10
    accuracy on the monitor batch and, when it drops more than ``overfit_drop`` below its best
    (or, with ``overfit_gap``, trails accuracy against the training attack by more than that),
    warns, stops and restores the best epoch (``early_stop``); see :func:`adversarial_training`.

    Reference: Wong, Rice and Kolter, ICLR 2020, arXiv:2001.03994.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> model = lk.models.build("digits-cnn", data)
    >>> fast_at(model, data, eps=0.1, epochs=1, progress=False).catastrophic_overfitting
    False
    """
    eps = check_eps(eps, norm="linf", bounds=bounds_of(model))
    gen = _gen(generator)
    alpha = 1.25 * eps if step_size is None else check_number(step_size, "step_size")
    attack = partial(fgsm_rs_attack, eps=eps, step_size=alpha, random_start=random_start, generator=gen)
    history = adversarial_training(
        model,
        data,
        attack=attack,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        val=val,
        monitor_attack=_monitor_pgd(eps, gen),
        monitor_size=monitor_size,
        overfit_drop=overfit_drop,
        overfit_gap=overfit_gap,
        early_stop=early_stop,
        generator=gen,
        progress=progress,
    )
    history.notes.update({"method": "FGSM-RS", "eps": eps, "step_size": alpha, "random_start": random_start})
    _tag(model, {"defense": "FGSM-RS adversarial training", "eps": eps, "norm": "linf"})
    return history


def trades(
    model: nn.Module,
    data: LabData,
    *,
    eps: float,
    beta: float = 6.0,
    epochs: int = 10,
    steps: int = 5,
    step_size: float | None = None,
    lr: float = 2e-3,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    val: LabData | None = None,
    monitor_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AdversarialHistory:
    """TRADES: clean cross-entropy plus ``beta`` times the KL between clean and adversarial outputs.

    .. math::

        \\min_\\theta \\; \\mathbb{E}\\Big[ L(f(x), y) + \\beta \\max_{\\lVert x' - x \\rVert_\\infty
        \\le \\epsilon} \\mathrm{KL}\\big(f(x) \\,\\|\\, f(x')\\big) \\Big]

    ``beta`` trades clean accuracy (small) for robustness (large); the paper uses 6.

    Reference: Zhang et al., ICML 2019, arXiv:1901.08573.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> model = lk.models.build("digits-cnn", data)
    >>> len(trades(model, data, eps=0.1, epochs=1, steps=2, progress=False))
    1
    """
    eps = check_eps(eps, norm="linf", bounds=bounds_of(model))
    steps = check_int(steps, "steps", minimum=1)
    gen = _gen(generator)
    attack = partial(trades_attack, eps=eps, steps=steps, step_size=step_size, generator=gen)
    history = adversarial_training(
        model,
        data,
        attack=attack,
        epochs=epochs,
        loss="trades",
        beta=beta,
        lr=lr,
        batch_size=batch_size,
        weight_decay=weight_decay,
        val=val,
        monitor_attack=_monitor_pgd(eps, gen),
        monitor_size=monitor_size,
        overfit_drop=None,
        generator=gen,
        progress=progress,
    )
    history.notes.update({"method": "TRADES", "eps": eps, "beta": beta, "steps": steps})
    _tag(model, {"defense": f"TRADES (beta={beta:g})", "eps": eps, "norm": "linf"})
    return history


def _tag(model: nn.Module, meta: dict[str, Any]) -> None:
    if isinstance(model, LabModel):
        model.meta = {**model.meta, **meta}
