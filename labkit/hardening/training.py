"""Adversarial training: one loop that trains on whatever an attack returns.

Madry et al. cast robustness as a saddle-point problem,

.. math::

    \\min_\\theta \\; \\mathbb{E}_{(x, y)} \\Big[ \\max_{\\lVert \\delta \\rVert_\\infty \\le \\epsilon}
    L\\big(f_\\theta(x + \\delta), y\\big) \\Big],

and solve the inner maximisation approximately with an attack on every training batch.
:func:`adversarial_training` is that loop for *any* attack callable ``(model, x, y) -> x_adv``;
the recipes bind the attack and the loss:

* :func:`pgd_at`: PGD adversarial training (Madry et al., arXiv:1706.06083).
* :func:`fast_at`: FGSM from a random start, "fast is better than free" (Wong, Rice and
  Kolter, arXiv:2001.03994), with detection of *catastrophic overfitting*: PGD robust accuracy
  on a held-out batch collapsing while FGSM accuracy stays high.
* :func:`trades`: TRADES (Zhang et al., arXiv:1901.08573), a clean loss plus
  :math:`\\beta` times the KL divergence between clean and adversarial predictions.

The training attacks (:func:`pgd_train_attack`, :func:`fgsm_rs_attack`,
:func:`trades_attack`) skip the per-call validation of :mod:`labkit.attacks` (the loop has
checked the data once) and return the last iterate, but go through the same threat model.

This module is the face of that topic: the loop lives in :mod:`labkit.hardening.loop`, the
recipes in :mod:`labkit.hardening.recipes`, the training attacks in
:mod:`labkit.hardening.training_attacks` and the record of a run in :mod:`labkit.hardening.history`.
"""

from labkit.hardening.history import AdversarialHistory, CatastrophicOverfittingWarning
from labkit.hardening.loop import Loss, adversarial_training
from labkit.hardening.recipes import fast_at, pgd_at, trades
from labkit.hardening.training_attacks import fgsm_rs_attack, pgd_train_attack, trades_attack

__all__ = [
    "AdversarialHistory",
    "CatastrophicOverfittingWarning",
    "Loss",
    "adversarial_training",
    "fast_at",
    "fgsm_rs_attack",
    "pgd_at",
    "pgd_train_attack",
    "trades",
    "trades_attack",
]
