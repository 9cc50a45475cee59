"""Hardening: adversarial training, defensive distillation and input-transformation defences.

Adversarial training (:mod:`labkit.hardening.training`), one loop for any attack:

* :func:`adversarial_training`: train on ``attack(model, x, y)`` for every batch, with clean and
  robust accuracy per epoch and detection of catastrophic overfitting.
* :func:`pgd_at` (Madry et al., arXiv:1706.06083), :func:`fast_at` (FGSM with a random start,
  Wong et al., arXiv:2001.03994) and :func:`trades` (Zhang et al., arXiv:1901.08573).

Defensive distillation (:func:`distill`, Papernot et al., arXiv:1511.04508) and the wrappers
that show why it only looks robust: :func:`with_temperature`, :func:`softmax_output`.

Input transforms (:mod:`labkit.hardening.transforms`): :class:`BitDepth`,
:class:`MedianFilter`, :class:`JPEG`, :class:`GaussianNoise`; :func:`preprocess` and
:func:`squeeze` put them in front of a model, :class:`SqueezeDetector` is feature squeezing's
detector (Xu et al., arXiv:1704.01155), and :func:`bpda` and :func:`eot` are the adaptive
attacks that see through them (Athalye et al., arXiv:1802.00420).

Every hardened model is a :class:`~labkit.LabModel` (normalisation inside, inputs checked,
logits out), left in eval mode.
"""

from labkit.hardening.distillation import distill
from labkit.hardening.training import (
    AdversarialHistory,
    CatastrophicOverfittingWarning,
    adversarial_training,
    fast_at,
    fgsm_rs_attack,
    pgd_at,
    pgd_train_attack,
    trades,
    trades_attack,
)
from labkit.hardening.transforms import (
    BPDA,
    JPEG,
    BitDepth,
    Compose,
    GaussianNoise,
    InputTransform,
    MedianFilter,
    SqueezeDetector,
    bpda,
    eot,
    preprocess,
    squeeze,
)
from labkit.hardening.wrappers import base_of, softmax_output, with_temperature, wrap

__all__ = [
    "BPDA",
    "JPEG",
    "AdversarialHistory",
    "BitDepth",
    "CatastrophicOverfittingWarning",
    "Compose",
    "GaussianNoise",
    "InputTransform",
    "MedianFilter",
    "SqueezeDetector",
    "adversarial_training",
    "base_of",
    "bpda",
    "distill",
    "eot",
    "fast_at",
    "fgsm_rs_attack",
    "pgd_at",
    "pgd_train_attack",
    "preprocess",
    "softmax_output",
    "squeeze",
    "trades",
    "trades_attack",
    "with_temperature",
    "wrap",
]
