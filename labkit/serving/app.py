"""The FastAPI application behind :class:`~labkit.serving.ModelServer`.

:func:`create_app` wires the endpoints (``POST /predict``, ``GET /health``, ``GET /metrics``) to a
micro-batcher: a bounded queue and one loop that joins waiting requests into single forward
passes through a :class:`~labkit.serving.PredictionAPI` on a worker thread, then splits the
answer. The server counts what it answered for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from labkit.contract import LabModel
from labkit.serving.api import PredictionAPI, QueryBudgetExceeded, RateLimitExceeded, TopK
from labkit.serving.validation import RequestError, ServeConfig, shape_text, validate_inputs

__all__ = ["as_api", "create_app"]


# --------------------------------------------------------------------------------- batching
@dataclass
class _Job:
    x: torch.Tensor
    future: asyncio.Future[Any]
    abandoned: bool = False

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


class _MicroBatcher:
    """Bounded queue + one loop that joins waiting requests into single forward passes."""

    def __init__(
        self,
        forward: Callable[[torch.Tensor], Any],
        *,
        window_s: float,
        max_rows: int,
        queue_size: int,
        on_batch: Callable[[int, int], None],
    ) -> None:
        self.forward = forward
        self.window_s = window_s
        self.max_rows = max_rows
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-forward")
        self.on_batch = on_batch
        self.busy = False

    async def submit(self, x: torch.Tensor, *, timeout: float) -> Any:
        job = _Job(x, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)  # asyncio.QueueFull when the queue is full
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except TimeoutError:
            job.abandoned = True
            raise

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        carried: _Job | None = None
        while True:
            job = carried if carried is not None else await self.queue.get()
            carried = None
            jobs, rows = [job], job.rows
            if self.window_s > 0 and self.queue.empty() and rows < self.max_rows:
                await asyncio.sleep(self.window_s)
            while rows < self.max_rows and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if rows + nxt.rows > self.max_rows:
                    carried = nxt
                    break
                jobs.append(nxt)
                rows += nxt.rows
            live = [j for j in jobs if not j.abandoned and not j.future.done()]
            if not live:
                continue
            x = torch.cat([j.x for j in live])
            self.busy = True
            try:
                out = await loop.run_in_executor(self.executor, self.forward, x)
            except Exception as err:  # the same failure for every request of the batch
                for j in live:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            finally:
                self.busy = False
            self.on_batch(len(live), int(x.shape[0]))
            start = 0
            for j in live:
                part = _rows(out, start, start + j.rows)
                start += j.rows
                if not j.future.done():
                    j.future.set_result(part)


def _rows(out: Any, start: int, stop: int) -> Any:
    if isinstance(out, TopK):
        return TopK(out.scores[start:stop], out.classes[start:stop])
    return out[start:stop]


# ---------------------------------------------------------------------------------- metrics
@dataclass
class _Metrics:
    started: float = field(default_factory=time.monotonic)
    status: Counter[int] = field(default_factory=Counter)
    rows: int = 0
    batches: int = 0
    batched_requests: int = 0
    batch_rows: int = 0
    largest_batch: int = 0
    peak_in_flight: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def batch(self, requests: int, rows: int) -> None:
        self.batches += 1
        self.batched_requests += requests
        self.batch_rows += rows
        self.largest_batch = max(self.largest_batch, rows)

    def snapshot(self, *, queue: int, busy: bool) -> dict[str, Any]:
        lat = np.asarray(self.latencies, dtype=np.float64) * 1000
        pct = {f"p{q}_ms": float(np.percentile(lat, q)) if lat.size else None for q in (50, 95, 99)}
        return {
            "uptime_s": time.monotonic() - self.started,
            "requests": sum(self.status.values()),
            "responses": {str(k): v for k, v in sorted(self.status.items())},
            "rows_served": self.rows,
            "forward_passes": self.batches,
            "mean_requests_per_pass": self.batched_requests / self.batches if self.batches else None,
            "mean_rows_per_pass": self.batch_rows / self.batches if self.batches else None,
            "largest_pass_rows": self.largest_batch,
            "queue_depth": queue,
            "peak_in_flight": self.peak_in_flight,
            "forward_running": busy,
            "latency_window": int(lat.size),
            **pct,
        }


# ------------------------------------------------------------------------------------- app
def as_api(model: LabModel | PredictionAPI) -> PredictionAPI:
    if isinstance(model, PredictionAPI):
        return model
    if isinstance(model, LabModel):
        return PredictionAPI(model.eval(), log=False)
    raise TypeError(f"model must be a labkit.LabModel or a PredictionAPI, got {type(model).__name__}")


def _encode(answer: Any, output: str) -> dict[str, Any]:
    if isinstance(answer, TopK):
        return {
            "output": output,
            "labels": answer.classes[:, 0].tolist(),
            "scores": answer.scores.float().tolist(),
            "classes": answer.classes.tolist(),
        }
    if output == "label":
        return {"output": output, "labels": answer.tolist(), "scores": None, "classes": None}
    return {
        "output": output,
        "labels": answer.argmax(1).tolist(),
        "scores": answer.float().tolist(),
        "classes": None,
    }


def create_app(
    model: LabModel | PredictionAPI, *, config: ServeConfig | None = None, name: str = "model"
) -> Any:
    """Build the FastAPI application serving ``model`` (a LabModel or a configured PredictionAPI).

    The API's output coarsening shapes every answer; its rate limit and query budget apply to
    the service as a whole and are checked on each forward pass (a refusal is a 429 for every
    request of that pass). Endpoints: ``POST /predict``, ``GET /health``, ``GET /metrics``.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    api = as_api(model)
    cfg = config if config is not None else ServeConfig()
    metrics = _Metrics()
    shape, value_range = api.model.input_shape, api.model.value_range

    def forward(x: torch.Tensor) -> Any:
        if cfg.dtype == "bfloat16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return api(x)
        return api(x)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inputs: list[Any] = Field(description=f"a batch of inputs, nested lists of shape {shape_text(shape)}")
        dtype: str | None = Field(default=None, description="the dtype the values had on the client")

    state: dict[str, _MicroBatcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher = _MicroBatcher(
            forward,
            window_s=cfg.batch_window_ms / 1000,
            max_rows=cfg.max_batch_rows,
            queue_size=cfg.queue_size,
            on_batch=metrics.batch,
        )
        state["batcher"] = batcher
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"labkit: {name}", lifespan=lifespan)

    def reply(
        status: int, body: dict[str, Any], started: float, headers: dict[str, str] | None = None
    ) -> Any:
        metrics.status[status] += 1
        if status == 200:
            metrics.latencies.append(time.perf_counter() - started)
        return JSONResponse(body, status_code=status, headers=headers)

    def refuse(status: int, message: str, started: float, retry_after: float | None = None) -> Any:
        headers = None if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
        return reply(status, {"detail": message}, started, headers)

    in_flight = [0]  # requests inside the server; only the event loop thread touches it

    async def predict(request: Request) -> Any:
        started = time.perf_counter()
        if in_flight[0] >= cfg.queue_size:
            return refuse(
                503, f"overloaded: {cfg.queue_size} requests already in the server; retry later", started, 1.0
            )
        in_flight[0] += 1
        metrics.peak_in_flight = max(metrics.peak_in_flight, in_flight[0])
        try:
            return await handle(request, started)
        finally:
            in_flight[0] -= 1

    async def handle(request: Request, started: float) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cfg.max_body_bytes:
            return refuse(413, f"body of {declared} bytes is over the limit of {cfg.max_body_bytes}", started)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                return refuse(413, f"body is over the limit of {cfg.max_body_bytes} bytes", started)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            return refuse(422, f'body is not valid JSON ({err}); send {{"inputs": [...]}}', started)
        try:
            req = PredictRequest.model_validate(payload)
        except ValidationError as err:
            where = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())
            return refuse(
                422, f'request does not match the schema ({where}); send {{"inputs": [...]}}', started
            )
        try:
            x = validate_inputs(
                req.inputs,
                input_shape=shape,
                value_range=value_range,
                max_batch=cfg.max_batch,
                dtype=req.dtype,
            )
        except RequestError as err:
            return refuse(err.status, err.message, started)
        batcher = state["batcher"]
        try:
            left = cfg.timeout_s - (time.perf_counter() - started)
            if left <= 0:
                raise TimeoutError
            answer = await batcher.submit(x, timeout=left)
        except asyncio.QueueFull:
            return refuse(
                503, f"overloaded: {cfg.queue_size} requests already queued; retry later", started, 1.0
            )
        except TimeoutError:
            return refuse(504, f"no answer within {cfg.timeout_s:g} s; the server is too busy", started)
        except RateLimitExceeded as err:
            return refuse(429, str(err), started, err.retry_after if math.isfinite(err.retry_after) else None)
        except QueryBudgetExceeded as err:
            return refuse(429, str(err), started)
        except Exception as err:  # the model failed: say so, keep serving
            return refuse(500, f"prediction failed: {type(err).__name__}: {err}", started)
        metrics.rows += int(x.shape[0])
        return reply(200, _encode(answer, api.output), started)

    # fastapi is imported lazily, so the string annotations of this module cannot resolve
    # ``Request`` by name: hand fastapi the real class.
    predict.__annotations__["request"] = Request
    handle.__annotations__["request"] = Request
    app.post("/predict")(predict)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = state.get("batcher")
        return {
            "status": "ok" if batcher is not None else "starting",
            "model": name,
            "input_shape": list(shape),
            "value_range": list(value_range) if value_range is not None else None,
            "num_classes": api.num_classes,
            "output": api.output,
            "queue_depth": batcher.queue.qsize() if batcher is not None else 0,
            "in_flight": in_flight[0],
            "limits": asdict(cfg),
        }

    @app.get("/metrics")
    async def get_metrics() -> dict[str, Any]:
        batcher = state.get("batcher")
        queue = batcher.queue.qsize() if batcher is not None else 0
        snapshot = metrics.snapshot(queue=queue, busy=bool(batcher is not None and batcher.busy))
        return {**snapshot, "in_flight": in_flight[0]}

    return app
