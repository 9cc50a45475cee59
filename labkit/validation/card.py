"""What the validation suite reports against: the metric catalogue, release gates, the model card.

:data:`METRICS` names every metric :func:`~labkit.validation.suite.validate` knows and whether
higher or lower is better; :func:`check_gates` parses course.yml-style gates into :class:`Gate`
objects; :class:`GateResult` is one gate's verdict and :class:`ModelCard` the whole result, as
Markdown or HTML (a gate that could not be measured fails closed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from labkit.tables import fmt, html_table, markdown_table

__all__ = ["METRICS", "Gate", "GateResult", "ModelCard", "check_gates"]

METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("higher", "share of correct predictions"),
    "roc_auc": ("higher", "ROC-AUC of the positive-class probability (binary tasks)"),
    "recall_at_fpr": (
        "higher",
        "recall at the threshold that keeps the false-positive rate at `fpr` (binary)",
    ),
    "ece": ("lower", "expected calibration error, 15 equal-width bins (Guo et al., arXiv:1706.04599)"),
    "robust_accuracy": ("higher", "accuracy on inputs perturbed by the given attack"),
    "demographic_parity_difference": ("lower", "largest gap in positive-prediction rate between groups"),
    "equal_opportunity_difference": (
        "lower",
        "largest gap in true-positive rate between groups (Hardt et al.)",
    ),
    "explanation_similarity": (
        "lower",
        "rank correlation of saliency maps of the model and a randomised copy "
        "(Adebayo et al., arXiv:1810.03292)",
    ),
    "mia_auc": ("lower", "ROC-AUC of a loss-threshold membership-inference attack (0.5 = no leak)"),
    "mia_tpr_at_fpr": ("lower", "members identified by the attack at false-positive rate `fpr`"),
    "corruption_accuracy": ("higher", "mean accuracy over common corruptions at the reliability severity"),
    "stress_auc": ("higher", "mean ROC-AUC under tabular stresses at the reliability severity"),
}
"""Every metric the suite knows: whether higher or lower is better, and what it measures."""


@dataclass(frozen=True)
class Gate:
    """A requirement on one metric: ``min <= value <= max`` (either bound may be absent)."""

    metric: str
    min: float | None = None
    max: float | None = None

    def requirement(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"≥ {self.min:g}")
        if self.max is not None:
            parts.append(f"≤ {self.max:g}")
        return " and ".join(parts)


def check_gates(gates: Mapping[str, Mapping[str, float]]) -> dict[str, Gate]:
    """Parse course.yml-style gates such as ``{"accuracy": {"min": 0.9}, "ece": {"max": 0.05}}``.

    Raises ``ValueError`` for unknown metrics or keys, NaN or non-numeric bounds, a gate with
    neither bound, or ``min > max``.

    Examples
    --------
    >>> check_gates({"accuracy": {"min": 0.9}})["accuracy"].requirement()
    '≥ 0.9'
    """
    if not isinstance(gates, Mapping):
        raise TypeError(
            f"gates must be a mapping like {{'accuracy': {{'min': 0.9}}}}, got {type(gates).__name__}"
        )
    out: dict[str, Gate] = {}
    for metric, bounds in gates.items():
        if metric not in METRICS:
            raise ValueError(f"unknown gate metric {metric!r}; choose from {', '.join(METRICS)}")
        if not isinstance(bounds, Mapping):
            raise ValueError(f"gate {metric!r} must be a mapping with 'min' and/or 'max', got {bounds!r}")
        extra = set(bounds) - {"min", "max"}
        if extra:
            raise ValueError(f"gate {metric!r} has unknown key(s) {sorted(extra)}; use 'min' and/or 'max'")
        if not bounds:
            raise ValueError(f"gate {metric!r} needs a 'min' or a 'max'")
        values: dict[str, float | None] = {"min": None, "max": None}
        for key, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"gate {metric!r} {key} must be a number, got {value!r}")
            values[key] = float(value)
        low, high = values["min"], values["max"]
        if low is not None and high is not None and low > high:
            raise ValueError(f"gate {metric!r} has min {low} > max {high}")
        out[metric] = Gate(metric, low, high)
    return out


@dataclass(frozen=True)
class GateResult:
    """A gate and how the model fared: ``status`` is ``pass``, ``fail`` or ``missing``."""

    gate: Gate
    value: float | None
    status: Literal["pass", "fail", "missing"]
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class ModelCard:
    """The result of :func:`validate`: metrics, gate verdicts and details, as Markdown or HTML.

    A gate that could not be measured (``missing``) counts as failed: a release gate fails
    closed.
    """

    model_name: str
    data_name: str
    n: int
    metrics: dict[str, float]
    gates: list[GateResult]
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def gate(self, metric: str) -> GateResult:
        for g in self.gates:
            if g.gate.metric == metric:
                return g
        raise KeyError(f"no gate on {metric!r}; gates: {', '.join(g.gate.metric for g in self.gates)}")

    def verdict(self) -> str:
        good = sum(g.passed for g in self.gates)
        word = "PASS" if self.passed else "FAIL"
        return f"{word} ({good} of {len(self.gates)} gates passed)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "data": self.data_name,
            "n": self.n,
            "passed": self.passed,
            "metrics": dict(self.metrics),
            "gates": [
                {
                    "metric": g.gate.metric,
                    "min": g.gate.min,
                    "max": g.gate.max,
                    "value": g.value,
                    "status": g.status,
                    "note": g.note,
                }
                for g in self.gates
            ],
            "notes": list(self.notes),
        }

    # ----------------------------------------------------------------- rendering
    def _gate_rows(self) -> list[list[object]]:
        mark = {"pass": "✅ pass", "fail": "❌ FAIL", "missing": "⚠️ missing (fails)"}
        return [[g.gate.metric, g.value, g.gate.requirement(), mark[g.status], g.note] for g in self.gates]

    def _metric_rows(self) -> list[list[object]]:
        gated = {g.gate.metric for g in self.gates}
        return [
            [
                name,
                value,
                "higher" if METRICS[name][0] == "higher" else "lower",
                METRICS[name][1],
                "yes" if name in gated else "",
            ]
            for name, value in self.metrics.items()
        ]

    def _detail_sections(self) -> list[tuple[str, list[str], list[list[object]], str]]:
        """(title, headers, rows, text) for each detail block."""
        out: list[tuple[str, list[str], list[list[object]], str]] = []
        d = self.details
        if "fairness" in d:
            f = d["fairness"]
            rows = [
                [g, int(r["n"]), r["selection_rate"], r.get("tpr", float("nan"))]
                for g, r in f["groups"].items()
            ]
            text = (
                f"Sensitive attribute: {f['attribute']}; positive class {f['positive']}; "
                "predictions are the argmax."
            )
            out.append(("Fairness by group", ["group", "n", "positive rate", "TPR"], rows, text))
        if "explanation" in d:
            e = d["explanation"]
            verdict = (
                "explanations depend on the weights"
                if e["passed"]
                else "explanations barely change: they do not explain the model"
            )
            text = (
                f"Model-parameter randomisation test (Adebayo et al., arXiv:1810.03292) on {e['n']} "
                f"inputs with {e['method']}: mean Spearman rank correlation {e['similarity']:.3f} "
                f"between the maps of the model and of a copy with random weights ({verdict})."
            )
            out.append(("Explanation sanity check", [], [], text))
        if "privacy" in d:
            p = d["privacy"]
            text = (
                f"Loss-threshold membership inference (Yeom et al., arXiv:1709.01604) with {p['n']} "
                f"training and {p['n']} unseen examples: AUC {p['auc']:.3f}, TPR {p['tpr_at_fpr']:.3f} "
                f"at FPR {p['fpr']:g}, advantage {p['advantage']:.3f}."
            )
            out.append(("Privacy", [], [], text))
        if "robustness" in d:
            r = d["robustness"]
            out.append(
                (
                    "Robustness",
                    [],
                    [],
                    f"Attack {r['attack']} on {r['n']} inputs: robust accuracy "
                    f"{r['robust_accuracy']:.3f} (clean {r['clean_accuracy']:.3f}).",
                )
            )
        if "reliability" in d:
            r = d["reliability"]
            rows = [[k, v] for k, v in r["per_condition"].items()]
            out.append(
                (f"Reliability at severity {r['severity']}", ["condition", r["metric"]], rows, r["text"])
            )
        return out

    def to_markdown(self) -> str:
        """The whole card as Markdown."""
        lines = [
            f"# Model card: {self.model_name}",
            "",
            f"**Verdict: {self.verdict()}**",
            "",
            f"Evaluated on {self.data_name}, n={self.n}.",
            "",
            "## Gates",
            "",
            markdown_table(["gate", "value", "requirement", "result", "note"], self._gate_rows())
            if self.gates
            else "*no gates configured*",
            "",
            "## Metrics",
            "",
            markdown_table(["metric", "value", "better", "what it measures", "gated"], self._metric_rows()),
        ]
        for title, headers, rows, text in self._detail_sections():
            lines += ["", f"## {title}", ""]
            if text:
                lines.append(text)
            if rows:
                lines += ["", markdown_table(headers, rows)]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_html(self) -> str:
        """The whole card as an HTML fragment."""
        import html

        colour = "green" if self.passed else "crimson"
        parts = [
            f"<h3>Model card: {html.escape(self.model_name)}</h3>",
            f'<p><b style="color: {colour}">Verdict: {html.escape(self.verdict())}</b><br>'
            f"Evaluated on {html.escape(self.data_name)}, n={self.n}.</p>",
        ]
        styles = [
            ["", "", "", "color: green" if g.passed else "color: crimson; font-weight: bold", ""]
            for g in self.gates
        ]
        parts.append(
            html_table(
                ["gate", "value", "requirement", "result", "note"],
                self._gate_rows(),
                caption="Gates",
                styles=styles,
            )
        )
        parts.append(
            html_table(
                ["metric", "value", "better", "what it measures", "gated"],
                self._metric_rows(),
                caption="Metrics",
            )
        )
        for title, headers, rows, text in self._detail_sections():
            parts.append(f"<h4>{html.escape(title)}</h4>")
            if text:
                parts.append(f"<p>{html.escape(text)}</p>")
            if rows:
                parts.append(html_table(headers, rows))
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in self.notes) + "</ul>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in self.metrics.items())
        return f"ModelCard({self.model_name}: {self.verdict()}; {shown})"
