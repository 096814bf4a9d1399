"""Concurrent HTTP clients with keep-alive connections, and the statistics of their latencies."""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class Client:
    """One keep-alive connection to the API, as one HTTP client would hold it."""

    def __init__(self, port: int, token: str) -> None:
        self._port = port
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """Send one request; returns (status, decoded JSON body)."""
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=body, headers=self._headers)
                response = self._connection.getresponse()
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
            except (ConnectionError, http.client.HTTPException):
                # The server closed an idle keep-alive connection: reconnect once.
                self._connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._connection.close()


@dataclass
class Run:
    """What a load run measured: per-request latencies (s), wall time (s), unexpected answers."""

    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary(self, count: int) -> dict[str, float | int]:
        """Throughput of `count` units over the run, latency percentiles in ms, error count."""
        return {
            "per_s": count / self.seconds if self.seconds else 0.0,
            "seconds": self.seconds,
            "requests": len(self.latencies),
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "errors": len(self.errors),
        }


def run(
    port: int,
    token: str,
    items: Sequence[T],
    send: Callable[[Client, T], str | None],
    *,
    clients: int,
) -> Run:
    """Send every item from `clients` concurrent connections; `send` returns an error or None."""
    clients = max(1, min(clients, len(items)))
    result = Run()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(share: Sequence[T]) -> None:
        connection = Client(port, token)
        latencies, errors = [], []
        start.wait()
        for item in share:
            began = time.perf_counter()
            try:
                error = send(connection, item)
            except Exception as e:  # a broken connection is a result, not a crash
                error = f"{type(e).__name__}: {e}"
            latencies.append(time.perf_counter() - began)
            if error is not None:
                errors.append(error)
        connection.close()
        with lock:
            result.latencies += latencies
            result.errors += errors

    threads = [
        threading.Thread(target=client, args=(items[i::clients],), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def expect(status: int, wanted: int, body: Any) -> str | None:
    """None if `status` is the wanted one, else a short description."""
    return None if status == wanted else f"{status}: {json.dumps(body)[:200]}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linearly interpolated (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
