"""DriftMonitor: consume a stream of batches, compute drift statistics per window, raise alerts."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from labkit._checks import check_generator
from labkit.classifier import Classifier, batched_logits, check_model
from labkit.data.base import LabData
from labkit.monitoring.stats import (
    check_names,
    embed,
    ks_test,
    median_bandwidth,
    mmd_test,
    prediction_psi,
    prediction_test,
    psi,
)
from labkit.tables import html_table, markdown_table

__all__ = ["DriftAlert", "DriftMonitor", "DriftStep"]

Kind = Literal["auto", "tabular", "image"]

# metric -> (direction, what it is); "below" alerts when the value is under the threshold
_METRICS: dict[str, tuple[str, str]] = {
    "ks_min_p": ("below", "smallest KS p-value over features"),
    "psi_max": ("above", "largest PSI over features"),
    "mmd_p": ("below", "MMD permutation p-value on embeddings"),
    "prediction_p": ("below", "p-value of a test that the model's outputs are unchanged"),
    "prediction_psi": ("above", "PSI of the model's outputs"),
}


@dataclass(frozen=True)
class DriftAlert:
    """A threshold crossed at one step."""

    step: int
    label: str
    metric: str
    value: float
    threshold: float
    message: str


@dataclass
class DriftStep:
    """The statistics of one window.

    Attributes
    ----------
    step, label:
        Position in the stream and its name (e.g. ``"month 3"``).
    n:
        Rows in the window.
    metrics:
        ``ks_min_p``, ``psi_max`` and ``ks_drifted`` (features whose KS p-value is under the
        corrected alpha) for tabular data; ``mmd`` and ``mmd_p`` for images; ``prediction_p``
        and ``prediction_psi`` with a model.
    per_feature:
        Tabular only: ``{feature: {"ks": statistic, "ks_p": p-value, "psi": psi}}``.
    alerts:
        The alerts raised at this step.
    """

    step: int
    label: str
    n: int
    metrics: dict[str, float]
    per_feature: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: list[DriftAlert] = field(default_factory=list)

    def drifted_features(self) -> list[str]:
        """Features whose KS test or PSI crossed its threshold, worst PSI first."""
        flagged = [f for f, v in self.per_feature.items() if v.get("flagged", 0.0) > 0]
        return sorted(flagged, key=lambda f: -self.per_feature[f]["psi"])


class DriftMonitor:
    """Watch a stream of batches for data and prediction drift against a reference sample.

    Tabular data get a Kolmogorov-Smirnov test and the population stability index per
    feature; images get a maximum mean discrepancy test with a permutation p-value on the
    model's penultimate-layer embeddings (pixels if no model is given); with a model, the
    distribution of its outputs is compared too. Each :meth:`update` adds a batch, computes
    the statistics on the current window and raises an alert for each threshold crossed
    ``patience`` steps in a row.

    False alarms are controlled per step: the KS alert uses a Bonferroni-corrected level
    ``ks_alpha / features``, and the MMD alert the permutation test's level ``mmd_alpha``, so
    on undrifted data each fires with probability at most about ``alpha`` per step. PSI has
    no p-value; its default threshold 0.1 (the usual "moderate shift, investigate" level;
    0.25 is "major shift") sits well above its sampling noise for windows of a few hundred
    rows, roughly ``(bins - 1) * (1/n + 1/m)``.

    Parameters
    ----------
    reference:
        Data from the training distribution: a tensor ``(N, F)`` / ``(N, C, H, W)`` or a
        LabData.
    model:
        Optional classifier: enables prediction drift and, for images, the embeddings.
    kind:
        ``"tabular"``, ``"image"`` or ``"auto"`` (4-D tensors are images).
    feature_names:
        Column names (default: from a LabData, else ``x0, x1, ...``).
    window:
        Rows per test window: the last ``window`` rows across batches. ``None`` tests each
        batch on its own.
    ks_alpha, psi_threshold, mmd_alpha, prediction_alpha, prediction_psi_threshold:
        Alert thresholds (``None`` disables that alert). Output drift alerts on the p-value
        of :func:`~labkit.monitoring.prediction_test` by default; a PSI threshold on the
        outputs is off by default because the PSI of many classes is noisy in small windows.
    patience:
        Consecutive steps a threshold must be crossed before it alerts.
    bins:
        PSI bins.
    permutations, max_samples:
        MMD permutations, and the rows of reference and window used for MMD (subsampled).
    embedder:
        Custom ``x -> (N, d)`` features for MMD (default :func:`~labkit.monitoring.embed`).
    on_alert:
        Called with each :class:`DriftAlert` as it is raised.
    generator:
        Seeds subsampling and permutations.

    Examples
    --------
    >>> import labkit as lk
    >>> ref = lk.data.load("transactions", split="train", n=2000)
    >>> monitor = DriftMonitor(ref, window=1000)
    >>> step = monitor.update(lk.data.load("transactions", split="test", n=1000, drift=1.0))
    >>> [a.metric for a in step.alerts]
    ['ks_min_p', 'psi_max']
    """

    def __init__(
        self,
        reference: torch.Tensor | LabData,
        *,
        model: Classifier | None = None,
        kind: Kind = "auto",
        feature_names: Sequence[str] | None = None,
        window: int | None = None,
        ks_alpha: float | None = 0.01,
        psi_threshold: float | None = 0.1,
        mmd_alpha: float | None = 0.01,
        prediction_alpha: float | None = 0.01,
        prediction_psi_threshold: float | None = None,
        patience: int = 1,
        bins: int = 10,
        permutations: int = 200,
        max_samples: int = 500,
        embedder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        on_alert: Callable[[DriftAlert], None] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        x = self._rows(reference, "reference")
        if kind not in ("auto", "tabular", "image"):
            raise ValueError(f"kind must be 'auto', 'tabular' or 'image', got {kind!r}")
        self.kind: Literal["tabular", "image"] = (
            ("image" if x.dim() == 4 else "tabular") if kind == "auto" else kind
        )
        if self.kind == "tabular" and x.dim() != 2:
            raise ValueError(f"tabular reference must be (N, F), got shape {tuple(x.shape)}")
        if self.kind == "image" and x.dim() < 3:
            raise ValueError(f"image reference must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[0] < 2:
            raise ValueError("reference needs at least two rows")
        self.model = check_model(model) if model is not None else None
        if feature_names is None and isinstance(reference, LabData):
            feature_names = reference.feature_names
        self.feature_names = check_names(feature_names, x.shape[1]) if self.kind == "tabular" else []
        for name, value, low, high in (
            ("ks_alpha", ks_alpha, 0.0, 1.0),
            ("mmd_alpha", mmd_alpha, 0.0, 1.0),
            ("prediction_alpha", prediction_alpha, 0.0, 1.0),
            ("psi_threshold", psi_threshold, 0.0, math.inf),
            ("prediction_psi_threshold", prediction_psi_threshold, 0.0, math.inf),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name} must be a number or None, got {value!r}")
            if not low < value < high:
                raise ValueError(f"{name} must be in ({low}, {high}), got {value!r}")
        for name, value in (("patience", patience), ("bins", bins), ("permutations", permutations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
            raise ValueError(f"max_samples must be an integer of at least 2, got {max_samples!r}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 2):
            raise ValueError(f"window must be an integer of at least 2 or None, got {window!r}")
        if on_alert is not None and not callable(on_alert):
            raise TypeError("on_alert must be callable")
        self.thresholds: dict[str, float | None] = {
            "ks_min_p": None if ks_alpha is None else ks_alpha / max(1, len(self.feature_names)),
            "psi_max": psi_threshold,
            "mmd_p": mmd_alpha,
            "prediction_p": prediction_alpha,
            "prediction_psi": prediction_psi_threshold,
        }
        self.window = window
        self.patience = patience
        self.bins = bins
        self.permutations = permutations
        self.max_samples = max_samples
        self.embedder = embedder
        self.on_alert = on_alert
        self.generator = check_generator(generator)
        self.reference = x
        self.history: list[DriftStep] = []
        self.alerts: list[DriftAlert] = []
        self._buffer: deque[torch.Tensor] = deque()
        self._streak: dict[str, int] = {}
        self._ref_probs = self._probs(x) if self.model is not None else None
        self._ref_embedding: torch.Tensor | None = None
        self._bandwidth: float | None = None
        if self.kind == "image" and self.thresholds["mmd_p"] is not None:
            self._ref_embedding = self._embed(self._subsample(x))
            self._bandwidth = median_bandwidth(self._ref_embedding)
        self._settings = {  # the constructor's arguments, for _grading_state
            "kind": self.kind,
            "window": window,
            "ks_alpha": ks_alpha,
            "psi_threshold": psi_threshold,
            "mmd_alpha": mmd_alpha,
            "prediction_alpha": prediction_alpha,
            "prediction_psi_threshold": prediction_psi_threshold,
            "patience": patience,
            "bins": bins,
            "permutations": permutations,
            "max_samples": max_samples,
        }

    # ----------------------------------------------------------------- grading
    # A monitor that has seen no traffic yet crosses from a learner's kernel to the grader as
    # these constructor arguments, which the grader's own class validates.
    _grading_fields: ClassVar[tuple[str, ...]] = (
        "reference",
        "model",
        "feature_names",
        "embedder",
        "on_alert",
        "kind",
        "window",
        "ks_alpha",
        "psi_threshold",
        "mmd_alpha",
        "prediction_alpha",
        "prediction_psi_threshold",
        "patience",
        "bins",
        "permutations",
        "max_samples",
    )

    def _grading_state(self) -> dict[str, Any] | None:
        """The constructor arguments that rebuild this monitor, or ``None`` once it has seen a
        batch, or when it draws random samples (a generator's or the global state is not described)."""
        sampled = self._ref_embedding is not None and self.reference.shape[0] > self.max_samples
        if self.history or self.alerts or self._buffer or self.generator is not None or sampled:
            return None
        return {
            "reference": self.reference,
            "model": self.model,
            "feature_names": self.feature_names or None,
            "embedder": self.embedder,
            "on_alert": self.on_alert,
            **self._settings,
        }

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _rows(data: object, name: str) -> torch.Tensor:
        x = data.x if isinstance(data, LabData) else data
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor or a LabData, got {type(data).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must hold floating-point values, got dtype {x.dtype}")
        if x.dim() < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return x.detach()

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.max_samples:
            return x
        where = self.generator.device if self.generator is not None else torch.device("cpu")
        idx = torch.randperm(x.shape[0], generator=self.generator, device=where)[: self.max_samples]
        return x[idx.to(x.device)]

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        return batched_logits(self.model, x).softmax(1).cpu()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedder is not None:
            return self.embedder(x).detach().float().reshape(x.shape[0], -1).cpu()
        if self.model is not None:
            return embed(self.model, x)
        return x.detach().float().reshape(x.shape[0], -1).cpu()

    # ----------------------------------------------------------------- stream
    def update(self, batch: torch.Tensor | LabData, *, label: str | None = None) -> DriftStep:
        """Add a batch, test the current window against the reference, and raise alerts."""
        x = self._rows(batch, "batch")
        if tuple(x.shape[1:]) != tuple(self.reference.shape[1:]):
            expected = ", ".join(map(str, self.reference.shape[1:]))
            raise ValueError(f"batch has shape {tuple(x.shape)}, expected (N, {expected})")
        if self.window is None:
            current = x
        else:
            self._buffer.append(x)
            rows = sum(b.shape[0] for b in self._buffer)
            while len(self._buffer) > 1 and rows - self._buffer[0].shape[0] >= self.window:
                rows -= self._buffer.popleft().shape[0]
            current = torch.cat(list(self._buffer))[-self.window :]
        if current.shape[0] < 2:
            raise ValueError("the window holds fewer than two rows; send bigger batches")
        step_index = len(self.history)
        step = DriftStep(
            step=step_index, label=label or f"step {step_index}", n=int(current.shape[0]), metrics={}
        )
        if self.kind == "tabular":
            self._tabular(current, step)
        elif self._ref_embedding is not None:
            result = mmd_test(
                self._ref_embedding,
                self._embed(self._subsample(current)),
                permutations=self.permutations,
                bandwidth=self._bandwidth,
                generator=self.generator,
            )
            step.metrics["mmd"] = result.statistic
            step.metrics["mmd_p"] = result.p_value
        if self._ref_probs is not None:
            probs = self._probs(current)
            step.metrics["prediction_p"] = prediction_test(self._ref_probs, probs)
            step.metrics["prediction_psi"] = prediction_psi(self._ref_probs, probs, bins=self.bins)
        self._alerts(step)
        self.history.append(step)
        return step

    def _tabular(self, current: torch.Tensor, step: DriftStep) -> None:
        ks = ks_test(self.reference, current)
        level = self.thresholds["ks_min_p"]
        for j, name in enumerate(self.feature_names):
            value = psi(self.reference[:, j], current[:, j], bins=self.bins)
            flagged = (level is not None and ks[j][1] < level) or (
                self.thresholds["psi_max"] is not None and value > float(self.thresholds["psi_max"] or 0)
            )
            step.per_feature[name] = {
                "ks": ks[j][0],
                "ks_p": ks[j][1],
                "psi": value,
                "flagged": float(flagged),
            }
        step.metrics["ks_min_p"] = min(p for _, p in ks)
        step.metrics["psi_max"] = max(v["psi"] for v in step.per_feature.values())
        step.metrics["ks_drifted"] = float(sum(level is not None and p < level for _, p in ks))

    def _alerts(self, step: DriftStep) -> None:
        for metric, (direction, what) in _METRICS.items():
            threshold = self.thresholds.get(metric)
            if threshold is None or metric not in step.metrics:
                continue
            value = step.metrics[metric]
            crossed = value < threshold if direction == "below" else value > threshold
            self._streak[metric] = self._streak.get(metric, 0) + 1 if crossed else 0
            if crossed and self._streak[metric] >= self.patience:
                detail = ""
                if metric in ("ks_min_p", "psi_max"):
                    names = step.drifted_features()[:4]
                    detail = f"; features: {', '.join(names)}" if names else ""
                sign = "<" if direction == "below" else ">"
                alert = DriftAlert(
                    step=step.step,
                    label=step.label,
                    metric=metric,
                    value=value,
                    threshold=threshold,
                    message=f"{step.label}: {what} = {value:.3g} {sign} {threshold:.3g}{detail}",
                )
                step.alerts.append(alert)
                self.alerts.append(alert)
                if self.on_alert is not None:
                    self.on_alert(alert)

    def reset(self) -> None:
        """Forget the stream (history, alerts, window) but keep the reference."""
        self.history, self.alerts = [], []
        self._buffer.clear()
        self._streak = {}

    # ----------------------------------------------------------------- display
    def metric(self, name: str) -> list[float]:
        """The values of one metric over the steps (NaN where it was not computed)."""
        return [s.metrics.get(name, float("nan")) for s in self.history]

    def _columns(self) -> list[str]:
        names = ["ks_min_p", "ks_drifted", "psi_max", "mmd", "mmd_p", "prediction_p", "prediction_psi"]
        return [m for m in names if any(m in s.metrics for s in self.history)]

    def _table(self) -> tuple[list[str], list[list[object]]]:
        cols = self._columns()
        headers = ["step", "rows", *cols, "alerts"]
        rows: list[list[object]] = [
            [
                s.label,
                s.n,
                *[s.metrics.get(c, float("nan")) for c in cols],
                ", ".join(a.metric for a in s.alerts),
            ]
            for s in self.history
        ]
        return headers, rows

    def active_thresholds(self) -> dict[str, float]:
        """The alert thresholds that apply to this monitor's data and model."""
        metrics = ["ks_min_p", "psi_max"] if self.kind == "tabular" else ["mmd_p"]
        if self.model is not None:
            metrics += ["prediction_p", "prediction_psi"]
        return {m: v for m in metrics if (v := self.thresholds[m]) is not None}

    def _summary(self) -> str:
        used = ", ".join(
            f"{k} {'<' if _METRICS[k][0] == 'below' else '>'} {v:.3g}"
            for k, v in self.active_thresholds().items()
        )
        steps, alerts = len(self.history), len(self.alerts)
        return f"{self.kind} drift monitor, {steps} steps, {alerts} alerts (alert when {used})"

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**{self._summary()}**\n\n" + markdown_table(headers, rows, digits=4)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        return html_table(headers, rows, caption=self._summary(), digits=4)

    def __repr__(self) -> str:
        return f"DriftMonitor({self._summary()})"

    def plot(self, axes: Any = None) -> Any:
        """One panel per alerting metric over the steps, the threshold dashed, alerts in red."""
        import matplotlib.pyplot as plt

        panels = [m for m in _METRICS if any(m in s.metrics for s in self.history)]
        if not panels:
            raise ValueError("nothing to plot yet: call update() with some batches first")
        if axes is None:
            fig, axes = plt.subplots(
                len(panels), 1, figsize=(6, 2.2 * len(panels)), sharex=True, squeeze=False
            )
            axes = list(axes[:, 0])
        else:
            axes = list(np.ravel(axes)) if isinstance(axes, Sequence | np.ndarray) else [axes]
            fig = axes[0].figure
        steps = [s.step for s in self.history]
        for ax, metric in zip(axes, panels, strict=False):
            values = self.metric(metric)
            if _METRICS[metric][0] == "below":  # p-values on a log scale; keep zeros visible
                values = [max(v, 1e-16) for v in values]
            ax.plot(steps, values, marker="o", color="steelblue", label=metric)
            threshold = self.thresholds.get(metric)
            if threshold is not None:
                ax.axhline(threshold, color="grey", ls="--", lw=1, label="threshold")
            hits = [(a.step, max(a.value, 1e-16)) for a in self.alerts if a.metric == metric]
            if hits:
                alerts = list(zip(*hits, strict=True))
                ax.scatter(*alerts, color="crimson", marker="X", s=80, zorder=3, label="alert")
            if _METRICS[metric][0] == "below":
                ax.set_yscale("log")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, fontsize=9)
        axes[-1].set_xticks(steps, [s.label for s in self.history], rotation=30, ha="right")
        fig.suptitle("drift over the stream", fontsize=10)
        fig.tight_layout()
        return fig
