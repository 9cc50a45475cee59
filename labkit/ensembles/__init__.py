"""Ensembles: combine models, measure how different they are, train against transferred attacks.

* :class:`Ensemble`: members combined by ``"mean_logits"``, ``"soft_vote"`` or ``"hard_vote"``;
  itself a :class:`~labkit.LabModel`, so every attack runs on it (a hard vote has zero
  gradients by construction: attack its ``with_reduce("mean_logits")`` twin).
* Diversity: :func:`disagreement` between members, :func:`member_transfer` (the transfer matrix
  between members) and :func:`train_family` with the ready-made :data:`FAMILIES` (seeds, widths,
  CNN and MLP, standard and adversarial training).
* :func:`ensemble_adversarial_training`: train on adversarial examples crafted on other, static
  models (Tramèr et al., arXiv:1705.07204).

Examples
--------
>>> import torch
>>> from torch import nn
>>> import labkit as lk
>>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
>>> members = [lk.LabModel(n, input_shape=(1, 2, 2), num_classes=2).eval() for n in nets]
>>> Ensemble(members, reduce="mean_logits")(torch.rand(3, 1, 2, 2)).shape
torch.Size([3, 2])
"""

from labkit.ensembles.diversity import (
    FAMILIES,
    Disagreement,
    MemberSpec,
    disagreement,
    member_transfer,
    train_family,
)
from labkit.ensembles.ensemble import Ensemble, Reduce
from labkit.ensembles.training import StaticSources, ensemble_adversarial_training

__all__ = [
    "FAMILIES",
    "Disagreement",
    "Ensemble",
    "MemberSpec",
    "Reduce",
    "StaticSources",
    "disagreement",
    "ensemble_adversarial_training",
    "member_transfer",
    "train_family",
]
