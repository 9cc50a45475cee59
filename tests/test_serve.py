"""labkit serve: a model behind HTTP on loopback (validation, limits, batching, backpressure) and load tests."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter

import httpx
import pytest
import torch
from torch import nn

import labkit as lk
from labkit.cli import main
from labkit.serving import (
    ModelServer,
    PredictionAPI,
    RequestError,
    RequestRejected,
    ServeConfig,
    ServedModel,
    ServerBusy,
    ServerProcess,
    TopK,
    check_loopback,
    validate_inputs,
)
from labkit.stress import degradation_curve, load_test


class Sleepy(nn.Module):
    """A linear layer that sleeps in every forward pass: a slow model for overload tests."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.linear = nn.Linear(16, 5)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return self.linear(x.flatten(1))


def _fixed(net: nn.Module) -> lk.LabModel:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return lk.LabModel(net, input_shape=(1, 4, 4), num_classes=5).eval()


@pytest.fixture
def model() -> lk.LabModel:
    """A fixed 5-class linear model on 1x4x4 images."""
    return _fixed(nn.Sequential(nn.Flatten(), nn.Linear(16, 5)))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def server(model: lk.LabModel):  # type: ignore[no-untyped-def]
    with ModelServer(model, max_batch=32, max_body_bytes=200_000) as running:
        yield running


def _post(url: str, payload: object, *, raw: bytes | None = None) -> httpx.Response:
    body = raw if raw is not None else json.dumps(payload).encode()
    return httpx.post(
        url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=10
    )


def _concurrently(n: int, fn) -> list[object]:  # type: ignore[no-untyped-def]
    out: list[object] = [None] * n

    def run(i: int) -> None:
        out[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


# ------------------------------------------------------------------------------ answers
def test_served_scores_equal_in_process_ones(
    model: lk.LabModel, x: torch.Tensor, server: ModelServer
) -> None:
    """Probabilities over HTTP are the in-process PredictionAPI's, row for row."""
    with server.client() as client:
        served = client(x)
    local = PredictionAPI(model)(x)
    assert isinstance(served, torch.Tensor) and served.shape == (12, 5)
    assert torch.allclose(served, local, atol=1e-6)
    assert torch.equal(served.argmax(1), model(x).argmax(1))


@pytest.mark.parametrize("output", ["label", "top_k"])
def test_output_coarsening_of_the_api_is_served(model: lk.LabModel, x: torch.Tensor, output: str) -> None:
    """A PredictionAPI with label-only or top-k output is served with that output."""
    api = PredictionAPI(model, output=output, k=2, rounding=2)  # type: ignore[arg-type]
    with ModelServer(api) as server, server.client() as client:
        served = client(x)
        raw = _post(server.url, {"inputs": x.tolist()}).json()
    local = PredictionAPI(model, output=output, k=2, rounding=2)(x)  # type: ignore[arg-type]
    if output == "label":
        assert isinstance(served, torch.Tensor) and torch.equal(served, local)
        assert raw["scores"] is None, "a label-only API must not reveal scores"
    else:
        assert isinstance(served, TopK) and isinstance(local, TopK)
        assert torch.equal(served.classes, local.classes)
        assert torch.allclose(served.scores, local.scores, atol=1e-6)
        assert len(raw["scores"][0]) == 2


# --------------------------------------------------------------------------- validation
GOOD = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)).tolist()


def _with(value: float) -> list[object]:
    bad = json.loads(json.dumps(GOOD))
    bad[1][0][2][3] = value
    return bad


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"inputs": []}, "empty batch"),
        ({"inputs": _with(float("nan"))}, "NaN"),
        ({"inputs": _with(float("inf"))}, "NaN or infinite"),
        ({"inputs": _with(-float("inf"))}, "NaN or infinite"),
        ({"inputs": _with(1.5)}, "outside [0.0, 1.0]"),
        ({"inputs": _with(-0.1)}, "outside [0.0, 1.0]"),
        ({"inputs": [[[0.5] * 4] * 4]}, "expected (batch, 1, 4, 4)"),
        ({"inputs": torch.rand(2, 1, 4, 5).tolist()}, "expected (batch, 1, 4, 4)"),
        ({"inputs": torch.rand(2, 16).tolist()}, "expected (batch, 1, 4, 4)"),
        ({"inputs": [[[[True] * 4] * 4]]}, "booleans"),
        ({"inputs": [[[["a"] * 4] * 4]]}, "numbers"),
        ({"inputs": [GOOD[0], [[0.5]]]}, "ragged"),
        ({"inputs": GOOD, "dtype": "uint8"}, "dtype 'uint8' is not accepted"),
        ({"inputs": GOOD, "dtype": "torch.int64"}, "not accepted"),
        ({"inputs": "a stop sign"}, "schema"),
        ({"inputs": None}, "schema"),
        ({"images": GOOD}, "schema"),
        ({"inputs": GOOD, "extra": 1}, "schema"),
    ],
)
def test_invalid_requests_get_422_with_a_clear_message(
    server: ModelServer, payload: object, words: str
) -> None:
    """Every kind of bad input is refused with 422 and a message that names the problem."""
    response = _post(server.url, payload)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_malformed_json_is_422(server: ModelServer) -> None:
    """A body that is not JSON at all is refused, and the server keeps serving."""
    response = _post(server.url, None, raw=b'{"inputs": [[[')
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    assert _post(server.url, {"inputs": GOOD}).status_code == 200


def test_valid_edge_values_pass(server: ModelServer) -> None:
    """Exactly 0 and 1, integers 0/1 and float64 are valid pixels."""
    zeros_ones = [[[[0, 1, 0.0, 1.0]] * 4]]
    assert _post(server.url, {"inputs": zeros_ones}).status_code == 200
    assert _post(server.url, {"inputs": GOOD, "dtype": "float64"}).status_code == 200


def test_validate_inputs_directly() -> None:
    """validate_inputs returns float32 for good input and raises RequestError with the status."""
    out = validate_inputs(GOOD, input_shape=(1, 4, 4))
    assert out.dtype == torch.float32 and out.shape == (2, 1, 4, 4)
    with pytest.raises(RequestError, match="over the limit of 1") as info:
        validate_inputs(GOOD, input_shape=(1, 4, 4), max_batch=1)
    assert info.value.status == 413
    with pytest.raises(RequestError, match="NaN") as info:
        validate_inputs(_with(float("nan")), input_shape=(1, 4, 4))
    assert info.value.status == 422
    unbounded = validate_inputs([[5.0, -3.0]], input_shape=(2,), value_range=None)
    assert unbounded.tolist() == [[5.0, -3.0]]
    with pytest.raises(RequestError, match="too large for float32"):
        validate_inputs([[1e300, 0.0]], input_shape=(2,), value_range=None)


# -------------------------------------------------------------------------------- limits
def test_body_over_the_size_limit_is_413(server: ModelServer) -> None:
    """A body over max_body_bytes is refused with 413 before it is parsed."""
    big = json.dumps({"inputs": GOOD, "pad": "x" * 250_000}).encode()
    response = _post(server.url, None, raw=big)
    assert response.status_code == 413 and "200000" in response.json()["detail"]


def test_batch_over_the_row_limit_is_413(server: ModelServer) -> None:
    """More rows than max_batch is refused with 413; exactly max_batch passes."""
    assert _post(server.url, {"inputs": torch.rand(33, 1, 4, 4).tolist()}).status_code == 413
    assert _post(server.url, {"inputs": torch.rand(32, 1, 4, 4).tolist()}).status_code == 200


def test_overload_sheds_with_503_and_keeps_serving() -> None:
    """A full queue answers 503 with Retry-After instead of piling up; /health still answers."""
    slow = _fixed(Sleepy(0.4))
    with ModelServer(slow, max_batch=1, max_batch_rows=1, queue_size=1, batch_window_ms=0) as server:
        client = server.client()

        def one() -> int:
            response = _post(server.url, {"inputs": GOOD[:1]})
            if response.status_code == 503:
                assert response.headers.get("retry-after") == "1"
            return response.status_code

        def probe() -> int:
            time.sleep(0.05)
            return httpx.get(server.url + "/health", timeout=10).status_code

        busy = threading.Thread(target=lambda: codes.update(_concurrently(8, one)))
        codes: Counter[object] = Counter()
        busy.start()
        assert probe() == 200
        busy.join()
        assert codes[503] >= 1, f"no request was shed: {codes}"
        assert codes[200] >= 1, f"nothing was served: {codes}"
        assert set(codes) <= {200, 503}
        metrics = client.metrics()
        assert metrics["responses"].get("503", 0) == codes[503]
        client.close()


def test_slow_answers_time_out_with_504() -> None:
    """A request not answered within timeout_s gets 504."""
    with ModelServer(_fixed(Sleepy(0.4)), timeout_s=0.1, batch_window_ms=0) as server:
        response = _post(server.url, {"inputs": GOOD})
        assert response.status_code == 504 and "0.1" in response.json()["detail"]
        with server.client() as client, pytest.raises(ServerBusy) as info:
            client(torch.rand(1, 1, 4, 4))
        assert info.value.status == 504


def test_rate_limit_of_the_api_is_429(model: lk.LabModel) -> None:
    """The API's rate limit is enforced over HTTP as 429."""
    api = PredictionAPI(model, rate_limit=0.5, burst=2)
    with ModelServer(api) as server:
        assert _post(server.url, {"inputs": GOOD}).status_code == 200
        response = _post(server.url, {"inputs": GOOD})
        assert response.status_code == 429 and "rate limit" in response.json()["detail"]


def test_micro_batching_joins_concurrent_requests() -> None:
    """Requests that arrive within the window share one forward pass; answers stay per request."""
    slow = _fixed(Sleepy(0.05))
    inputs = [torch.full((1, 1, 4, 4), i / 10) for i in range(6)]
    with ModelServer(slow, batch_window_ms=200) as server, server.client() as client:
        results = {}

        def ask(i: int) -> None:
            results[i] = client(inputs[i])

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = client.metrics()
    assert metrics["forward_passes"] < 6, metrics
    assert metrics["mean_requests_per_pass"] > 1
    for i in range(6):
        expected = torch.softmax(slow(inputs[i]), 1)
        assert torch.allclose(results[i], expected, atol=1e-6), "answers were mixed up between requests"


def test_health_and_metrics(server: ModelServer) -> None:
    """/health describes the model and limits; /metrics counts responses and rows."""
    with server.client() as client:
        health = client.health()
        client(torch.rand(3, 1, 4, 4))
        with pytest.raises(RequestRejected):
            client(torch.rand(0, 1, 4, 4))
        metrics = client.metrics()
    assert health["status"] == "ok" and health["input_shape"] == [1, 4, 4]
    assert health["limits"]["max_batch"] == 32
    assert metrics["responses"] == {"200": 1, "422": 1}
    assert metrics["rows_served"] == 3 and metrics["forward_passes"] == 1
    assert metrics["p50_ms"] is not None and metrics["p50_ms"] > 0


def test_fuzzing_the_http_endpoint_passes(server: ModelServer) -> None:
    """Every fuzz case is refused cleanly or answered sanely over HTTP."""
    with server.client() as client:
        report = lk.stress.fuzz(
            client, (1, 4, 4), num_classes=5, max_batch=32, expect={"list": "either", "numpy": "either"}
        )
    assert report.passed, report.failures
    assert report["huge_batch"].detail.startswith("RequestRejected: HTTP 413")


def test_server_stops_and_frees_the_port(model: lk.LabModel) -> None:
    """After the with-block the server no longer answers and can start again."""
    server = ModelServer(model)
    with server:
        url = server.url
        assert server.running
    assert not server.running
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=2)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


# ------------------------------------------------------------------------------ loopback
@pytest.mark.parametrize("host", ["0.0.0.0", "8.8.8.8", "example.com", "192.168.1.10", ""])
def test_non_loopback_hosts_are_refused(model: lk.LabModel, host: str) -> None:
    """Servers, clients and load tests refuse anything but loopback."""
    with pytest.raises(ValueError, match="loopback"):
        ModelServer(model, host=host)
    with pytest.raises(ValueError):
        ServedModel(f"http://{host}:8000")
    with pytest.raises(ValueError):
        load_test(f"http://{host}:8000", torch.rand(1, 1, 4, 4))


def test_loopback_forms_are_accepted() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert check_loopback(host) == host


def test_cli_serve_refuses_non_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    """labkit serve --host 0.0.0.0 exits with an error instead of listening on every interface."""
    assert main(["serve", "--model", "digits-cnn", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "not a loopback address" in capsys.readouterr().err


def test_config_rejects_bad_settings(model: lk.LabModel) -> None:
    with pytest.raises(ValueError, match="max_batch_rows"):
        ServeConfig(max_batch=64, max_batch_rows=8)
    with pytest.raises(ValueError, match="dtype"):
        ServeConfig(dtype="int8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="queue_size"):
        ServeConfig(queue_size=0)
    with pytest.raises(TypeError, match="unknown setting"):
        ModelServer(model, queue=3)
    with pytest.raises(TypeError, match="LabModel or a PredictionAPI"):
        ModelServer(nn.Linear(2, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- load tests
@pytest.mark.parametrize("separate_process", [True, False])
def test_load_test_measures_every_level(server: ModelServer, separate_process: bool) -> None:
    """One row per level in increasing order; counts add up; percentiles are ordered."""
    report = load_test(
        server,
        torch.rand(1, 1, 4, 4),
        concurrency=[4, 1, 2],
        requests=12,
        duration_s=5,
        separate_process=separate_process,
    )
    assert report.column("concurrency") == [1, 2, 4]
    for row in report.rows:
        assert row["requests"] == 12 == row["ok"] + row["errors"]
        assert sum(row["codes"].values()) == 12 and row["codes"].get(200) == row["ok"]
        assert row["error_rate"] == 0 and row["throughput"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    text = report._repr_markdown_()
    assert "p99 ms" in text and "load average" in text
    fig = report.plot(budget_ms=50)
    assert len(fig.axes) == 3


def test_load_test_sees_shedding_as_errors() -> None:
    """Against a slow server with a tiny queue, the error rate is positive and 503 is counted."""
    with ModelServer(_fixed(Sleepy(0.05)), max_batch_rows=256, queue_size=1, batch_window_ms=0) as server:
        report = load_test(
            server, torch.rand(1, 1, 4, 4), concurrency=[8], requests=24, duration_s=5, warmup=0
        )
    row = report.rows[0]
    assert row["codes"].get(503, 0) > 0 and row["error_rate"] > 0
    assert math.isclose(row["error_rate"], row["errors"] / row["requests"])


def test_load_test_bounds_are_enforced(server: ModelServer) -> None:
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="requests"):
        load_test(server, x, requests=100_000)
    with pytest.raises(ValueError, match="concurrency"):
        load_test(server, x, concurrency=[0])
    with pytest.raises(ValueError, match="duration_s"):
        load_test(server, x, duration_s=3600)
    with pytest.raises(TypeError, match="Tensor"):
        load_test(server, [[0.5]])  # type: ignore[arg-type]
    t0 = time.perf_counter()
    report = load_test(server, x, concurrency=[1], requests=10_000, duration_s=0.3, warmup=0)
    assert time.perf_counter() - t0 < 5, "duration_s must bound a level"
    assert report.rows[0]["requests"] < 10_000


def test_degradation_curve_under_bf16_and_fewer_threads(model: lk.LabModel, x: torch.Tensor) -> None:
    """Each setting is served and measured; full precision agrees with itself exactly."""
    y = model(x).argmax(1)
    settings = {
        "baseline": {},
        "1 thread, no batching": {"threads": 1, "max_batch_rows": 1},
        "bf16": {"dtype": "bfloat16"},
    }
    threads_before = torch.get_num_threads()
    report = degradation_curve(model, x, y, settings=settings, concurrency=2, requests=8)
    assert torch.get_num_threads() == threads_before, "threads must be restored after serving"
    assert report.column("setting") == list(settings)
    assert report.rows[0]["agreement"] == 1.0 == report.rows[0]["accuracy"]
    assert 0.5 <= report.rows[2]["agreement"] <= 1.0
    assert all(r["error_rate"] == 0 for r in report.rows)
    assert "agreement" in report._repr_markdown_()
    assert len(report.plot().axes) == 3


# ------------------------------------------------------------------------------ process
@pytest.mark.slow
def test_cli_server_in_a_subprocess_matches_the_model() -> None:
    """labkit serve in a subprocess answers like the in-process digits model, then stops."""
    model = lk.models.pretrained("digits-cnn", progress=False)
    x, _ = lk.data.load("digits", split="test").batch(16)
    with ServerProcess("digits-cnn", max_batch=16, queue_size=8) as proc, proc.client() as client:
        assert client.health()["limits"]["queue_size"] == 8
        served = client(x)
        assert isinstance(served, torch.Tensor)
        assert torch.equal(served.argmax(1), model(x).argmax(1))
        assert torch.allclose(served, torch.softmax(model(x), 1), atol=1e-5)
        with pytest.raises(RequestRejected, match="413"):
            client(x.repeat(2, 1, 1, 1))
    with pytest.raises(TypeError, match="unknown setting"):
        ServerProcess("digits-cnn", queue=1)
