"""The load generator behind :func:`labkit.stress.load_test`.

It imports neither labkit nor torch (nor an HTTP library), so it starts in a fraction of a
second as its own process (``python -I _loadgen.py`` with a JSON job on stdin, rows as JSON on
stdout). A load generator in the server's own process shares its interpreter lock and measures
mostly itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation (NumPy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends a prepared request and reads the status.

    A few dozen lines of asyncio instead of a general HTTP client: a load generator must cost
    far less CPU per request than the server it measures, or it measures itself.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, request: bytes) -> int:
        await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status


def _request_bytes(url: str, path: str, body: bytes) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    shown = f"[{host}]" if ":" in host else host
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {shown}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return host, port, head.encode() + body


async def one_level(
    url: str, body: bytes, *, concurrency: int, requests: int, duration_s: float, timeout_s: float
) -> dict[str, Any]:
    """``concurrency`` clients share ``requests`` requests (or ``duration_s`` seconds)."""
    host, port, request = _request_bytes(url, "/predict", body)
    connections = [_Connection(host, port) for _ in range(concurrency)]
    # open the connections first, so connection set-up is not counted as latency
    await asyncio.gather(*(c.open() for c in connections), return_exceptions=True)
    issued = 0
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(connection: _Connection) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.send(request), timeout_s)
            except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                connection.close()  # the connection is in an unknown state: start a new one
                status = 0
            if status == 200:
                latencies.append(1000 * (time.perf_counter() - t0))
            codes[status] += 1

    await asyncio.gather(*(worker(c) for c in connections))
    seconds = time.perf_counter() - start
    for c in connections:
        c.close()
    total = sum(codes.values())
    ok = codes.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "error_rate": (total - ok) / total if total else math.nan,
        "throughput": ok / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "seconds": seconds,
        "codes": dict(codes),
    }


async def run(
    url: str,
    body: bytes,
    *,
    levels: list[int],
    requests: int,
    duration_s: float,
    timeout_s: float,
    warmup: int,
) -> list[dict[str, Any]]:
    """Warm up with ``warmup`` sequential requests, then measure every level in turn."""
    if not is_loopback_url(url):
        raise ValueError(f"refusing to load-test {url!r}: not a loopback address")
    if warmup:
        await one_level(url, body, concurrency=1, requests=warmup, duration_s=duration_s, timeout_s=timeout_s)
    return [
        await one_level(
            url, body, concurrency=c, requests=requests, duration_s=duration_s, timeout_s=timeout_s
        )
        for c in levels
    ]


def main() -> None:
    job = json.load(sys.stdin)
    rows = asyncio.run(
        run(
            job["url"],
            job["body"].encode(),
            levels=[int(c) for c in job["levels"]],
            requests=int(job["requests"]),
            duration_s=float(job["duration_s"]),
            timeout_s=float(job["timeout_s"]),
            warmup=int(job["warmup"]),
        )
    )
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
