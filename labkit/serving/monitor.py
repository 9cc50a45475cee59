"""Watch the queries an API receives for signs of model extraction.

:func:`prada` is the PRADA detector of Juuti, Szyller, Marchal and Asokan, "PRADA: Protecting
Against DNN Model Stealing Attacks", EuroS&P 2019, arXiv:1805.02628. Its statistic is simple:

1. For every query :math:`x` with predicted class :math:`c`, take its smallest L2 distance
   :math:`d_{\\min}(x)` to the earlier queries of class :math:`c` kept in a growing set
   :math:`G_c`, and add it to the set :math:`D` of distances.
2. :math:`x` joins :math:`G_c` when :math:`d_{\\min}(x)` exceeds the threshold
   :math:`T_c = \\max(0, \\bar d_c - s_c)`, the mean minus one standard deviation of the
   distances of the members of :math:`G_c` (so near-duplicates do not grow the set).
3. Once :math:`|D|` reaches ``min_distances``, compute the Shapiro-Wilk statistic
   :math:`W(D) \\in (0, 1]` of the distances; natural queries give a roughly normal
   (bell-shaped) :math:`D` and :math:`W` near 1, while synthetic queries made by small
   steps from earlier ones (Jacobian augmentation, near-duplicates) give a spike of tiny
   distances and a low :math:`W`. An alarm is raised when :math:`W < \\delta`.

The paper tunes :math:`\\delta` per model on benign traffic; check the default of 0.9 on
your own benign queries before trusting it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from labkit.serving.api import QueryLog

__all__ = ["PradaResult", "prada"]


@dataclass(frozen=True)
class PradaResult:
    """What PRADA saw on a stream of queries.

    Attributes
    ----------
    w:
        Shapiro-Wilk :math:`W` after each query (NaN until ``min_distances`` distances exist).
    distances:
        The minimum distances :math:`D`, in the order they were added.
    delta:
        The alarm threshold.
    first_alarm:
        Index of the first query after which :math:`W < \\delta`, or ``None``.
    """

    w: torch.Tensor
    distances: torch.Tensor
    delta: float
    first_alarm: int | None

    @property
    def flagged(self) -> bool:
        """Whether the stream raised an alarm at any point."""
        return self.first_alarm is not None

    @property
    def final_w(self) -> float:
        """:math:`W` after the last query (NaN if too few queries)."""
        return float(self.w[-1]) if len(self.w) else math.nan

    def _repr_markdown_(self) -> str:
        alarm = "no alarm" if self.first_alarm is None else f"alarm after query {self.first_alarm + 1}"
        rows = [
            ("queries", str(len(self.w))),
            ("distances in D", str(len(self.distances))),
            ("final W", f"{self.final_w:.3f}"),
            ("threshold δ", f"{self.delta:g}"),
            ("verdict", alarm),
        ]
        lines = ["**PRADA** (Shapiro-Wilk W of min distances; alarm when W < δ)", "", "| | |", "|---|---|"]
        return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows])

    def plot(self, ax: Any = None) -> Any:
        """W against the number of queries, with the threshold."""
        from labkit.plot import curves

        n = torch.arange(1, len(self.w) + 1).tolist()
        fig = curves(n, {"W": self.w.tolist()}, xlabel="queries", ylabel="Shapiro-Wilk W", ax=ax, marker="")
        fig.axes[0].axhline(self.delta, color="crimson", linestyle="--", label="δ")
        return fig


def prada(
    queries: QueryLog | torch.Tensor,
    predictions: torch.Tensor | None = None,
    *,
    delta: float = 0.9,
    min_distances: int = 50,
    progress: bool = False,
) -> PradaResult:
    """Run the PRADA extraction detector over a stream of queries.

    Parameters
    ----------
    queries:
        A :class:`~labkit.serving.QueryLog` (``api.log``), or the queries ``(N, ...)`` in
        arrival order.
    predictions:
        The model's predicted class per query; taken from the log when ``queries`` is one.
    delta:
        Alarm threshold on :math:`W`, in ``(0, 1)``.
    min_distances:
        Distances needed before the test runs (the paper waits for enough queries; the
        Shapiro-Wilk test needs at least 3).
    progress:
        Show a progress bar.

    Returns
    -------
    PradaResult

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(300, 16, generator=g)
    >>> natural = prada(x, torch.zeros(300, dtype=torch.long))
    >>> steps = x[:1] + 0.01 * torch.arange(300.0).unsqueeze(1)  # a walk of equal small steps
    >>> synthetic = prada(steps, torch.zeros(300, dtype=torch.long))
    >>> natural.flagged, synthetic.flagged
    (False, True)
    """
    from scipy.stats import shapiro

    if isinstance(queries, QueryLog):
        if predictions is not None:
            raise TypeError("pass either a QueryLog or (queries, predictions), not both")
        x, labels = queries.inputs, queries.predictions
    elif isinstance(queries, torch.Tensor):
        if predictions is None:
            raise TypeError("predictions are needed with a tensor of queries (the model's predicted classes)")
        x, labels = queries, predictions
    else:
        raise TypeError(f"queries must be a QueryLog or a torch.Tensor, got {type(queries).__name__}")
    if labels.dim() != 1 or labels.shape[0] != x.shape[0]:
        raise ValueError(f"predictions must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    if not (isinstance(delta, numbers.Real) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if isinstance(min_distances, bool) or not isinstance(min_distances, int) or min_distances < 3:
        raise ValueError(f"min_distances must be an integer of at least 3, got {min_distances!r}")
    flat = x.detach().reshape(x.shape[0], -1).double().cpu()
    labels = labels.detach().cpu()
    growing: dict[int, list[torch.Tensor]] = {}
    kept_distances: dict[int, list[float]] = {}
    distances: list[float] = []
    w = torch.full((flat.shape[0],), math.nan, dtype=torch.float64)
    first_alarm: int | None = None
    for i in tqdm(range(flat.shape[0]), desc="PRADA", disable=not progress):
        c = int(labels[i])
        members = growing.setdefault(c, [])
        if not members:
            members.append(flat[i])
            kept_distances[c] = []
        else:
            d_min = float(torch.cdist(flat[i : i + 1], torch.stack(members)).min())
            distances.append(d_min)
            kept = kept_distances[c]
            threshold = 0.0
            if len(kept) >= 2:
                t = torch.tensor(kept, dtype=torch.float64)
                threshold = max(0.0, float(t.mean() - t.std()))
            if d_min > threshold:
                members.append(flat[i])
                kept.append(d_min)
        if len(distances) >= min_distances:
            d = torch.tensor(distances, dtype=torch.float64)
            if float(d.max() - d.min()) == 0.0:
                w[i] = 0.0  # all identical: as far from normal as it gets
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # scipy warns about p-values for N > 5000
                    w[i] = float(shapiro(d.numpy()).statistic)
            if first_alarm is None and float(w[i]) < delta:
                first_alarm = i
    return PradaResult(
        w=w,
        distances=torch.tensor(distances, dtype=torch.float64),
        delta=float(delta),
        first_alarm=first_alarm,
    )
