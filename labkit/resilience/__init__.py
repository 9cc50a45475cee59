"""Resilience: serve a model safely when inputs, the model or the world misbehave.

* :class:`GuardedModel`: input validation, an out-of-distribution score (energy, Liu et al.,
  arXiv:2010.03759) with a threshold set for a human review budget, abstention to a
  :class:`ReviewQueue`, a fallback model, a :class:`CircuitBreaker` that trips on error and
  drift bursts and recovers, and an :class:`AuditLog` that explains every decision.
* :func:`energy_score`, :func:`msp_score`, :func:`anomaly_score`, :func:`threshold_for_budget`:
  the scoring pieces as functions.
* :class:`ManualClock`: a clock for tests and lessons that moves only when told.
"""

from labkit.resilience.audit import AuditLog, AuditRecord, input_hash
from labkit.resilience.breaker import CircuitBreaker, ManualClock, Transition
from labkit.resilience.guard import GuardedModel, GuardedPrediction
from labkit.resilience.review import ReviewDecision, ReviewItem, ReviewQueue
from labkit.resilience.scores import SCORES, anomaly_score, energy_score, msp_score, threshold_for_budget

__all__ = [
    "SCORES",
    "AuditLog",
    "AuditRecord",
    "CircuitBreaker",
    "GuardedModel",
    "GuardedPrediction",
    "ManualClock",
    "ReviewDecision",
    "ReviewItem",
    "ReviewQueue",
    "Transition",
    "anomaly_score",
    "energy_score",
    "input_hash",
    "msp_score",
    "threshold_for_budget",
]
