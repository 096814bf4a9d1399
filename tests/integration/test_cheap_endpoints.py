"""The unauthenticated endpoints stay cheap: scrapes share one snapshot, /readyz fails fast."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from api.resources.health import PROBE_MAX_AGE_S
from courier.broker import publishing_broker
from courier.wsgi import app_for
from tests.support.polling import wait_for
from tests.support.stack import build

pytestmark = pytest.mark.integration


@contextmanager
def statements_on(engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends meanwhile."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def all_at_once(calls: list[Callable[[], testing.Result]]) -> list[testing.Result]:
    """Run the calls from as many threads, released together."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], testing.Result]) -> testing.Result:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def queued_jobs(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "courier_jobs" and sample.labels["status"] == "queued":
                return sample.value
    return 0.0


def test_concurrent_scrapes_of_metrics_and_stats_cost_one_computation(stack):
    operator = stack.token("ops", "operator")
    scrapes = [lambda: stack.client.simulate_get("/metrics")] * 4 + [
        lambda: stack.client.simulate_get("/v1/stats", headers=operator)
    ] * 4
    with statements_on(stack.engine) as seen:
        answers = all_at_once(scrapes)
    assert [a.status_code for a in answers] == [200] * 8
    counts = [s for s in seen if "GROUP BY jobs.type, jobs.status" in s]
    assert len(counts) == 1, f"{len(counts)} counting queries for 8 concurrent scrapes"


def test_one_snapshot_reads_the_jobs_once_and_the_attempts_once(stack):
    with statements_on(stack.engine) as seen:
        assert stack.client.simulate_get("/metrics").status_code == 200
    assert len([s for s in seen if "FROM jobs GROUP BY" in s]) == 1
    assert len([s for s in seen if "FROM attempts" in s]) == 1, "\n\n".join(seen)


def test_the_shared_figures_are_at_most_their_max_age_old(settings, engine, sessions):
    fresh = build(settings.replace(stats_max_age_s=0.3), engine, sessions)
    try:
        assert queued_jobs(fresh.client.simulate_get("/metrics").text) == 0
        body = {"type": "customer_sync", "entity_id": "c_1"}
        assert fresh.post("/v1/jobs", body, fresh.token())[0] == 202
        wait_for(
            lambda: queued_jobs(fresh.client.simulate_get("/metrics").text) == 1,
            timeout=5,
            what="the new job in the next snapshot",
        )
    finally:
        fresh.close()


@contextmanager
def silent_broker(*, accept: bool) -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port that never speaks AMQP: accepting connections and saying nothing, or never
    accepting at all (a full backlog then drops further SYNs, as a black-holed address does).
    Yields the port and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # the listener was closed
                return

    if accept:
        threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for connection in accepted:
            connection.close()


def api_on_broker(settings, sessions, port: int) -> testing.TestClient:
    on_port = settings.replace(broker_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")
    return testing.TestClient(
        app_for(on_port, broker=publishing_broker(on_port), sessions=sessions)
    )


@pytest.mark.parametrize("accept", [True, False], ids=["accepts-then-silent", "never-accepts"])
def test_readyz_answers_within_a_second_when_the_broker_never_answers(settings, sessions, accept):
    with silent_broker(accept=accept) as (port, _):
        client = api_on_broker(settings, sessions, port)
        for _ in range(2):  # the first probe, then one after its answer has expired
            began = time.monotonic()
            answers = all_at_once([lambda: client.simulate_get("/readyz")] * 4)
            took = time.monotonic() - began
            assert took < 1.0, f"/readyz took {took:.2f}s with the broker silent"
            for answer in answers:
                assert answer.status_code == 503
                assert answer.json["checks"] == {"database": "ok", "broker": "unavailable"}
            time.sleep(PROBE_MAX_AGE_S)  # let the cached answer expire


class CountingForwarder:
    """A TCP forwarder to RabbitMQ that counts the connections made through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.opened = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
            except OSError:
                return
            self.opened += 1
            server = socket.create_connection(self._target)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with closing(source), closing(sink):
            try:
                while chunk := source.recv(65536):
                    sink.sendall(chunk)
            except OSError:
                pass

    def close(self) -> None:
        self._listener.close()


def test_readyz_opens_no_broker_connection_per_call(settings, sessions, vhost):
    forwarder = CountingForwarder(("127.0.0.1", 5672))
    try:
        on_port = settings.replace(
            broker_url=settings.broker_url.replace(":5672/", f":{forwarder.port}/")
        )
        client = testing.TestClient(
            app_for(on_port, broker=publishing_broker(on_port), sessions=sessions)
        )
        began = time.monotonic()
        for _ in range(20):
            answer = client.simulate_get("/readyz")
            assert answer.status_code == 200, answer.text
        took = time.monotonic() - began
        allowed = 1 + int(took / PROBE_MAX_AGE_S)
        assert 1 <= forwarder.opened <= allowed, (
            f"{forwarder.opened} broker connections for 20 calls in {took:.1f}s"
        )
    finally:
        forwarder.close()
