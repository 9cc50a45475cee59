"""Data poisoning: attacks on the training set, their metrics, detection and mitigation.

Attacks (each returns a :class:`Poisoned`: a new data set and the indices it poisoned):

* :func:`flip_labels`: random or targeted (source -> target) label flipping.
* :func:`backdoor`: BadNets-style backdoor with a :func:`patch_trigger` or a blended
  :func:`blend_trigger` (Gu et al., arXiv:1708.06733; Chen et al., arXiv:1712.05526).
* :func:`clean_label_backdoor`: label-consistent backdoor, adversarially perturbed target-class
  images with a trigger and their true labels (Turner et al., arXiv:1912.02771).

Metrics: :func:`attack_success_rate`, :func:`evaluate_backdoor` (clean accuracy and ASR of
several models, a :class:`BackdoorReport` table).

Detection (a :class:`Detection`, scored with :meth:`Detection.evaluate` as TPR/FPR):
:func:`spectral_signatures` (Tran et al., arXiv:1811.00636) and :func:`activation_clustering`
(Chen et al., arXiv:1811.03728), both reading the learned representations that
:func:`features` returns.

Mitigation: :func:`retrain_without` the flagged rows, :func:`fine_prune` (Liu et al.,
arXiv:1805.12185).

Examples
--------
>>> import torch
>>> from labkit.data import LabData
>>> from labkit.poisoning import backdoor, patch_trigger
>>> clean = LabData("toy", "train", torch.rand(40, 1, 8, 8), torch.arange(40) % 4, list("abcd"))
>>> bad = backdoor(clean, trigger=patch_trigger(clean.input_shape, size=2), target=0, rate=0.1)
>>> len(bad.indices), bad.rate, bool(torch.equal(clean.x[bad.indices], bad.data.x[bad.indices]))
(4, 0.1, False)
"""

from labkit.poisoning._common import features
from labkit.poisoning.detection import (
    Detection,
    DetectionScore,
    activation_clustering,
    detection_rates,
    spectral_signatures,
)
from labkit.poisoning.metrics import BackdoorReport, attack_success_rate, evaluate_backdoor
from labkit.poisoning.mitigation import FinePruning, fine_prune, remove_flagged, retrain_without
from labkit.poisoning.poison import Poisoned, backdoor, clean_label_backdoor, flip_labels
from labkit.poisoning.triggers import Trigger, blend_trigger, patch_trigger

__all__ = [
    "BackdoorReport",
    "Detection",
    "DetectionScore",
    "FinePruning",
    "Poisoned",
    "Trigger",
    "activation_clustering",
    "attack_success_rate",
    "backdoor",
    "blend_trigger",
    "clean_label_backdoor",
    "detection_rates",
    "evaluate_backdoor",
    "features",
    "fine_prune",
    "flip_labels",
    "patch_trigger",
    "remove_flagged",
    "retrain_without",
    "spectral_signatures",
]
