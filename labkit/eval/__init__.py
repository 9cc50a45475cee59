"""Evaluation: robustness reports, the gradient-masking checklist, and certified robustness.

* :func:`robustness`: several attacks at several budgets, worst case per example, clean and
  robust accuracy with Clopper-Pearson intervals, as a :class:`RobustnessReport` (a table and
  ``.plot()``).
* :func:`worst_case`: the default evaluation, an AutoAttack-strength ensemble (APGD-CE,
  APGD-DLR, Square) that adds BPDA/EOT by itself when :func:`detect_masking` sees masked
  gradients, as an :class:`EnsembleResult`.
* :func:`checklist`: the evaluation checklist of Carlini et al. (arXiv:1902.06705) and Athalye
  et al. (arXiv:1802.00420), automated as a red/amber/green :class:`Checklist`.
* :func:`certify`: randomized smoothing's CERTIFY (Cohen et al., arXiv:1902.02918) with a
  :class:`Certificate` (certified accuracy against radius), and :func:`train_with_noise` for the
  base classifier.

The attack primitives the evaluation aims with (:func:`straight_through`, :func:`expectation`,
:func:`rescaled`, :func:`margin_pgd`) live in :mod:`labkit.attacks.adaptive`; they are
re-exported here under the names lessons already use.
"""

from labkit.eval.certify import Certificate, certify, train_with_noise
from labkit.eval.checklist import Check, Checklist, checklist, margin_pgd
from labkit.eval.ensemble import BUDGETS, EnsembleBudget, EnsembleResult, worst_case
from labkit.eval.masking import MaskingReport, detect_masking, expectation, rescaled, straight_through
from labkit.eval.robustness import RobustnessReport, robustness
from labkit.eval.stats import clopper_pearson, clopper_pearson_lower

__all__ = [
    "BUDGETS",
    "Certificate",
    "Check",
    "Checklist",
    "EnsembleBudget",
    "EnsembleResult",
    "MaskingReport",
    "RobustnessReport",
    "certify",
    "checklist",
    "clopper_pearson",
    "clopper_pearson_lower",
    "detect_masking",
    "expectation",
    "margin_pgd",
    "rescaled",
    "robustness",
    "straight_through",
    "train_with_noise",
    "worst_case",
]
