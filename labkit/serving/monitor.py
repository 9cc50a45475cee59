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
your own benign queries before trusting it. :func:`benign_traffic` draws streams shaped like
several kinds of legitimate customers, and :func:`prada_alarms` counts the alarms on many
streams of each kind: the false-alarm rate on benign traffic, the detection rate and delay on
an attacker's.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from labkit.data.base import LabData
from labkit.serving.api import QueryLog

__all__ = ["BENIGN_PATTERNS", "PradaAlarms", "PradaResult", "benign_traffic", "prada", "prada_alarms"]


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


#: Benign traffic patterns of :func:`benign_traffic`.
BENIGN_PATTERNS = ("natural", "class bursts", "repeats", "retries", "noisy", "mixed users")


def benign_traffic(
    data: LabData,
    *,
    pattern: str,
    n: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A stream of ``n`` benign queries drawn from ``data``, shaped like one kind of customer.

    Patterns (each one a legitimate way to use a prediction API):

    * ``"natural"``: random examples in random order;
    * ``"class bursts"``: random examples sent class by class (a customer who works through
      one batch at a time);
    * ``"repeats"``: every example sent twice in a row (a client that retries on a timeout);
    * ``"retries"``: every example followed by a retake, the same image plus Gaussian noise of
      standard deviation 0.02 (a photo taken twice);
    * ``"noisy"``: random examples with Gaussian noise of standard deviation 0.15, clipped to
      ``[0, 1]`` (a poor camera or scanner);
    * ``"mixed users"``: four customers (natural, class bursts, noisy, repeats) whose queries
      arrive interleaved in one log.

    Parameters
    ----------
    data:
        Natural images (``x`` in ``[0, 1]``), at least ``n`` of them.
    pattern:
        One of :data:`BENIGN_PATTERNS`.
    n:
        Queries in the stream, at least 8.
    generator:
        Draws the examples, the noise and the interleaving.

    Examples
    --------
    >>> from labkit.data import LabData
    >>> data = LabData("toy", "test", torch.rand(40, 1, 4, 4), torch.arange(40) % 4, list("abcd"))
    >>> stream = benign_traffic(data, pattern="repeats", n=10, generator=torch.Generator().manual_seed(0))
    >>> tuple(stream.shape), bool(torch.equal(stream[0], stream[1]))
    ((10, 1, 4, 4), True)
    """
    if not isinstance(data, LabData):
        raise TypeError(f"data must be a LabData, got {type(data).__name__}")
    if pattern not in BENIGN_PATTERNS:
        raise ValueError(f"pattern must be one of {', '.join(map(repr, BENIGN_PATTERNS))}, got {pattern!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 8:
        raise ValueError(f"n must be an integer of at least 8, got {n!r}")
    if n > len(data):
        raise ValueError(f"n={n} queries need at least {n} examples, data has {len(data)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g)[:n]
    x, y = data.x[order].detach().cpu(), data.y[order].cpu()
    if pattern == "natural":
        return x
    if pattern == "class bursts":
        return x[torch.argsort(y, stable=True)]
    if pattern == "noisy":
        return (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    if pattern in ("repeats", "retries"):
        first = x[: (n + 1) // 2]
        second = first if pattern == "repeats" else (first + 0.02 * torch.randn(first.shape, generator=g))
        return torch.stack([first, second.clamp(0, 1)], dim=1).flatten(0, 1)[:n]
    sizes = [n // 4 + (i < n % 4) for i in range(4)]
    users = [
        benign_traffic(data, pattern=p, n=max(8, k), generator=g)[:k]
        for p, k in zip(("natural", "class bursts", "noisy", "repeats"), sizes, strict=True)
    ]
    owner = torch.cat([torch.full((k,), i) for i, k in enumerate(sizes)])
    owner = owner[torch.randperm(n, generator=g)]  # arrival order: who sends the next query
    out = torch.empty_like(x)
    for i, stream in enumerate(users):
        out[owner == i] = stream
    return out


@dataclass(frozen=True)
class PradaAlarms:
    """How often PRADA raised an alarm on several kinds of traffic, and how early.

    ``rows[name]`` holds ``streams``, ``alarms`` (streams with an alarm), ``rate``
    (``alarms / streams``: the false-alarm rate for benign traffic, the detection rate for an
    attack), ``median_first_alarm`` (the 1-based query of the first alarm, median over the
    alarmed streams; NaN if none: the detection delay for an attack) and ``lowest_final_w``.
    """

    rows: dict[str, dict[str, float]]
    delta: float
    min_distances: int

    def _repr_markdown_(self) -> str:
        lines = [
            f"**PRADA alarms** (δ = {self.delta:g}, test from {self.min_distances} distances on)",
            "",
            "| traffic | streams | with an alarm | first alarm (median query) | lowest final W |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in self.rows.items():
            first = "–" if math.isnan(r["median_first_alarm"]) else f"{r['median_first_alarm']:.0f}"
            lines.append(
                f"| {name} | {r['streams']:.0f} | {r['alarms']:.0f} ({r['rate']:.0%}) | {first} "
                f"| {r['lowest_final_w']:.3f} |"
            )
        return "\n".join(lines)


def prada_alarms(
    streams: Mapping[str, Sequence[QueryLog | tuple[torch.Tensor, torch.Tensor]]],
    *,
    delta: float = 0.9,
    min_distances: int = 50,
) -> PradaAlarms:
    """Run :func:`prada` on several streams of each kind of traffic and count the alarms.

    On benign traffic every alarm is a false alarm, so the share of alarmed streams estimates
    the *false-alarm rate* of the threshold ``delta``; on an attacker's traffic it is the
    detection rate, and the query of the first alarm is the *detection delay*. Tune ``delta``
    on the benign traffic a service really sees, as Juuti et al. do per model.

    Parameters
    ----------
    streams:
        For each kind of traffic, a non-empty list of streams: query logs, or
        ``(queries, predictions)`` pairs.
    delta, min_distances:
        Passed to :func:`prada`.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> calm = [(torch.rand(120, 16, generator=g), torch.zeros(120, dtype=torch.long)) for _ in range(3)]
    >>> table = prada_alarms({"calm": calm})
    >>> table.rows["calm"]["rate"]
    0.0
    """
    if not isinstance(streams, Mapping) or not streams:
        raise ValueError("streams must be a non-empty mapping from a traffic name to a list of streams")
    rows: dict[str, dict[str, float]] = {}
    for name, group in streams.items():
        if isinstance(group, QueryLog | tuple) or not group:
            raise ValueError(f"streams[{name!r}] must be a non-empty list of streams")
        results = [
            prada(s, delta=delta, min_distances=min_distances)
            if isinstance(s, QueryLog)
            else prada(s[0], s[1], delta=delta, min_distances=min_distances)
            for s in group
        ]
        firsts = [r.first_alarm + 1 for r in results if r.first_alarm is not None]
        rows[name] = {
            "streams": float(len(results)),
            "alarms": float(len(firsts)),
            "rate": len(firsts) / len(results),
            "median_first_alarm": float(torch.tensor(firsts, dtype=torch.float64).median())
            if firsts
            else math.nan,
            "lowest_final_w": min(r.final_w for r in results),
        }
    return PradaAlarms(rows=rows, delta=float(delta), min_distances=min_distances)
