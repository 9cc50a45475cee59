"""Stress tests for tabular models: missing values, outliers, unit errors, shifted features.

Four things that go wrong with the rows a fraud model scores in production, each at severities
1..5 and each a pure function of a feature matrix ``(N, F)``:

==============  ==================================================================================
name            what happens, severity 1 .. 5
==============  ==================================================================================
missing         10 % .. 70 % of the values go missing: left as NaN (``missing="nan"``) or, as a
                pipeline would, imputed with the reference mean (``missing="impute"``, default)
outliers        2 % .. 25 % of the rows get one continuous feature pushed 6 .. 14 standard
                deviations from its mean (sensor glitches, fat fingers)
unit_error      10 % .. 100 % of the rows record the amount in cents instead of dollars: the
                log-amount features gain ``log(100)`` (set ``units=`` for other data)
shift           every continuous feature moves by 0.25 .. 2 standard deviations in a random
                direction and binary features flip with probability 4 % .. 30 % (covariate shift)
==============  ==================================================================================

:func:`tabular_stress_report` scores a model under each: ROC-AUC, and the recall and
false-positive rate at the threshold that gave the target FPR on the clean data (the threshold
a deployed model keeps when its inputs break).

Examples
--------
>>> import labkit as lk
>>> data = lk.data.load("transactions", split="test", n=500)
>>> x = stress_tabular(data.x, "unit_error", 5, feature_names=data.feature_names)
>>> bool(torch.allclose(x[:, 0] - data.x[:, 0], torch.tensor(math.log(100.0))))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from labkit.classifier import Classifier, batched_logits, check_batch_size, check_model
from labkit.data.base import LabData
from labkit.stress._random import check_generator, normal, uniform
from labkit.stress.corruptions import check_severity
from labkit.tables import html_table, markdown_table

__all__ = [
    "TABULAR_STRESSES",
    "TRANSACTION_UNITS",
    "TabularStressReport",
    "stress_tabular",
    "tabular_stress_report",
]

TRANSACTION_UNITS: dict[str, tuple[Literal["log", "linear"], float]] = {
    "log_amount": ("log", 100.0),
    "amount_vs_typical": ("log", 100.0),
}
"""Cents instead of dollars in the transactions data: both amount features are logarithms."""

_MISSING = (0.1, 0.2, 0.35, 0.5, 0.7)
_OUTLIER_ROWS = (0.02, 0.05, 0.1, 0.15, 0.25)
_OUTLIER_SIGMAS = (6.0, 8.0, 10.0, 12.0, 14.0)
_UNIT_ROWS = (0.1, 0.25, 0.5, 0.75, 1.0)
_SHIFT_SIGMAS = (0.25, 0.5, 1.0, 1.5, 2.0)
_SHIFT_FLIPS = (0.04, 0.08, 0.15, 0.22, 0.3)


@dataclass(frozen=True)
class _Context:
    feature_names: list[str] | None
    mean: torch.Tensor
    std: torch.Tensor
    binary: torch.Tensor  # bool per feature: only 0 and 1 in the reference
    columns: torch.Tensor  # bool per feature: which features the stress may touch
    units: Mapping[str, tuple[Literal["log", "linear"], float]] | None
    missing: Literal["impute", "nan"]


def _missing(x: torch.Tensor, s: int, ctx: _Context, g: torch.Generator | None) -> torch.Tensor:
    hit = (uniform(tuple(x.shape), x, g) < _MISSING[s - 1]) & ctx.columns
    fill = torch.full_like(x, float("nan")) if ctx.missing == "nan" else ctx.mean.expand_as(x)
    return torch.where(hit, fill, x)


def _outliers(x: torch.Tensor, s: int, ctx: _Context, g: torch.Generator | None) -> torch.Tensor:
    n, f = x.shape
    candidates = torch.nonzero(ctx.columns & ~ctx.binary).flatten()
    if candidates.numel() == 0:
        raise ValueError("outliers needs at least one continuous (non-binary) feature to corrupt")
    rows = uniform((n,), x, g) < _OUTLIER_ROWS[s - 1]
    pick = candidates[(uniform((n,), x, g) * candidates.numel()).long().clamp(max=candidates.numel() - 1)]
    sign = torch.where(uniform((n,), x, g) < 0.5, -1.0, 1.0).to(x.dtype)
    value = ctx.mean[pick] + sign * _OUTLIER_SIGMAS[s - 1] * ctx.std[pick]
    hit = rows.unsqueeze(1) & (torch.arange(f, device=x.device).unsqueeze(0) == pick.unsqueeze(1))
    return torch.where(hit, value.unsqueeze(1).expand_as(x), x)


def _unit_error(x: torch.Tensor, s: int, ctx: _Context, g: torch.Generator | None) -> torch.Tensor:
    units = ctx.units
    if units is None:
        if ctx.feature_names is not None and all(k in ctx.feature_names for k in TRANSACTION_UNITS):
            units = TRANSACTION_UNITS
        else:
            raise ValueError(
                "unit_error needs units={feature: ('log' | 'linear', factor)} naming the features "
                "recorded in the wrong unit (the default covers the transactions data only)"
            )
    if ctx.feature_names is None:
        raise ValueError("unit_error needs feature_names to find the features named in units")
    rows = (uniform((x.shape[0],), x, g) < _UNIT_ROWS[s - 1]).unsqueeze(1)
    out = x.clone()
    for name, (kind, factor) in units.items():
        if name not in ctx.feature_names:
            raise ValueError(f"units names feature {name!r}, which is not in feature_names")
        if kind not in ("log", "linear") or not (math.isfinite(factor) and factor > 0):
            raise ValueError(
                f"units[{name!r}] must be ('log' | 'linear', positive factor), got {(kind, factor)}"
            )
        j = ctx.feature_names.index(name)
        wrong = x[:, j] + math.log(factor) if kind == "log" else x[:, j] * factor
        out[:, j] = torch.where(rows[:, 0], wrong, x[:, j])
    return out


def _shift(x: torch.Tensor, s: int, ctx: _Context, g: torch.Generator | None) -> torch.Tensor:
    f = x.shape[1]
    direction = torch.where(uniform((f,), x, g) < 0.5, -1.0, 1.0).to(x.dtype)
    jitter = 1.0 + 0.1 * normal((f,), x, g)  # not every feature moves by exactly the same amount
    moved = x + (direction * jitter * _SHIFT_SIGMAS[s - 1] * ctx.std)
    flip = uniform(tuple(x.shape), x, g) < _SHIFT_FLIPS[s - 1]
    flipped = torch.where(flip, 1.0 - x, x)
    out = torch.where(ctx.binary, flipped, moved)
    return torch.where(ctx.columns, out, x)


TabularStressFn = Callable[[torch.Tensor, int, _Context, "torch.Generator | None"], torch.Tensor]

TABULAR_STRESSES: dict[str, TabularStressFn] = {
    "missing": _missing,
    "outliers": _outliers,
    "unit_error": _unit_error,
    "shift": _shift,
}
"""The tabular stresses by name (see the module docstring)."""


def _check_features(x: object, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be a feature matrix (N, F), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one row")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _context(
    x: torch.Tensor,
    *,
    feature_names: Sequence[str] | None,
    reference: torch.Tensor | None,
    features: Sequence[str] | None,
    units: Mapping[str, tuple[Literal["log", "linear"], float]] | None,
    missing: str,
) -> _Context:
    if missing not in ("impute", "nan"):
        raise ValueError(f"missing must be 'impute' or 'nan', got {missing!r}")
    f = x.shape[1]
    names = list(feature_names) if feature_names is not None else None
    if names is not None and len(names) != f:
        raise ValueError(f"feature_names has {len(names)} names but x has {f} columns")
    ref = x if reference is None else _check_features(reference, "reference")
    if ref.shape[1] != f:
        raise ValueError(f"reference has {ref.shape[1]} columns but x has {f}")
    ref = ref.to(device=x.device, dtype=x.dtype)
    mean = ref.mean(0)
    std = ref.std(0) if ref.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 0, std, torch.ones_like(std))
    binary = ((ref == 0) | (ref == 1)).all(0)
    columns = torch.ones(f, dtype=torch.bool, device=x.device)
    if features is not None:
        if names is None:
            raise ValueError("features= selects columns by name, so feature_names is needed too")
        unknown = [c for c in features if c not in names]
        if unknown or not list(features):
            raise ValueError(f"features must be a non-empty list of feature names; unknown: {unknown}")
        columns = torch.tensor([c in features for c in names], device=x.device)
    return _Context(names, mean, std, binary, columns, units, missing)  # type: ignore[arg-type]


def stress_tabular(
    x: torch.Tensor,
    name: str,
    severity: int,
    *,
    feature_names: Sequence[str] | None = None,
    reference: torch.Tensor | None = None,
    features: Sequence[str] | None = None,
    units: Mapping[str, tuple[Literal["log", "linear"], float]] | None = None,
    missing: Literal["impute", "nan"] = "impute",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply tabular stress ``name`` at ``severity`` to the feature matrix ``x``.

    Parameters
    ----------
    x:
        Features ``(N, F)``, finite floats; never modified.
    name:
        ``missing``, ``outliers``, ``unit_error`` or ``shift`` (see the module docstring).
    severity:
        1 (mild) to 5 (harsh).
    feature_names:
        Column names (needed by ``unit_error`` and ``features=``).
    reference:
        Rows whose means and standard deviations define "typical" (the training data); by
        default ``x`` itself. Binary features are those with only 0 and 1 in the reference.
    features:
        Restrict the stress to these columns (default: all).
    units:
        For ``unit_error``: ``{feature: ("log" | "linear", factor)}``, the factor the raw
        quantity was wrongly multiplied by; a log feature gains ``log(factor)``. Defaults to
        :data:`TRANSACTION_UNITS` when the columns are the transactions features.
    missing:
        For ``missing``: ``"impute"`` (reference mean, the default) or ``"nan"``.
    generator:
        Source of randomness; the same seed gives the same rows.

    Returns
    -------
    torch.Tensor
        A new ``(N, F)`` tensor with ``x``'s dtype and device.

    Raises
    ------
    ValueError
        Unknown stress, severity outside 1..5, empty or non-finite ``x``, mismatched names.
    """
    if not isinstance(name, str) or name not in TABULAR_STRESSES:
        raise ValueError(f"unknown tabular stress {name!r}; choose one of {', '.join(TABULAR_STRESSES)}")
    severity = check_severity(severity)
    generator = check_generator(generator)
    x = _check_features(x)
    ctx = _context(
        x, feature_names=feature_names, reference=reference, features=features, units=units, missing=missing
    )
    return TABULAR_STRESSES[name](x, severity, ctx, generator)


@dataclass
class TabularStressReport:
    """A binary classifier's metrics under each tabular stress and severity.

    Attributes
    ----------
    clean:
        ``{"auc", "recall", "fpr"}`` on the clean data; ``recall`` and ``fpr`` at ``threshold``.
    rows:
        One dict per (stress, severity): ``stress``, ``severity``, ``auc``, ``recall``, ``fpr``
        and ``error`` (the model's exception message when it refused the stressed rows).
    target_fpr, threshold:
        The false-positive rate asked for and the clean-data threshold that achieves it.
    """

    clean: dict[str, float]
    rows: list[dict[str, Any]]
    target_fpr: float
    threshold: float
    n: int
    positives: int
    info: dict[str, Any] = field(default_factory=dict)

    def metric(self, stress: str, key: str = "auc") -> list[float]:
        """``key`` (``auc``, ``recall`` or ``fpr``) for ``stress`` in order of severity."""
        values = [float(r[key]) for r in self.rows if r["stress"] == stress]
        if not values:
            raise ValueError(
                f"no rows for stress {stress!r}; have {sorted({r['stress'] for r in self.rows})}"
            )
        return values

    @property
    def stresses(self) -> list[str]:
        return list(dict.fromkeys(r["stress"] for r in self.rows))

    def _table(self) -> tuple[list[str], list[list[object]]]:
        headers = ["stress", "severity", "ROC-AUC", f"recall @ FPR {self.target_fpr:g}", "actual FPR", "note"]
        rows: list[list[object]] = [
            ["clean", "—", self.clean["auc"], self.clean["recall"], self.clean["fpr"], ""]
        ]
        rows += [
            [r["stress"], r["severity"], r["auc"], r["recall"], r["fpr"], r.get("error") or ""]
            for r in self.rows
        ]
        return headers, rows

    def _summary(self) -> str:
        return (
            f"n={self.n} ({self.positives} positives); threshold {self.threshold:.4g} set on clean data "
            f"for FPR {self.target_fpr:g}"
        )

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**Tabular stress.** {self._summary()}\n\n" + markdown_table(headers, rows)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        return html_table(headers, rows, caption=self._summary())

    def __repr__(self) -> str:
        auc = self.clean["auc"]
        return f"TabularStressReport(clean AUC {auc:.3f}, {len(self.rows)} cells; {self._summary()})"

    def plot(self, ax: Any = None) -> Any:
        """ROC-AUC and recall at the fixed threshold against severity, one line per stress."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        else:
            axes = list(ax) if isinstance(ax, Sequence) else [ax]
            fig = axes[0].figure
        for k, key in enumerate(("auc", "recall")[: len(axes)]):
            a = axes[k]
            for stress in self.stresses:
                sev = [r["severity"] for r in self.rows if r["stress"] == stress]
                a.plot(sev, self.metric(stress, key), marker="o", label=stress)
            a.axhline(self.clean[key], color="black", lw=1, ls="--", label="clean")
            a.set_xlabel("severity")
            a.set_ylabel("ROC-AUC" if key == "auc" else f"recall @ FPR {self.target_fpr:g}")
            a.grid(alpha=0.3)
        axes[0].legend(frameon=False, fontsize=9)
        fig.tight_layout()
        return fig


def _scores(model: Classifier, x: torch.Tensor, positive: int, batch_size: int) -> torch.Tensor:
    return batched_logits(model, x, batch_size=batch_size).softmax(1)[:, positive].cpu()


def tabular_stress_report(
    model: Classifier,
    data: LabData,
    *,
    stresses: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    fpr: float = 0.01,
    reference: torch.Tensor | LabData | None = None,
    positive_class: int = 1,
    missing: Literal["impute", "nan"] = "impute",
    units: Mapping[str, tuple[Literal["log", "linear"], float]] | None = None,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> TabularStressReport:
    """Score a binary tabular classifier under every tabular stress and severity.

    The decision threshold is fixed on the clean data at the target false-positive rate, as
    it would be when the model was deployed; under stress the report shows ROC-AUC (does the
    ranking survive?) and the recall and FPR at that fixed threshold (does the alert queue?).

    Parameters
    ----------
    model:
        A classifier returning logits ``(N, K)``; the score is the softmax probability of
        ``positive_class``.
    data:
        Labelled tabular data (e.g. ``lk.data.load("transactions", split="test")``).
    stresses:
        Names from :data:`TABULAR_STRESSES` (default: all).
    severities:
        Severities in 1..5.
    fpr:
        Target false-positive rate for the threshold, in ``[0, 1)``.
    reference:
        Training rows (tensor or LabData) defining typical values; default ``data.x``.
    positive_class, missing, units:
        As in :func:`stress_tabular`; with ``missing="nan"`` a model that rejects NaN has its
        error recorded in the row instead of metrics.
    batch_size, generator, progress:
        Rows per forward pass, seeding, progress bar.

    Returns
    -------
    TabularStressReport
    """
    from labkit.validation.metrics import recall_at_fpr, roc_auc, threshold_at_fpr

    model = check_model(model)
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData, got {type(data).__name__}")
    x = _check_features(data.x, "data.x")
    y = data.y
    batch_size = check_batch_size(batch_size)
    generator = check_generator(generator)
    names = list(TABULAR_STRESSES) if stresses is None else list(stresses)
    if not names:
        raise ValueError("stresses is empty; pass at least one name or None for all")
    for name in names:
        if name not in TABULAR_STRESSES:
            raise ValueError(f"unknown tabular stress {name!r}; choose one of {', '.join(TABULAR_STRESSES)}")
    if isinstance(severities, int) or not list(severities):
        raise ValueError(f"severities must be a non-empty sequence of integers in 1..5, got {severities!r}")
    levels = [check_severity(s) for s in severities]
    ref = reference.x if isinstance(reference, LabData) else reference
    labels = (y == positive_class).long().cpu()

    clean_scores = _scores(model, x, positive_class, batch_size)
    threshold = threshold_at_fpr(clean_scores, labels, fpr=fpr)

    def measure(scores: torch.Tensor) -> dict[str, float]:
        return {
            "auc": roc_auc(scores, labels),
            "recall": recall_at_fpr(scores, labels, fpr=fpr, threshold=threshold),
            "fpr": float((scores[labels == 0] > threshold).float().mean()),
        }

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(names) * len(levels), desc="tabular stress", unit="cell", disable=not progress)
    try:
        for name in names:
            for severity in levels:
                xs = stress_tabular(
                    x,
                    name,
                    severity,
                    feature_names=data.feature_names,
                    reference=ref,
                    units=units,
                    missing=missing,
                    generator=generator,
                )
                row: dict[str, Any] = {"stress": name, "severity": severity}
                try:
                    row.update(measure(_scores(model, xs, positive_class, batch_size)))
                    row["error"] = None
                except (ValueError, TypeError) as err:
                    nan = float("nan")
                    row.update(
                        {"auc": nan, "recall": nan, "fpr": nan, "error": f"{type(err).__name__}: {err}"}
                    )
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return TabularStressReport(
        clean=measure(clean_scores),
        rows=rows,
        target_fpr=float(fpr),
        threshold=threshold,
        n=int(x.shape[0]),
        positives=int(labels.sum()),
        info={"missing": missing},
    )
