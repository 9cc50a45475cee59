"""Accuracy under every corruption and severity, and the mean corruption error (mCE)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from labkit._checks import check_generator
from labkit.classifier import Classifier, batched_logits, check_batch_size, check_model
from labkit.data.base import LabData, as_xy
from labkit.stress.corruptions import CORRUPTIONS, check_severity, corrupt
from labkit.tables import html_table, markdown_table

__all__ = ["CorruptionReport", "corruption_benchmark"]


@dataclass
class CorruptionReport:
    """Accuracy per corruption and severity, with corruption errors against a baseline.

    Attributes
    ----------
    clean_accuracy:
        Accuracy on the uncorrupted examples.
    accuracy:
        ``accuracy[name][i]`` is the accuracy under corruption ``name`` at ``severities[i]``.
    severities:
        The severities evaluated.
    n:
        Number of examples per cell.
    baseline_clean_accuracy, baseline_accuracy:
        The same for the baseline model (``None`` without a baseline).
    model_name, baseline_name:
        Labels for tables and plots.

    Notes
    -----
    With errors ``E = 1 - accuracy``, the corruption error of corruption ``c`` is
    ``CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}``, the mean corruption error
    ``mCE = 100 * mean_c CE_c``, and the relative versions subtract each model's clean error
    first: ``rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)``
    (Hendrycks and Dietterich, 2019, arXiv:1903.12261; their baseline is AlexNet). Below 100
    the model is more robust than the baseline. A ratio with a zero denominator is NaN.
    """

    clean_accuracy: float
    accuracy: dict[str, list[float]]
    severities: list[int]
    n: int
    baseline_clean_accuracy: float | None = None
    baseline_accuracy: dict[str, list[float]] | None = None
    model_name: str = "model"
    baseline_name: str = "baseline"
    info: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- numbers
    @property
    def corruptions(self) -> list[str]:
        return list(self.accuracy)

    def mean_accuracy(self, name: str | None = None) -> float:
        """Mean accuracy over severities for ``name``, or over every cell when ``None``."""
        cells = self.accuracy[name] if name is not None else [a for v in self.accuracy.values() for a in v]
        return sum(cells) / len(cells)

    @property
    def ce(self) -> dict[str, float]:
        """Corruption error of each corruption relative to the baseline (1.0 = as robust)."""
        if self.baseline_accuracy is None:
            return {}
        return {
            c: _ratio(sum(1 - a for a in acc), sum(1 - a for a in self.baseline_accuracy[c]))
            for c, acc in self.accuracy.items()
        }

    @property
    def relative_ce(self) -> dict[str, float]:
        """Relative corruption error (degradation beyond the clean error) per corruption."""
        if self.baseline_accuracy is None or self.baseline_clean_accuracy is None:
            return {}
        e0, b0 = 1 - self.clean_accuracy, 1 - self.baseline_clean_accuracy
        return {
            c: _ratio(sum(1 - a - e0 for a in acc), sum(1 - a - b0 for a in self.baseline_accuracy[c]))
            for c, acc in self.accuracy.items()
        }

    @property
    def mce(self) -> float | None:
        """Mean corruption error in percent (100 = as robust as the baseline); ``None`` without one."""
        ce = self.ce
        return 100.0 * sum(ce.values()) / len(ce) if ce else None

    @property
    def relative_mce(self) -> float | None:
        """Relative mean corruption error in percent; ``None`` without a baseline."""
        rce = self.relative_ce
        return 100.0 * sum(rce.values()) / len(rce) if rce else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "n": self.n,
            "severities": list(self.severities),
            "clean_accuracy": self.clean_accuracy,
            "accuracy": {k: list(v) for k, v in self.accuracy.items()},
            "baseline": self.baseline_name if self.baseline_accuracy is not None else None,
            "baseline_clean_accuracy": self.baseline_clean_accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "ce": self.ce,
            "relative_ce": self.relative_ce,
            "mce": self.mce,
            "relative_mce": self.relative_mce,
        }

    # ----------------------------------------------------------------- display
    def _table(self) -> tuple[list[str], list[list[object]]]:
        headers = ["corruption", *[f"s{s}" for s in self.severities], "mean"]
        ce, rce = self.ce, self.relative_ce
        if ce:
            headers += ["CE", "rel. CE"]
        rows: list[list[object]] = []
        for c, acc in self.accuracy.items():
            row: list[object] = [c, *acc, self.mean_accuracy(c)]
            if ce:
                row += [100 * ce[c], 100 * rce[c]]
            rows.append(row)
        return headers, rows

    def _summary(self) -> str:
        text = (
            f"{self.model_name}: clean accuracy {self.clean_accuracy:.3f}, mean corrupted accuracy "
            f"{self.mean_accuracy():.3f} over {len(self.accuracy)} corruptions x "
            f"{len(self.severities)} severities, n={self.n}"
        )
        if self.mce is not None:
            text += (
                f"; mCE {self.mce:.1f}, relative mCE {_pct(self.relative_mce)} against "
                f"{self.baseline_name} (clean accuracy {self.baseline_clean_accuracy:.3f})"
            )
        return text

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**Corruption benchmark.** {self._summary()}\n\n" + markdown_table(headers, rows)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        styles = [[_heat(v) if 0 < j <= len(self.severities) else "" for j, v in enumerate(r)] for r in rows]
        return html_table(headers, rows, caption=self._summary(), styles=styles)

    def __repr__(self) -> str:
        return f"CorruptionReport({self._summary()})"

    def plot(self, ax: Any = None) -> Any:
        """Heat map of accuracy, corruptions by severity, with the numbers in the cells."""
        import matplotlib.pyplot as plt

        names = self.corruptions
        grid = [self.accuracy[c] for c in names]
        if ax is None:
            _, ax = plt.subplots(figsize=(1.0 + 0.75 * len(self.severities), 0.9 + 0.32 * len(names)))
        image = ax.imshow(grid, cmap="cividis", vmin=0.0, vmax=1.0, aspect="auto")  # colour-blind safe
        ax.set_xticks(range(len(self.severities)), [str(s) for s in self.severities])
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("severity")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                ink = "black" if value > 0.55 else "white"  # readable on cividis's dark and light ends
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=9, color=ink)
        title = f"{self.model_name}: accuracy (clean {self.clean_accuracy:.2f})"
        if self.mce is not None:
            title += f", mCE {self.mce:.0f}"
        ax.set_title(title, fontsize=10)
        ax.figure.colorbar(image, ax=ax, label="accuracy")
        ax.figure.tight_layout()
        return ax.figure


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _pct(v: float | None) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.1f}"


def _heat(v: object) -> str:
    if not isinstance(v, float):
        return ""
    red, green = int(255 * min(1.0, 2 * (1 - v))), int(255 * min(1.0, 2 * v))
    return f"background-color: rgba({red}, {green}, 80, 0.35)"


def _correct(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    pred = batched_logits(model, x, batch_size=batch_size).argmax(1)
    return int((pred.to(y.device) == y).sum())


def corruption_benchmark(
    model: Classifier,
    data: LabData | tuple[torch.Tensor, torch.Tensor],
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    baseline: Classifier | CorruptionReport | None = None,
    batch_size: int = 256,
    n: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    model_name: str = "model",
    baseline_name: str = "baseline",
) -> CorruptionReport:
    """Evaluate a classifier under every corruption and severity (ImageNet-C style).

    Each batch is corrupted once per cell and the very same corrupted images go to the model
    and, if given, to the baseline model, so the comparison is paired.

    Parameters
    ----------
    model:
        A classifier returning logits (usually a :class:`~labkit.LabModel`); evaluated in
        evaluation mode without gradients, on the device of its parameters.
    data:
        A :class:`~labkit.data.LabData` of images or an ``(x, y)`` pair.
    corruptions:
        Names from :data:`~labkit.stress.CORRUPTIONS` (default: all of them).
    severities:
        Severities in 1..5 (default all five).
    baseline:
        A baseline classifier, or the :class:`CorruptionReport` of one computed earlier on the
        same data, corruptions and severities. Gives the (relative) mCE.
    batch_size:
        Examples per forward pass.
    n:
        Use only the first ``n`` examples.
    generator:
        Seeds the corruptions (one derived seed per corruption, severity and batch); the same
        seed gives the same report. ``None`` draws the seed from PyTorch's global generator.
    progress:
        Show a progress bar over the cells.
    model_name, baseline_name:
        Labels for the report.

    Returns
    -------
    CorruptionReport
        Accuracies, mCE and relative mCE, with a table and a heat map (``.plot()``).

    References
    ----------
    Hendrycks and Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019, arXiv:1903.12261.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    >>> y = torch.zeros(8, dtype=torch.long)
    >>> report = corruption_benchmark(net, (x, y), corruptions=["contrast"], baseline=net,
    ...                               progress=False)
    >>> report.mce is None or report.mce == 100.0 or math.isnan(report.mce)
    True
    """
    model = check_model(model)
    x, y = as_xy(data, n)
    if x.dim() != 4:
        raise ValueError(f"the corruption benchmark needs images (N, C, H, W), got shape {tuple(x.shape)}")
    batch_size = check_batch_size(batch_size)
    generator = check_generator(generator)
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    if not names:
        raise ValueError("corruptions is empty; pass at least one name or None for all")
    for name in names:
        if not isinstance(name, str) or name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"corruptions has duplicates: {names}")
    if isinstance(severities, int) or not list(severities):
        raise ValueError(f"severities must be a non-empty sequence of integers in 1..5, got {severities!r}")
    levels = [check_severity(s) for s in severities]
    base_model: Classifier | None = None
    base_report: CorruptionReport | None = None
    if isinstance(baseline, CorruptionReport):
        base_report = baseline
        missing = [c for c in names if c not in baseline.accuracy]
        if missing or list(baseline.severities) != levels:
            raise ValueError(
                "the baseline report must cover the same corruptions and severities: "
                f"missing {missing}, severities {baseline.severities} vs {levels}"
            )
    elif baseline is not None:
        base_model = check_model(baseline, "baseline")

    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    else:
        seed = int(torch.randint(0, 2**62, (1,)))

    total = x.shape[0]
    clean = _correct(model, x, y, batch_size) / total
    base_clean = None
    if base_model is not None:
        base_clean = clean if base_model is model else _correct(base_model, x, y, batch_size) / total
    accuracy: dict[str, list[float]] = {}
    base_acc: dict[str, list[float]] = {}
    bar = tqdm(total=len(names) * len(levels), desc="corruptions", unit="cell", disable=not progress)
    try:
        for ci, name in enumerate(names):
            accuracy[name], base_acc[name] = [], []
            for severity in levels:
                bar.set_postfix_str(f"{name} s{severity}")
                hits = base_hits = 0
                for bi, start in enumerate(range(0, total, batch_size)):
                    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                    g = torch.Generator(device=xb.device).manual_seed(
                        (seed + 1_000_003 * ci + 10_007 * severity + bi) % 2**63
                    )
                    xc = corrupt(xb, name, severity, generator=g)
                    batch_hits = _correct(model, xc, yb, batch_size)
                    hits += batch_hits
                    if base_model is model:
                        base_hits += batch_hits
                    elif base_model is not None:
                        base_hits += _correct(base_model, xc, yb, batch_size)
                accuracy[name].append(hits / total)
                base_acc[name].append(base_hits / total)
                bar.update(1)
    finally:
        bar.close()

    report = CorruptionReport(
        clean_accuracy=clean,
        accuracy=accuracy,
        severities=levels,
        n=total,
        model_name=model_name,
        baseline_name=baseline_name,
        info={"seed": seed, "batch_size": batch_size},
    )
    if base_model is not None:
        report.baseline_clean_accuracy = base_clean
        report.baseline_accuracy = base_acc
    elif base_report is not None:
        report.baseline_clean_accuracy = base_report.clean_accuracy
        report.baseline_accuracy = {c: list(base_report.accuracy[c]) for c in names}
        report.baseline_name = base_report.model_name if baseline_name == "baseline" else baseline_name
    return report
