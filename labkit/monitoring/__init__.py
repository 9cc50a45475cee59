"""Monitoring: detect when the data or the model's outputs drift away from training.

* :func:`ks_test`, :func:`psi`, :func:`psi_from_proportions`: per-feature drift statistics
  for tabular data (Kolmogorov-Smirnov via SciPy, population stability index).
* :func:`mmd_test` and :func:`embed`: a kernel two-sample test with a permutation p-value on
  penultimate-layer embeddings, for images (Gretton et al., arXiv:0805.2368; Rabanser et al.,
  arXiv:1810.11953).
* :func:`prediction_test` and :func:`prediction_psi`: drift of the model's outputs.
* :class:`DriftMonitor`: consumes batches, tests sliding windows, raises :class:`DriftAlert`
  with thresholds, and plots the metrics over time with the alerts.
"""

from labkit.monitoring.monitor import DriftAlert, DriftMonitor, DriftStep
from labkit.monitoring.stats import (
    MMDResult,
    embed,
    ks_test,
    median_bandwidth,
    mmd_test,
    prediction_psi,
    prediction_test,
    psi,
    psi_from_proportions,
)

__all__ = [
    "DriftAlert",
    "DriftMonitor",
    "DriftStep",
    "MMDResult",
    "embed",
    "ks_test",
    "median_bandwidth",
    "mmd_test",
    "prediction_psi",
    "prediction_test",
    "psi",
    "psi_from_proportions",
]
