"""AI red teaming: plan a campaign inside a scope, run probes from every lesson, report findings.

* :class:`Scope`: the rules of engagement (techniques allowed, query budget, largest eps,
  weights or not), enforced on every probe and manual attempt (:class:`ScopeError`).
* :class:`Campaign`: runs the probes of :data:`PROBES` against a model behind a
  :class:`~labkit.serving.PredictionAPI` or an assistant from :mod:`labkit.genai`, logs every
  :class:`Attempt` (``campaign.log_manual`` for work done by hand), and keeps the
  :class:`Finding` objects whose evidence clears the probe's floor, each with its ATLAS id, a
  severity, evidence, reproduction steps and recommended mitigations.
* :func:`default_severity`: the stated severity rule; ``campaign.triage(rule)`` applies another.
* :class:`Report`: the write-up, in Markdown and HTML (content escaped).

The probes reuse the course's attacks: PGD (lesson 01), Square Attack, HopSkipJump, MI-FGSM
transfer and adversarial patches (02), corruptions (03), extraction (05), membership inference
(06) and prompt injection (07).

Examples
--------
>>> import torch
>>> from torch import nn
>>> import labkit as lk
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
>>> model = lk.LabModel(net, input_shape=(1, 2, 2), num_classes=2).eval()
>>> data = lk.data.LabData(name="toy", split="test", x=torch.rand(8, 1, 2, 2),
...                        y=torch.zeros(8, dtype=torch.long), classes=["a", "b"])
>>> api = lk.serving.PredictionAPI(model, output="label", rate_limit=10, burst=10)
>>> campaign = Campaign(api, Scope(techniques=["api_recon"], query_budget=300), data=data).run()
>>> campaign.findings, campaign.attempts[0].outcome
([], 'no finding')
"""

from labkit.redteam.campaign import Campaign
from labkit.redteam.findings import (
    RECOMMENDATIONS,
    SEVERITIES,
    Attempt,
    Finding,
    SeverityRule,
    default_severity,
)
from labkit.redteam.report import Report
from labkit.redteam.scope import PROBES, ProbeInfo, Scope, ScopeError

__all__ = [
    "PROBES",
    "RECOMMENDATIONS",
    "SEVERITIES",
    "Attempt",
    "Campaign",
    "Finding",
    "ProbeInfo",
    "Report",
    "Scope",
    "ScopeError",
    "SeverityRule",
    "default_severity",
]
