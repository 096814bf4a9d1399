"""The fault tier's deployment and the tools to break it.

`FaultDeployment` is a `ProcessDeployment` (the real `courier` processes) that can also
publish raw messages to its vhost and check the promises (docs/design.md) once the system
has settled; `frozen` stops processes with SIGSTOP for a while. The private RabbitMQ and PostgreSQL
nodes a test may take down are in `tests.faults.private_services`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from dramatiq import Message

from tests.support import invariants
from tests.support.deployment import ProcessDeployment
from tests.support.processes import signal_all

#: A scripted upstream answer: 200 at once.
OK = {"status": 200, "body": {"ok": True}}


def slow(seconds: float, status: int = 200, body: Any = None) -> dict[str, Any]:
    """An upstream answer delayed by `seconds`: jobs are caught mid-flight."""
    return {"status": status, "body": {"ok": True} if body is None else body, "delay_s": seconds}


def worker_pid(attempt_worker: str) -> int:
    """The pid in an attempt's `worker` column (`host:pid`)."""
    return int(attempt_worker.rsplit(":", 1)[1])


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """Freeze processes (SIGSTOP) for the block; they go on (SIGCONT) after it, even if it fails."""
    signal_all(pids, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_all(pids, signal.SIGCONT)


class FaultDeployment(ProcessDeployment):
    """A deployment to inject faults into: raw messages in, the promises checked at the end."""

    # ------------------------------------------------------------------ the broker

    def publish(self, body: bytes, queue: str = "sync", **kwargs: Any) -> None:
        """Publish raw bytes to a queue of this deployment's vhost."""
        self.broker.publish(self.vhost, queue, body, **kwargs)

    def message_for(self, job_id: str, actor: str = "customer_sync", **options: Any) -> Message:
        """A message naming a job, as Courier's publisher builds it (the body names only the id)."""
        return Message(
            queue_name="sync",
            actor_name=actor,
            args=(job_id,),
            kwargs={},
            options={"broker_priority": 0, **options},
            message_id=str(uuid.uuid4()),
        )

    # ------------------------------------------------------------------ the promises

    def settle_and_check(
        self,
        accepted: Iterable[str],
        *,
        timeout: float = 60,
        allow_waiting: bool = False,
        effects_exactly_once: bool = False,
    ) -> invariants.Report:
        """Let the system settle, then check docs/design.md's promises in SQL, upstream, broker."""
        with self.sql() as conn:
            invariants.settle(conn, timeout=timeout, allow_waiting=allow_waiting)
            report = invariants.check(
                conn,
                accepted=accepted,
                upstream=self.upstream,
                broker=self.broker,
                vhost=self.vhost,
                allow_waiting=allow_waiting,
                effects_exactly_once=effects_exactly_once,
            )
        print(f"[{self.name}] {report.summary()}")
        if report.duplicate_effects:
            print(f"[{self.name}] written more than once (same key): {report.duplicate_effects}")
        return report


class Load:
    """Clients submitting jobs one by one, recording every answer."""

    def __init__(self, deployment: FaultDeployment, clients: int = 3) -> None:
        self.deployment = deployment
        self.answers: list[tuple[float, int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self, n: int) -> None:
        with self.deployment.http(timeout=60) as http:
            i = 0
            while not self._stop.is_set():
                response = http.post(
                    "/v1/jobs",
                    json={"type": "customer_sync", "entity_id": f"c_load_{n}_{i}"},
                    headers=self.deployment.headers,
                )
                with self._lock:
                    self.answers.append((time.monotonic(), response.status_code, response.json()))
                i += 1

    def count(self, status: int, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for t, s, _ in self.answers if s == status and t >= since)

    def accepted(self) -> list[str]:
        """The ids of the jobs answered 202 so far."""
        with self._lock:
            return [body["id"] for _, s, body in self.answers if s == 202]


def elapsed(since: float) -> float:
    """Seconds since a `time.monotonic()` reading."""
    return time.monotonic() - since
