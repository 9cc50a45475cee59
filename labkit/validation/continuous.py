"""Continuous validation: rerun the suite on every new batch of labelled data and keep the history."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.classifier import Classifier, check_model
from labkit.data.base import LabData
from labkit.tables import html_table, markdown_table
from labkit.validation.suite import METRICS, ModelCard, check_gates, validate

__all__ = ["ContinuousValidator", "ValidationStep"]


@dataclass(frozen=True)
class ValidationStep:
    """One rerun of the suite: its label (e.g. ``"month 3"``) and the resulting card."""

    label: str
    card: ModelCard


class ContinuousValidator:
    """Rerun :func:`~labkit.validation.validate` on each new batch (e.g. each month's labelled
    transactions) and record how the metrics and gate verdicts evolve.

    Parameters
    ----------
    model:
        The deployed classifier.
    gates:
        As for :func:`~labkit.validation.validate`.
    **options:
        Any other keyword of :func:`~labkit.validation.validate` (``train_data``, ``attack``,
        ``fpr``, ``extra_metrics``, ``generator`` ...), used at every step. ``progress`` is off
        unless given.

    Examples
    --------
    >>> import labkit as lk
    >>> model = lk.models.pretrained("transactions-mlp", progress=False)  # doctest: +SKIP
    >>> cv = ContinuousValidator(model, gates={"roc_auc": {"min": 0.9}})  # doctest: +SKIP
    >>> for month, drift in enumerate([0.0, 0.3, 0.6, 0.9]):  # doctest: +SKIP
    ...     _ = cv.update(lk.data.load("transactions", split="test", n=5000, drift=drift),
    ...                   label=f"month {month}")
    >>> cv.first_failure  # doctest: +SKIP
    'month 2'
    """

    def __init__(
        self, model: Classifier, *, gates: Mapping[str, Mapping[str, float]], **options: Any
    ) -> None:
        self.model = check_model(model)
        self.gates = check_gates(gates)
        self._raw_gates = {k: dict(v) for k, v in gates.items()}
        for key in ("model", "data", "gates"):
            if key in options:
                raise TypeError(f"{key} is set by the validator; do not pass it in options")
        options.setdefault("progress", False)
        self.options = options
        self.steps: list[ValidationStep] = []

    def update(self, data: LabData, *, label: str | None = None) -> ModelCard:
        """Validate on a new batch and record the card."""
        card = validate(self.model, data, gates=self._raw_gates, **self.options)
        self.steps.append(ValidationStep(label or f"step {len(self.steps)}", card))
        return card

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.steps]

    @property
    def cards(self) -> list[ModelCard]:
        return [s.card for s in self.steps]

    def metric(self, name: str) -> list[float]:
        """One metric over the steps (NaN where it was not measured)."""
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        return [s.card.metrics.get(name, math.nan) for s in self.steps]

    @property
    def first_failure(self) -> str | None:
        """Label of the first step whose card failed, or ``None``."""
        for s in self.steps:
            if not s.card.passed:
                return s.label
        return None

    def _columns(self) -> list[str]:
        gated = list(self.gates)
        others = [m for m in METRICS if m not in gated and any(m in s.card.metrics for s in self.steps)]
        return gated + others

    def _table(self) -> tuple[list[str], list[list[object]]]:
        cols = self._columns()
        headers = ["step", "n", *cols, "verdict", "failed gates"]
        rows: list[list[object]] = []
        for s in self.steps:
            failed = ", ".join(g.gate.metric for g in s.card.failures)
            verdict = "PASS" if s.card.passed else "FAIL"
            rows.append(
                [s.label, s.card.n, *[s.card.metrics.get(c, math.nan) for c in cols], verdict, failed]
            )
        return headers, rows

    def _summary(self) -> str:
        first = self.first_failure
        tail = f"first failure at {first}" if first else "all passed"
        return f"Continuous validation: {len(self.steps)} steps, {tail}"

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**{self._summary()}**\n\n" + markdown_table(headers, rows)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        return html_table(headers, rows, caption=self._summary())

    def __repr__(self) -> str:
        return f"ContinuousValidator({self._summary()})"

    def plot(self, metrics: Sequence[str] | None = None, *, ax: Any = None) -> Any:
        """Gated (or chosen) metrics over the steps; gate bounds dashed; failing points red."""
        import matplotlib.pyplot as plt

        if not self.steps:
            raise ValueError("nothing to plot yet: call update() first")
        names = list(metrics) if metrics is not None else list(self.gates) or self._columns()
        for name in names:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 3.5))
        xs = list(range(len(self.steps)))
        for name in names:
            values = self.metric(name)
            (line,) = ax.plot(xs, values, marker="o", label=name)
            gate = self.gates.get(name)
            if gate is None:
                continue
            for bound in (gate.min, gate.max):
                if bound is not None:
                    ax.axhline(bound, color=line.get_color(), ls="--", lw=1, alpha=0.7)
            bad = [
                (i, v)
                for i, (v, s) in enumerate(zip(values, self.steps, strict=True))
                if not s.card.gate(name).passed and not math.isnan(v)
            ]
            if bad:
                ax.scatter(*zip(*bad, strict=True), color="crimson", marker="X", s=90, zorder=3)
        ax.set_xticks(xs, self.labels, rotation=30, ha="right")
        ax.set_ylabel("metric")
        ax.set_title("continuous validation (red ✕: gate failed)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=9)
        ax.figure.tight_layout()
        return ax.figure
