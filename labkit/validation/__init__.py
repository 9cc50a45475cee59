"""Validation: measure a model against release gates and write a model card.

* :func:`validate` runs the suite (accuracy, calibration, robustness, fairness,
  explainability, privacy, reliability) against course.yml-style gates such as
  ``{"accuracy": {"min": 0.9}, "ece": {"max": 0.05}}`` and returns a :class:`ModelCard`
  (Markdown and HTML, pass/fail per gate, the numbers and the details).
* :class:`ContinuousValidator` reruns the suite on each new batch and plots the history.
* The pieces as functions: :mod:`~labkit.validation.metrics` (ROC-AUC, recall at a fixed
  FPR, ECE, fairness gaps), :mod:`~labkit.validation.explain` (saliency, integrated gradients,
  the randomisation sanity check) and :func:`loss_threshold_attack` (membership inference).
"""

from labkit.validation.continuous import ContinuousValidator, ValidationStep
from labkit.validation.explain import (
    SanityResult,
    integrated_gradients,
    randomization_check,
    randomize_parameters,
    saliency,
)
from labkit.validation.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    expected_calibration_error,
    group_rates,
    recall_at_fpr,
    roc_auc,
    threshold_at_fpr,
)
from labkit.validation.privacy import MembershipResult, loss_threshold_attack
from labkit.validation.suite import METRICS, Gate, GateResult, ModelCard, check_gates, validate

__all__ = [
    "METRICS",
    "ContinuousValidator",
    "Gate",
    "GateResult",
    "MembershipResult",
    "ModelCard",
    "SanityResult",
    "ValidationStep",
    "check_gates",
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "expected_calibration_error",
    "group_rates",
    "integrated_gradients",
    "loss_threshold_attack",
    "randomization_check",
    "randomize_parameters",
    "recall_at_fpr",
    "roc_auc",
    "saliency",
    "threshold_at_fpr",
    "validate",
]
