"""Stress testing: common corruptions, tabular failures and edge-case fuzzing.

* :func:`corrupt` and :data:`CORRUPTIONS`: fifteen image corruptions at severities 1..5
  (noise, blur, weather, digital, geometric), batched on the tensors' device and seeded.
* :func:`corruption_benchmark`: accuracy per corruption and severity and the mean corruption
  error against a baseline model (Hendrycks and Dietterich, arXiv:1903.12261).
* :func:`stress_tabular` and :func:`tabular_stress_report`: missing values, outliers, unit
  errors and shifted features for a fraud model, scored by ROC-AUC and recall at a fixed FPR.
* :func:`fuzz_inputs` and :func:`fuzz`: NaN, infinities, empty and huge batches, wrong dtypes
  and shapes, out-of-range values and non-tensors against any endpoint.
* :func:`load_test` and :func:`degradation_curve`: throughput, p50/p95/p99 latency and error
  rate of a model served over HTTP on loopback, at increasing concurrency and under tighter
  resource settings (see :class:`labkit.serving.ModelServer`).

Examples
--------
>>> import torch
>>> x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
>>> corrupt(x, "fog", 2, generator=torch.Generator().manual_seed(0)).shape
torch.Size([4, 3, 32, 32])
"""

from labkit.stress.benchmark import CorruptionReport, corruption_benchmark
from labkit.stress.corruptions import CORRUPTIONS, SEVERITIES, Corruption, corrupt, jpeg
from labkit.stress.fuzz import FuzzCase, FuzzReport, FuzzResult, fuzz, fuzz_inputs
from labkit.stress.load import DegradationReport, LoadTestReport, degradation_curve, load_test
from labkit.stress.tabular import (
    TABULAR_STRESSES,
    TRANSACTION_UNITS,
    TabularStressReport,
    stress_tabular,
    tabular_stress_report,
)

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "TABULAR_STRESSES",
    "TRANSACTION_UNITS",
    "Corruption",
    "CorruptionReport",
    "DegradationReport",
    "FuzzCase",
    "FuzzReport",
    "FuzzResult",
    "LoadTestReport",
    "TabularStressReport",
    "corrupt",
    "corruption_benchmark",
    "degradation_curve",
    "fuzz",
    "fuzz_inputs",
    "jpeg",
    "load_test",
    "stress_tabular",
    "tabular_stress_report",
]
