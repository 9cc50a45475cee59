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

The parts live in modules of their own: :mod:`labkit.serving.validation` (the limits and the
checks on a request), :mod:`labkit.serving.app` (the FastAPI application and its micro-batcher),
:mod:`labkit.serving.client` (:class:`ServedModel` and its errors) and
:mod:`labkit.serving.loopback`; this module runs the application, in a thread
(:class:`ModelServer`) or in a subprocess (:class:`ServerProcess`), and re-exports their names.

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

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import torch

from labkit.contract import LabModel
from labkit.serving.api import PredictionAPI
from labkit.serving.app import as_api as as_api
from labkit.serving.app import create_app as create_app
from labkit.serving.client import RequestRejected as RequestRejected
from labkit.serving.client import ServedModel as ServedModel
from labkit.serving.client import ServerBusy as ServerBusy
from labkit.serving.client import encode_request as encode_request
from labkit.serving.loopback import check_loopback as check_loopback
from labkit.serving.loopback import check_url as check_url
from labkit.serving.validation import RequestError as RequestError
from labkit.serving.validation import ServeConfig as ServeConfig
from labkit.serving.validation import validate_inputs as validate_inputs

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
