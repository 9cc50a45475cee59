"""A model behind a real HTTP server on loopback, built to be load-tested and fuzzed.

Why FastAPI and uvicorn: FastAPI is well maintained and asyncio-native, so one event loop can
hold hundreds of waiting requests while a single worker thread runs the forward passes, and it
validates request bodies with pydantic (and publishes an OpenAPI schema at ``/docs``) without
extra code. uvicorn is the reference ASGI server; it runs in a background thread on a socket we
bind ourselves, so port 0 gives a free port with no race, and it shuts down cleanly on request.

What happens to a ``POST /predict`` with body ``{"inputs": [...], "dtype": "float32"}``:

=====  ===================================================================================
code   when
=====  ===================================================================================
413    the body is larger than ``max_body_bytes``, or the batch has more than ``max_batch``
       rows (checked before anything is parsed or queued)
422    not JSON, not the schema, a declared dtype that is not floating point, a ragged list,
       booleans or strings, the wrong shape, an empty batch, NaN or infinity, values outside
       the model's range; the message says what was wrong and what was expected
503    the server already holds ``queue_size`` requests: it sheds load instead of collapsing
       (``Retry-After``)
504    no answer within ``timeout_s``
429    the :class:`~labkit.serving.PredictionAPI` behind it refused (rate limit, query budget)
200    ``{"output", "labels", "scores", "classes"}``, shaped by the API's output coarsening
=====  ===================================================================================

At most ``queue_size`` requests are inside the server at once. A micro-batcher takes the first
waiting one, waits up to ``batch_window_ms`` for more, joins them into one batch of at most
``max_batch_rows`` rows and runs a single forward pass through the
:class:`~labkit.serving.PredictionAPI`, then splits the answer. ``GET /health`` and
``GET /metrics`` answer even while a forward pass runs.

Examples
--------
>>> import torch
>>> from torch import nn
>>> import labkit as lk
>>> model = lk.LabModel(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), input_shape=(1, 2, 2),
...                     num_classes=3).eval()
>>> with ModelServer(model, max_batch=8) as server:
...     client = server.client()
...     labels = client(torch.rand(5, 1, 2, 2)).argmax(1)
...     code = client.post_json({"inputs": []}).status_code
>>> labels.shape, code
(torch.Size([5]), 422)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import torch

from labkit.contract import LabModel
from labkit.serving.api import PredictionAPI, QueryBudgetExceeded, RateLimitExceeded, TopK
from labkit.utils import check_images

__all__ = [
    "ModelServer",
    "RequestError",
    "RequestRejected",
    "ServeConfig",
    "ServedModel",
    "ServerBusy",
    "ServerProcess",
    "check_loopback",
    "create_app",
    "validate_inputs",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
LOOPBACK_NAMES = ("localhost",)


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ServeConfig:
    """Limits and knobs of a served model.

    Parameters
    ----------
    max_batch:
        Most rows one request may hold; more is refused with 413.
    max_body_bytes:
        Largest request body; more is refused with 413 before it is parsed.
    batch_window_ms:
        How long the micro-batcher waits for more requests after the first one (0: no wait).
    max_batch_rows:
        Most rows in one forward pass (the micro-batch); at least ``max_batch``.
    queue_size:
        Requests the server holds at once (being read and validated, waiting for a forward
        pass, or in one); one more gets 503 at once. By Little's law a server completing
        ``r`` requests per second answers a full queue in ``queue_size / r`` seconds, so a
        queue longer than ``r * timeout_s`` only holds requests that will time out.
    timeout_s:
        A request not answered within this many seconds of its arrival gets 504.
    threads:
        Intra-op threads for torch (``None``: leave as is). torch has one thread pool per
        process: an in-process server sets it for the whole process while it runs.
    dtype:
        ``"float32"``, or ``"bfloat16"`` to run the forward pass under CPU autocast (lower
        precision, less memory traffic).
    """

    max_batch: int = 256
    max_body_bytes: int = 4_000_000
    batch_window_ms: float = 2.0
    max_batch_rows: int = 512
    queue_size: int = 64
    timeout_s: float = 5.0
    threads: int | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_body_bytes", "max_batch_rows", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_batch_rows < self.max_batch:
            raise ValueError(
                f"max_batch_rows ({self.max_batch_rows}) must be at least max_batch ({self.max_batch}): "
                "a forward pass must fit the largest request"
            )
        if not (isinstance(self.batch_window_ms, int | float) and 0 <= self.batch_window_ms <= 1000):
            raise ValueError(f"batch_window_ms must be between 0 and 1000, got {self.batch_window_ms!r}")
        if not (isinstance(self.timeout_s, int | float) and 0 < self.timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")


# ------------------------------------------------------------------------------------ validation
class RequestError(Exception):
    """A request the server refuses, with its HTTP status and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


def _shape_text(shape: Sequence[int]) -> str:
    return "(batch, " + ", ".join(str(s) for s in shape) + ")"


def validate_inputs(
    inputs: object,
    *,
    input_shape: Sequence[int],
    value_range: tuple[float, float] | None = (0.0, 1.0),
    max_batch: int = 256,
    dtype: str | None = None,
) -> torch.Tensor:
    """Turn the decoded ``inputs`` of a request into a float32 batch, or raise :class:`RequestError`.

    Parameters
    ----------
    inputs:
        The JSON-decoded ``inputs`` field: a nested list of numbers of shape ``(N, *input_shape)``.
    input_shape, value_range:
        The model's contract.
    max_batch:
        Most rows allowed; more raises with status 413.
    dtype:
        The dtype the client declared (``"float32"``, ``"torch.uint8"``, ...); only floating
        point types pass, since integer pixels are almost always 0..255 instead of [0, 1].

    Returns
    -------
    torch.Tensor
        The batch as float32, after every check passed.

    Examples
    --------
    >>> validate_inputs([[[0.0, 1.0]]], input_shape=(1, 2)).shape
    torch.Size([1, 1, 2])
    >>> validate_inputs([], input_shape=(1, 2))
    Traceback (most recent call last):
    ...
    labkit.serving.server.RequestError: HTTP 422: empty batch: send at least one input of shape (1, 2)
    """
    shape = tuple(int(s) for s in input_shape)
    if dtype is not None:
        name = str(dtype).removeprefix("torch.")
        if name not in FLOAT_DTYPES:
            raise RequestError(
                422,
                f"dtype {dtype!r} is not accepted: send floating-point values ({', '.join(FLOAT_DTYPES)}) "
                "scaled to the model's range, not integer pixels",
            )
    if not isinstance(inputs, list):
        raise RequestError(
            422, f"inputs must be a nested list of shape {_shape_text(shape)}, got {type(inputs).__name__}"
        )
    if len(inputs) == 0:
        raise RequestError(422, f"empty batch: send at least one input of shape {shape}")
    if len(inputs) > max_batch:
        raise RequestError(
            413, f"batch of {len(inputs)} inputs is over the limit of {max_batch} per request; split it"
        )
    try:
        arr = np.asarray(inputs)
    except (ValueError, TypeError, OverflowError) as err:
        raise RequestError(
            422, f"inputs are ragged or not numbers ({err}); expected shape {_shape_text(shape)}"
        ) from None
    if arr.dtype.kind == "b":
        raise RequestError(422, "inputs are booleans; send numbers scaled to the model's range")
    if arr.dtype.kind not in "iuf":
        raise RequestError(
            422,
            f"inputs must be numbers in a regular nested list of shape {_shape_text(shape)} "
            f"(found {'ragged lists or mixed types' if arr.dtype.kind == 'O' else 'non-numbers'})",
        )
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise RequestError(422, f"inputs have shape {tuple(arr.shape)}, expected {_shape_text(shape)}")
    x = torch.from_numpy(arr.astype(np.float64))
    try:
        check_images(x, name="inputs", shape=shape, value_range=value_range)
    except ValueError as err:
        raise RequestError(422, str(err)) from None
    if value_range is None and bool((x.abs() > torch.finfo(torch.float32).max).any()):
        raise RequestError(422, "inputs hold values too large for float32")
    return x.float()


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
        inputs: list[Any] = Field(
            description=f"a batch of inputs, nested lists of shape {_shape_text(shape)}"
        )
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


# ---------------------------------------------------------------------------------- loopback
def check_loopback(host: str, *, what: str = "host") -> str:
    """Return ``host`` if it is a loopback address (127.0.0.0/8, ::1, localhost), else raise.

    Servers and load generators in this course only ever talk to the machine they run on:
    load-testing someone else's service is an attack on it.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"{what} must be a loopback address such as 127.0.0.1, got {host!r}")
    bare = host.strip("[]")
    if bare.lower() in LOOPBACK_NAMES:
        return host
    try:
        if ipaddress.ip_address(bare).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(
        f"{what} {host!r} is not a loopback address: labkit only serves and load-tests on this machine "
        "(use 127.0.0.1)"
    )


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must look like http://127.0.0.1:PORT, got {url!r}")
    check_loopback(parts.hostname, what="url host")
    return url.rstrip("/")


def _bind(host: str, port: int) -> socket.socket:
    check_loopback(host)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535 (0: any free port), got {port!r}")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets of that protocol,
    # and without it every keep-alive request waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as err:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {err}") from None
    sock.listen(128)
    return sock


def _uvicorn_server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on")
    return uvicorn.Server(config)


# ----------------------------------------------------------------------------------- client
class RequestRejected(ValueError):
    """The server refused the request as invalid (413, 422): the caller must change it."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class ServerBusy(RuntimeError):
    """The server could not answer now (429, 503, 504): the same request may pass later."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status}: {message}")


def _json_default(obj: object) -> Any:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot send a {type(obj).__name__} as JSON")


def encode_request(x: object) -> bytes:
    """The JSON body a client sends for ``x`` (a tensor declares its dtype)."""
    if isinstance(x, torch.Tensor):
        values = x.real if x.is_complex() else x
        payload: dict[str, Any] = {"inputs": values.detach().cpu().tolist()}
        payload["dtype"] = str(x.dtype).removeprefix("torch.")
    else:
        payload = {"inputs": x}
    try:
        return json.dumps(payload, default=_json_default).encode()
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot encode the inputs as JSON ({err}); send a torch.Tensor") from None


class ServedModel:
    """A client that calls a served model like a local one: ``client(x)`` returns its answer.

    Answers come back in the API's output form: probabilities ``(N, C)``, a
    :class:`~labkit.serving.TopK`, or labels ``(N,)``. Refusals raise :class:`RequestRejected`
    (413, 422, a ``ValueError``) or :class:`ServerBusy` (429, 503, 504); anything else raises
    ``RuntimeError``. Only loopback URLs are accepted.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        import httpx

        self.url = check_url(url)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def post_json(self, payload: object) -> Any:
        """POST any JSON-able payload to ``/predict`` and return the raw ``httpx.Response``."""
        return self._http.post("/predict", content=json.dumps(payload).encode(), headers=_JSON)

    def predict(self, x: object) -> torch.Tensor | TopK:
        """Send ``x`` and return the answer (see the class docstring)."""
        response = self._http.post("/predict", content=encode_request(x), headers=_JSON)
        body = _body(response)
        if response.status_code == 200:
            if body["output"] == "label":
                return torch.tensor(body["labels"], dtype=torch.long)
            if body["output"] == "top_k":
                return TopK(torch.tensor(body["scores"]), torch.tensor(body["classes"], dtype=torch.long))
            return torch.tensor(body["scores"])
        detail = str(body.get("detail", response.text))
        if response.status_code in (413, 422):
            raise RequestRejected(response.status_code, detail)
        if response.status_code in (429, 503, 504):
            after = response.headers.get("retry-after")
            raise ServerBusy(response.status_code, detail, retry_after=float(after) if after else None)
        raise RuntimeError(f"HTTP {response.status_code}: {detail}")

    __call__ = predict

    def health(self) -> dict[str, Any]:
        """The server's ``/health`` answer."""
        return dict(self._http.get("/health").json())

    def metrics(self) -> dict[str, Any]:
        """The server's ``/metrics`` answer: responses by status, forward passes, latency."""
        return dict(self._http.get("/metrics").json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServedModel({self.url!r})"


_JSON = {"content-type": "application/json"}


def _body(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text}
    return body if isinstance(body, dict) else {"detail": str(body)}


# ----------------------------------------------------------------------------------- servers
class ModelServer:
    """Serve a model over HTTP on loopback from a background thread; a context manager.

    Parameters
    ----------
    model:
        A :class:`~labkit.LabModel` (served with full scores) or a configured
        :class:`~labkit.serving.PredictionAPI`.
    config:
        A :class:`ServeConfig`; keyword arguments override its fields
        (``ModelServer(model, queue_size=4)``).
    host, port:
        Loopback only; port 0 (the default) takes a free port. See ``server.url``.
    name:
        Shown by ``/health``.

    Examples
    --------
    ``with ModelServer(model, max_batch=64) as server: server.client()(x)``; ``server.url`` is
    the address to load-test.
    """

    def __init__(
        self,
        model: LabModel | PredictionAPI,
        *,
        config: ServeConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "model",
        **overrides: Any,
    ) -> None:
        self.api = as_api(model)
        base = config if config is not None else ServeConfig()
        unknown = set(overrides) - set(asdict(base))
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; ServeConfig has {sorted(asdict(base))}")
        self.config = replace(base, **overrides)
        self.host = check_loopback(host)
        self.requested_port = port
        self.name = name
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._threads_before: int | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the server is not running; call start() or use it in a with-block")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, timeout_s: float = 15.0) -> ModelServer:
        """Bind, start serving in a daemon thread, and return once requests are answered."""
        if self.running:
            raise RuntimeError(f"already serving at {self.url}")
        self._sock = _bind(self.host, self.requested_port)
        if self.config.threads is not None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.config.threads)
        self._server = _uvicorn_server(create_app(self.api, config=self.config, name=self.name))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="labkit-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start within {timeout_s:g} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and free the port (safe to call twice)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
        self._server = self._thread = self._sock = self._threads_before = None

    def client(self, *, timeout_s: float = 30.0) -> ServedModel:
        """A :class:`ServedModel` pointed at this server."""
        return ServedModel(self.url, timeout_s=timeout_s)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._sock is not None else "stopped"
        return f"ModelServer({self.name!r}, {where})"


def serve_forever(
    model: LabModel | PredictionAPI,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "model",
    config: ServeConfig | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the calling thread until interrupted (what ``labkit serve`` runs).

    ``ready`` is called with the URL once the socket listens.
    """
    cfg = config if config is not None else ServeConfig()
    sock = _bind(host, port)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    server = _uvicorn_server(create_app(model, config=cfg, name=name))
    bound = sock.getsockname()[1]
    if ready is not None:
        ready(f"http://{host}:{bound}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


class ServerProcess:
    """Run ``labkit serve`` for a zoo model in a subprocess on loopback; a context manager.

    The child process has its own torch thread pool and its own GIL, like a real deployment.

    Parameters
    ----------
    model:
        A zoo model name, e.g. ``"digits-cnn"``.
    host:
        Loopback only.
    options:
        :class:`ServeConfig` fields, passed as command-line options.
    """

    def __init__(self, model: str, *, host: str = "127.0.0.1", **options: Any) -> None:
        unknown = set(options) - set(asdict(ServeConfig()))
        if unknown:
            raise TypeError(
                f"unknown setting(s) {sorted(unknown)}; ServeConfig has {sorted(asdict(ServeConfig()))}"
            )
        replace(ServeConfig(), **options)  # validate here, not in the child
        self.model = model
        self.host = check_loopback(host)
        self.options = options
        self.url: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._errors: Any = None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "labkit.cli",
            "serve",
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            "0",
        ]
        for key, value in self.options.items():
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        return cmd

    def start(self, *, timeout_s: float = 60.0) -> ServerProcess:
        """Start the child and wait until it prints its URL and answers ``/health``."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: it never fills up
        self._proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=self._errors, text=True, env=env
        )
        line = self._proc.stdout.readline() if self._proc.stdout is not None else ""
        if not line.startswith("serving "):  # the child exited before it could listen
            self._proc.wait(timeout=timeout_s)
            self._errors.seek(0)
            err = self._errors.read()
            self.stop()
            raise RuntimeError(f"labkit serve did not start: {(line + err).strip()[-500:]}")
        self.url = line.split(" at ", 1)[1].strip()
        deadline = time.monotonic() + timeout_s
        with ServedModel(self.url, timeout_s=2.0) as client:
            while True:
                try:
                    if client.health().get("status") == "ok":
                        break
                except Exception:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("labkit serve exited or did not answer /health") from None
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._errors is not None:
            self._errors.close()
        self._proc = self._errors = None

    def client(self, *, timeout_s: float = 30.0) -> ServedModel:
        if self.url is None:
            raise RuntimeError("the server process is not running; call start()")
        return ServedModel(self.url, timeout_s=timeout_s)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
