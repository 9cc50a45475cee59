"""Serving a model: the prediction-API threat model and the monitoring of its queries.

* :class:`PredictionAPI` wraps a :class:`~labkit.LabModel` behind an API that counts queries,
  enforces a query budget and a rate limit, logs what it answered, and can coarsen its output
  (top-k, rounding, label only) as a defense.
* :func:`prada` looks for model-extraction query patterns in the log (Juuti et al. 2019,
  arXiv:1805.02628); :func:`prada_alarms` measures its false-alarm rate on
  :func:`benign_traffic` and its detection delay on an attacker's queries.
* :class:`ModelServer` (a background thread) and :class:`ServerProcess` (``labkit serve`` in a
  subprocess) put a model behind a real HTTP server on loopback, with input validation, size
  limits, micro-batching, timeouts, a bounded queue, ``/health`` and ``/metrics``;
  :class:`ServedModel` is its client.

Examples
--------
>>> import torch
>>> from torch import nn
>>> import labkit as lk
>>> from labkit.serving import PredictionAPI
>>> model = lk.LabModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(1, 2, 2), num_classes=3)
>>> api = PredictionAPI(model.eval(), output="top_k", k=2, rounding=2)
>>> answer = api(torch.rand(5, 1, 2, 2))
>>> tuple(answer.scores.shape), tuple(answer.classes.shape), len(api.log)
((5, 2), (5, 2), 5)
"""

from labkit.serving.api import (
    Output,
    PredictionAPI,
    QueryBudgetExceeded,
    QueryLog,
    QueryRecord,
    RateLimitExceeded,
    TopK,
)
from labkit.serving.monitor import (
    BENIGN_PATTERNS,
    PradaAlarms,
    PradaResult,
    benign_traffic,
    prada,
    prada_alarms,
)
from labkit.serving.server import (
    ModelServer,
    RequestError,
    RequestRejected,
    ServeConfig,
    ServedModel,
    ServerBusy,
    ServerProcess,
    check_loopback,
    create_app,
    validate_inputs,
)

__all__ = [
    "BENIGN_PATTERNS",
    "ModelServer",
    "Output",
    "PradaAlarms",
    "PradaResult",
    "PredictionAPI",
    "QueryBudgetExceeded",
    "QueryLog",
    "QueryRecord",
    "RateLimitExceeded",
    "RequestError",
    "RequestRejected",
    "ServeConfig",
    "ServedModel",
    "ServerBusy",
    "ServerProcess",
    "TopK",
    "benign_traffic",
    "check_loopback",
    "create_app",
    "prada",
    "prada_alarms",
    "validate_inputs",
]
