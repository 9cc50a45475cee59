"""Load tests of a served model: throughput, tail latency and errors as concurrency grows.

:func:`load_test` sends the same request from ``c`` concurrent clients for each concurrency
level ``c`` and measures what a user would see: successful requests per second, the 50th, 95th
and 99th percentile latency of the successful requests, and the share of requests that failed
(shed with 503, timed out with 504, refused with 429, or lost). :func:`degradation_curve`
serves the same model under tighter and tighter resource settings (fewer threads, smaller
forward passes, bfloat16) and measures speed and agreement with the full-precision model.

The clients run in their own Python process by default: clients in the server's process share
its interpreter lock and its CPU, and the test then measures them as much as the server.
Both functions only talk to loopback addresses, and both are bounded: at most ``requests`` requests and
``duration_s`` seconds per level. A load test against a service you do not own is a
denial-of-service attack (ATLAS AML.T0029), not a test.

Latency percentiles are computed over successful requests only, so read them next to the
error rate: an overloaded server that answers 503 in a millisecond has a short p99 for the
few requests it did serve and a high error rate.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from labkit._checks import check_int
from labkit.stress import _loadgen
from labkit.tables import html_table, markdown_table

__all__ = ["DegradationReport", "LoadTestReport", "degradation_curve", "load_test"]

MAX_REQUESTS = 10_000
MAX_DURATION_S = 120.0
MAX_CONCURRENCY = 256


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


def _in_thread(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the load generator on a fresh event loop in a thread (works inside Jupyter's loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["rows"] = asyncio.run(
                _loadgen.run(
                    job["url"],
                    job["body"].encode(),
                    levels=job["levels"],
                    requests=job["requests"],
                    duration_s=job["duration_s"],
                    timeout_s=job["timeout_s"],
                    warmup=job["warmup"],
                )
            )
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="labkit-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    rows: list[dict[str, Any]] = box["rows"]
    return rows


def _in_process(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the load generator as its own Python process (it imports neither torch nor labkit)."""
    limit = len(job["levels"]) * (job["duration_s"] + 2 * job["timeout_s"]) + 60
    try:
        done = subprocess.run(
            # -I: isolated, so the folder of the script (labkit/stress) does not shadow the stdlib
            [sys.executable, "-I", _loadgen.__file__],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the load generator did not finish within {limit:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.strip()[-800:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def _url_of(target: object) -> str:
    from labkit.serving.server import check_url

    url = getattr(target, "url", target)
    if not isinstance(url, str):
        raise TypeError(f"target must be a URL string or a running server, got {type(target).__name__}")
    return check_url(url)


def _check_seconds(value: object, name: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise ValueError(f"{name} must be a number of seconds in (0, {high:g}], got {value!r}")
    return float(value)


@dataclass
class _RowReport:
    """Rows of measurements with a summary line, shown as a table in notebooks."""

    rows: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    _title = ""

    def column(self, name: str) -> list[Any]:
        """One column of the table, e.g. ``report.column("p99_ms")``."""
        if self.rows and name not in self.rows[0]:
            raise KeyError(f"no column {name!r}; have {', '.join(self.rows[0])}")
        return [r[name] for r in self.rows]

    def _table(self) -> tuple[list[str], list[list[object]]]:
        raise NotImplementedError

    def _summary(self) -> str:
        raise NotImplementedError

    def _repr_markdown_(self) -> str:
        headers, rows = self._table()
        return f"**{self._title}.** {self._summary()}\n\n" + markdown_table(headers, rows)

    def _repr_html_(self) -> str:
        headers, rows = self._table()
        return html_table(headers, rows, caption=self._summary())


@dataclass
class LoadTestReport(_RowReport):
    """One row per concurrency level.

    Attributes
    ----------
    rows:
        Dicts with ``concurrency``, ``requests``, ``ok``, ``errors``, ``error_rate``,
        ``throughput`` (successful requests per second), ``p50_ms``, ``p95_ms``, ``p99_ms``
        (over successful requests; NaN when none succeeded), ``seconds`` and ``codes`` (count
        per HTTP status, ``0`` for a request that got no answer at all).
    info:
        The URL, rows per request, limits, and the load average before and after.
    """

    _title = "Load test"

    def _table(self) -> tuple[list[str], list[list[object]]]:
        headers = [
            "concurrency",
            "requests",
            "ok",
            "error rate",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "codes",
        ]
        rows: list[list[object]] = [
            [
                r["concurrency"],
                r["requests"],
                r["ok"],
                r["error_rate"],
                round(r["throughput"], 1),
                round(r["p50_ms"], 1),
                round(r["p95_ms"], 1),
                round(r["p99_ms"], 1),
                ", ".join(f"{k}: {v}" for k, v in sorted(r["codes"].items())),
            ]
            for r in self.rows
        ]
        return headers, rows

    def _summary(self) -> str:
        before, after = self.info.get("load_before"), self.info.get("load_after")
        load = ""
        if before and after:
            load = f"; load average {before[0]:.2f} before, {after[0]:.2f} after"
        return (
            f"{self.info.get('url', '?')}, {self.info.get('rows_per_request', '?')} input(s) per request, "
            f"at most {self.info.get('requests', '?')} requests and {self.info.get('duration_s', '?')} s "
            f"per level{load}"
        )

    def __repr__(self) -> str:
        return f"LoadTestReport({len(self.rows)} levels, {self._summary()})"

    def plot(self, *, budget_ms: float | None = None, axes: Any = None) -> Any:
        """Throughput and error rate (left), latency percentiles (right) against concurrency."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        ax_t, ax_l = axes[0], axes[1]
        conc = self.column("concurrency")
        ax_t.plot(conc, self.column("throughput"), "o-", color="tab:blue", label="successful req/s")
        ax_t.set_ylabel("successful requests / s", color="tab:blue")
        ax_t.set_ylim(bottom=0)
        twin = ax_t.twinx()
        twin.plot(conc, [100 * e for e in self.column("error_rate")], "s--", color="crimson", label="errors")
        twin.set_ylabel("error rate (%)", color="crimson")
        twin.set_ylim(bottom=0, top=max(5.0, 105 * max(self.column("error_rate"), default=0)))
        for q, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            ax_l.plot(conc, self.column(f"{q}_ms"), "o" + style, label=q)
        if budget_ms is not None:
            ax_l.axhline(budget_ms, color="black", lw=1, label=f"budget {budget_ms:.3g} ms")
        ax_l.set_ylabel("latency of successful requests (ms)")
        ax_l.legend(frameon=False, fontsize=9)
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_xticks(conc, [str(c) for c in conc])
            ax.set_xlabel("concurrent clients")
        ax_t.set_title("throughput and errors", fontsize=10)
        ax_l.set_title("latency", fontsize=10)
        ax_t.figure.tight_layout()
        return ax_t.figure


def load_test(
    target: object,
    x: torch.Tensor,
    *,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    requests: int = 100,
    duration_s: float = 10.0,
    timeout_s: float = 10.0,
    warmup: int = 3,
    separate_process: bool = True,
) -> LoadTestReport:
    """Measure throughput, latency percentiles and errors of a served model at each concurrency.

    Parameters
    ----------
    target:
        A running :class:`~labkit.serving.ModelServer` or :class:`~labkit.serving.ServerProcess`,
        or its URL. Only loopback addresses are accepted.
    x:
        The batch every request sends (``x.shape[0]`` inputs per request).
    concurrency:
        Numbers of concurrent clients to try, each at most 256; tested in increasing order.
    requests:
        Most requests per level (at most 10,000).
    duration_s:
        Most seconds per level (at most 120); the level stops at whichever bound comes first.
    timeout_s:
        Client timeout per request; a request without an answer counts as status ``0``.
    warmup:
        Requests sent one at a time before measuring (not counted).
    separate_process:
        Run the clients in their own Python process (the default). Clients in the server's
        process share its interpreter lock and CPU, and the test then measures them as much
        as the server; ``False`` runs them in a thread of this process.

    Returns
    -------
    LoadTestReport
        A table (``_repr_markdown_``), ``.rows`` and ``.plot()``.
    """
    from labkit.serving.server import encode_request

    url = _url_of(target)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor batch to send, got {type(x).__name__}")
    levels = sorted(
        {check_int(c, "every concurrency level", minimum=1, maximum=MAX_CONCURRENCY) for c in concurrency}
    )
    if not levels:
        raise ValueError("concurrency must list at least one level, e.g. (1, 2, 4, 8)")
    requests = check_int(requests, "requests", minimum=1, maximum=MAX_REQUESTS)
    duration_s = _check_seconds(duration_s, "duration_s", MAX_DURATION_S)
    timeout_s = _check_seconds(timeout_s, "timeout_s", MAX_DURATION_S)
    warmup = check_int(warmup, "warmup", minimum=0, maximum=100)
    body = encode_request(x)
    job = {
        "url": url,
        "body": body.decode(),
        "levels": levels,
        "requests": requests,
        "duration_s": duration_s,
        "timeout_s": timeout_s,
        "warmup": warmup,
    }
    before = _load_average()
    rows = _in_process(job) if separate_process else _in_thread(job)
    for row in rows:
        row["codes"] = {int(k): int(v) for k, v in row["codes"].items()}
    info = {
        "url": url,
        "rows_per_request": int(x.shape[0]) if x.dim() else 1,
        "requests": requests,
        "duration_s": duration_s,
        "load_before": before,
        "load_after": _load_average(),
        "clients": "separate process" if separate_process else "thread of this process",
    }
    return LoadTestReport(rows=rows, info=info)


# ------------------------------------------------------------------------------ degradation
@dataclass
class DegradationReport(_RowReport):
    """Speed and answers of the same model served under different resource settings.

    ``rows`` hold ``setting``, the settings themselves (``config``), ``throughput``,
    ``p50_ms``, ``p99_ms``, ``error_rate`` at the tested concurrency, ``agreement`` (share of
    served labels equal to the in-process float32 model's) and ``accuracy`` (when labels were
    given, else NaN).
    """

    _title = "Degradation under constraints"

    def _table(self) -> tuple[list[str], list[list[object]]]:
        headers = ["setting", "req/s", "p50 ms", "p99 ms", "error rate", "agreement", "accuracy"]
        rows: list[list[object]] = [
            [
                r["setting"],
                round(r["throughput"], 1),
                round(r["p50_ms"], 1),
                round(r["p99_ms"], 1),
                r["error_rate"],
                r["agreement"],
                r["accuracy"],
            ]
            for r in self.rows
        ]
        return headers, rows

    def _summary(self) -> str:
        load = self.info.get("load_after")
        text = (
            f"{self.info.get('concurrency', '?')} concurrent clients, "
            f"{self.info.get('rows_per_request', '?')} input(s) per request"
        )
        return text + (f"; load average {load[0]:.2f}" if load else "")

    def plot(self, *, axes: Any = None) -> Any:
        """Throughput and p99 latency (left), agreement and accuracy (right) per setting."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        names = self.column("setting")
        pos = np.arange(len(names))
        axes[0].bar(pos, self.column("throughput"), color="tab:blue")
        axes[0].set_ylabel("successful requests / s", color="tab:blue")
        twin = axes[0].twinx()
        twin.plot(pos, self.column("p99_ms"), "o-", color="crimson")
        twin.set_ylabel("p99 latency (ms)", color="crimson")
        twin.set_ylim(bottom=0)
        axes[1].plot(pos, self.column("agreement"), "o-", label="agreement with float32")
        if not all(math.isnan(a) for a in self.column("accuracy")):
            axes[1].plot(pos, self.column("accuracy"), "s--", label="accuracy")
        axes[1].set_ylim(0, 1.02)
        axes[1].legend(frameon=False, fontsize=9, loc="lower left")
        for ax in axes:
            ax.set_xticks(pos, names, rotation=20, ha="right", fontsize=9)
        axes[0].set_title("speed", fontsize=10)
        axes[1].set_title("answers", fontsize=10)
        axes[0].figure.tight_layout()
        return axes[0].figure


def degradation_curve(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    settings: Mapping[str, Mapping[str, Any]],
    rows_per_request: int = 1,
    concurrency: int = 8,
    requests: int = 100,
    duration_s: float = 10.0,
) -> DegradationReport:
    """Serve ``model`` under each setting in turn; measure speed and answers.

    Parameters
    ----------
    model:
        A :class:`~labkit.LabModel` (or a :class:`~labkit.serving.PredictionAPI`).
    x, y:
        Inputs whose served labels are compared with the in-process float32 model (and with
        ``y`` when given). The load test sends ``x[:rows_per_request]`` in every request.
    settings:
        Name to :class:`~labkit.serving.ServeConfig` fields, e.g.
        ``{"baseline": {}, "1 thread": {"threads": 1}, "bf16": {"dtype": "bfloat16"}}``; order
        them from the least to the most constrained to read the result as a curve.
    concurrency, requests, duration_s:
        The load at which every setting is measured (see :func:`load_test`).
    """
    from labkit.serving.server import ModelServer, ServeConfig, as_api

    if not settings:
        raise ValueError("settings must name at least one configuration, e.g. {'baseline': {}}")
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty batch tensor of inputs")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]):
        raise ValueError(f"y must hold one label per input of x ({x.shape[0]}), got {getattr(y, 'shape', y)}")
    rows_per_request = check_int(rows_per_request, "rows_per_request", minimum=1, maximum=int(x.shape[0]))
    api = as_api(model)
    with torch.no_grad():
        reference = api.model(x).argmax(1)
    rows = []
    for name, setting in settings.items():
        server_options = dict(setting)
        rows_cap = int(server_options.get("max_batch_rows", ServeConfig.max_batch_rows))
        server_options.setdefault("max_batch", min(int(x.shape[0]), rows_cap))
        with ModelServer(api, name=str(name), **server_options) as server:
            with server.client() as client:
                labels = torch.cat(
                    [
                        _labels(client(x[i : i + server.config.max_batch]))
                        for i in range(0, len(x), server.config.max_batch)
                    ]
                )
            report = load_test(
                server,
                x[:rows_per_request],
                concurrency=[concurrency],
                requests=requests,
                duration_s=duration_s,
            )
        level = report.rows[0]
        rows.append(
            {
                "setting": str(name),
                "config": dict(setting),
                "throughput": level["throughput"],
                "p50_ms": level["p50_ms"],
                "p99_ms": level["p99_ms"],
                "error_rate": level["error_rate"],
                "agreement": float((labels == reference).float().mean()),
                "accuracy": float((labels == y).float().mean()) if y is not None else math.nan,
            }
        )
    info = {"concurrency": concurrency, "rows_per_request": rows_per_request, "load_after": _load_average()}
    return DegradationReport(rows=rows, info=info)


def _labels(answer: Any) -> torch.Tensor:
    from labkit.serving.api import TopK

    if isinstance(answer, TopK):
        return answer.classes[:, 0]
    return answer if answer.dim() == 1 else answer.argmax(1)
