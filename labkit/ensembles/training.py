"""Ensemble adversarial training (Tramer et al., 2018): adversarial examples from *other* models.

Single-step adversarial training learns to mask its own gradients: the FGSM examples it sees
get weak, while examples transferred from other models still fool it. Tramer et al. augment
training with adversarial examples crafted on a set of *static*, pre-trained models (they are
never updated), decoupling the attack from the model being trained. For every batch the
source is drawn among the model itself and the static models, and the loss is half clean,
half adversarial:

.. math::

    \\min_\\theta \\; \\tfrac12 L\\big(f_\\theta(x), y\\big)
    + \\tfrac12 L\\big(f_\\theta(A(g, x, y)), y\\big),
    \\qquad g \\sim U\\{f_\\theta, g_1, \\dots, g_k\\}.

Reference: Tramèr, Kurakin, Papernot, Goodfellow, Boneh and McDaniel, "Ensemble Adversarial
Training: Attacks and Defenses", ICLR 2018, arXiv:1705.07204.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from labkit._checks import check_int
from labkit.attacks.threat import bounds_of, check_eps
from labkit.attacks.whitebox import Attack
from labkit.data.base import LabData
from labkit.hardening.training import (
    AdversarialHistory,
    adversarial_training,
    fgsm_rs_attack,
    pgd_train_attack,
)
from labkit.utils import eval_mode

__all__ = ["StaticSources", "ensemble_adversarial_training"]


class StaticSources:
    """An attack that crafts each batch on a model drawn from the current one and static ones.

    ``StaticSources(attack, static)(model, x, y)`` draws a source uniformly from
    ``[model, *static]`` (``include_self=False`` leaves the current model out) and returns
    ``attack(source, x, y)``. The static models stay in eval mode and are never updated.
    ``counts`` records how many batches each source crafted.
    """

    def __init__(
        self,
        attack: Attack,
        static: Sequence[nn.Module] | Mapping[str, nn.Module],
        *,
        include_self: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        if not callable(attack):
            raise TypeError(f"attack must be a callable (model, x, y) -> x_adv, got {type(attack).__name__}")
        if isinstance(static, Mapping):
            named = {str(k): v for k, v in static.items()}
        elif isinstance(static, Sequence) and not isinstance(static, str | bytes):
            named = {f"static{i}": m for i, m in enumerate(static)}
        else:
            raise TypeError(f"static must be a list or dict of models, got {type(static).__name__}")
        if not named:
            raise ValueError("static is empty: ensemble adversarial training needs at least one static model")
        for name, m in named.items():
            if not isinstance(m, nn.Module):
                raise TypeError(f"static model {name!r} must be a torch.nn.Module, got {type(m).__name__}")
        self.attack = attack
        self.static = named
        self.include_self = include_self
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.counts: dict[str, int] = (
            {"self": 0, **{k: 0 for k in named}} if include_self else dict.fromkeys(named, 0)
        )

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        names = (["self"] if self.include_self else []) + list(self.static)
        pick = names[int(torch.randint(len(names), (1,), generator=self.generator))]
        self.counts[pick] += 1
        source = model if pick == "self" else self.static[pick]
        with eval_mode(source):
            return self.attack(source, x, y)


def ensemble_adversarial_training(
    model: nn.Module,
    data: LabData,
    *,
    static: Sequence[nn.Module] | Mapping[str, nn.Module],
    eps: float,
    epochs: int = 10,
    attack: Attack | None = None,
    include_self: bool = True,
    clean_weight: float = 0.5,
    lr: float = 2e-3,
    batch_size: int = 128,
    val: LabData | None = None,
    monitor_size: int = 32,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> AdversarialHistory:
    """Train ``model`` on adversarial examples crafted on itself and on static pre-trained models.

    Parameters
    ----------
    model:
        The model to train (in place), e.g. a fresh ``labkit.models.build(...)``.
    data:
        Training data.
    static:
        The pre-trained static models the examples are crafted on; they are only attacked
        (in eval mode), never updated.
    eps:
        L-inf radius of the crafted examples.
    epochs:
        Training epochs.
    attack:
        How examples are crafted on a source; default FGSM from a random start with step
        :math:`1.25\\epsilon` (Tramèr et al. used single-step attacks).
    include_self:
        Draw the current model as a source too (as in the paper); ``False`` uses only the
        static models.
    clean_weight:
        Weight of the clean loss (the paper: one half).
    lr, batch_size, val, monitor_size, generator, progress:
        As in :func:`labkit.hardening.adversarial_training`; the monitor attack is PGD-10 on
        the model itself.

    Returns
    -------
    AdversarialHistory
        With ``notes["source_counts"]``: how many batches each source crafted.

    Examples
    --------
    >>> import labkit as lk
    >>> data = lk.data.load("digits", split="train", n=64)
    >>> static = [lk.models.build("digits-cnn", data).eval()]
    >>> model = lk.models.build("digits-cnn", data)
    >>> h = ensemble_adversarial_training(model, data, static=static, eps=0.1, epochs=1, progress=False)
    >>> sum(h.notes["source_counts"].values())
    1
    """
    eps = check_eps(eps, norm="linf", bounds=bounds_of(model))
    epochs = check_int(epochs, "epochs", minimum=1)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    craft = attack if attack is not None else partial(fgsm_rs_attack, eps=eps, generator=gen)
    sources = StaticSources(craft, static, include_self=include_self, generator=gen)
    history = adversarial_training(
        model,
        data,
        attack=sources,
        epochs=epochs,
        clean_weight=clean_weight,
        lr=lr,
        batch_size=batch_size,
        val=val,
        monitor_attack=partial(pgd_train_attack, eps=eps, steps=10, generator=gen),
        monitor_size=monitor_size,
        overfit_drop=None,
        generator=gen,
        progress=progress,
    )
    history.notes.update(
        {"method": "ensemble adversarial training", "eps": eps, "source_counts": dict(sources.counts)}
    )
    return history
