"""Evaluation: robustness reports, the gradient-masking checklist, and certified robustness.

* :func:`robustness`: several attacks at several budgets, worst case per example, clean and
  robust accuracy with Clopper-Pearson intervals, as a :class:`RobustnessReport` (a table and
  ``.plot()``).
* :func:`checklist`: the evaluation checklist of Carlini et al. (arXiv:1902.06705) and Athalye
  et al. (arXiv:1802.00420), automated as a red/amber/green :class:`Checklist`.
* :func:`certify`: randomized smoothing's CERTIFY (Cohen et al., arXiv:1902.02918) with a
  :class:`Certificate` (certified accuracy against radius), and :func:`train_with_noise` for the
  base classifier.
"""

from labkit.eval.certify import Certificate, certify, train_with_noise
from labkit.eval.checklist import Check, Checklist, checklist, margin_pgd
from labkit.eval.robustness import RobustnessReport, robustness
from labkit.eval.stats import clopper_pearson, clopper_pearson_lower

__all__ = [
    "Certificate",
    "Check",
    "Checklist",
    "RobustnessReport",
    "certify",
    "checklist",
    "clopper_pearson",
    "clopper_pearson_lower",
    "margin_pgd",
    "robustness",
    "train_with_noise",
]
