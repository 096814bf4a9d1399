"""`python -m bench.waiters`: what waiting requests cost the database.

200 long polls (`GET /v1/jobs/{id}?wait_s=60` with If-None-Match) wait in one API process,
on 200 jobs or all on one job; then one transaction changes those jobs as a worker's group
commit does (claims them and announces them). It counts the statements the API process
sends meanwhile (an event listener on its engine), how long the waiters took to answer
after the commit, and the connections they held while waiting. A third run releases 200
waiters through a burst of 10 such transactions of 20 jobs each.

The API is the real application (`courier.wsgi.app_for`) called by 200 threads, as
gunicorn's threads call it, on a scratch PostgreSQL database.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dramatiq.brokers.stub import StubBroker
from falcon import testing
from sqlalchemy import Engine, event

from api.job_watch import JobWatch
from bench import scratch_database
from courier.settings import Settings
from courier.wsgi import app_for
from store import migrate, tokens, transitions
from store.db import make_engine, make_sessionmaker


class Statements:
    """Counts the statements an engine sends, from `reset()` on."""

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        with self._lock:
            self.count += 1

    def reset(self) -> None:
        with self._lock:
            self.count = 0


class Bench:
    """One API on a scratch database, its statement counter and a writer of its own."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, pool_size=20)
        self.writer = make_engine(url, pool_size=1)
        self.watch = JobWatch(self.engine)
        settings = Settings(database_url=url, broker_url="memory://")
        sessions = make_sessionmaker(self.engine)
        broker = StubBroker()
        broker.declare_queue("sync")  # keeps what the API publishes; nothing consumes it
        self.client = testing.TestClient(
            app_for(settings, broker=broker, sessions=sessions, watch=self.watch)
        )
        with sessions.begin() as session:
            secret = tokens.create(session, tenant="bench", role="client", name="bench")
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.statements = Statements(self.engine)

    def submit(self, count: int) -> list[str]:
        body = {
            "jobs": [{"type": "customer_sync", "entity_id": uuid.uuid4().hex} for _ in range(count)]
        }
        items = self.client.simulate_post("/v1/jobs/batch", json=body, headers=self.headers)
        return [item["job"]["id"] for item in items.json["items"]]

    def wait(self, job_id: str) -> tuple[float, int]:
        """One long poll that waits for the job to differ from its version now."""
        etag = self.client.simulate_get(f"/v1/jobs/{job_id}", headers=self.headers).headers["ETag"]
        response = self.client.simulate_get(
            f"/v1/jobs/{job_id}",
            params={"wait_s": 60},
            headers={**self.headers, "If-None-Match": etag},
        )
        assert response.status_code == 200 and response.headers["ETag"] != etag, response.text
        return time.monotonic(), response.status_code

    def change(self, job_ids: list[str]) -> float:
        """Claim the jobs in one transaction, which announces them as a worker's claim does."""
        ids = [uuid.UUID(i) for i in job_ids]
        with self.writer.begin() as db:
            claimed = transitions.claim(db, ids, worker="bench:1", lease_s=300)
        assert len(claimed) == len(set(ids)), "not every job was claimable"
        return time.monotonic()

    def run(self, targets: list[str], batches: list[list[str]]) -> dict[str, Any]:
        """Start a waiter per target, then change `batches` back to back."""
        with ThreadPoolExecutor(len(targets)) as pool:
            waiting: list[Future[tuple[float, int]]] = [pool.submit(self.wait, t) for t in targets]
            self._until(lambda: self.watch.following() == len(set(targets)), "waiters follow")
            self._settle()
            self.statements.reset()
            idle_s = 3.0
            time.sleep(idle_s)  # a quiet spell: waiting alone must cost nothing
            idle = self.statements.count
            held = self.engine.pool.checkedout()  # type: ignore[attr-defined]
            self.statements.reset()
            committed: dict[str, float] = {}
            for batch in batches:
                committed |= dict.fromkeys(batch, self.change(batch))
            answered = [w.result(timeout=120)[0] for w in waiting]
        statements = self.statements.count
        # From the commit of the transaction that changed the waiter's job.
        latency = sorted((a - committed[t]) * 1000 for t, a in zip(targets, answered, strict=True))
        return {
            "waiters": len(targets),
            "jobs": len(set(targets)),
            "change_transactions": len(batches),
            "statements_while_idle": idle,
            "idle_s": idle_s,
            "connections_held_while_waiting": held,
            "statements_for_the_changes": statements,
            "statements_per_change_transaction": round(statements / len(batches), 2),
            "release_after_commit_ms": {
                "p50": round(statistics.median(latency), 1),
                "max": round(latency[-1], 1),
            },
        }

    def _settle(self) -> None:
        # Every waiter has made its two reads and waits: no statements for a moment.
        before = -1
        while before != self.statements.count:
            before = self.statements.count
            time.sleep(0.5)

    @staticmethod
    def _until(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.watch.stop()
        self.engine.dispose()
        self.writer.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.waiters", description=__doc__)
    p.add_argument("--waiters", type=int, default=200)
    p.add_argument("--database", default="courier_bench_waiters")
    args = p.parse_args(argv)
    scratch_database.recreate(args.database)
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}"
    schema = make_engine(url, pool_size=1)
    migrate.upgrade(schema)
    schema.dispose()
    bench = Bench(url)
    try:
        n = args.waiters
        results = {}
        jobs = bench.submit(n)
        results["one_waiter_per_job"] = bench.run(jobs, [jobs])
        [one] = bench.submit(1)
        results["all_on_one_job"] = bench.run([one] * n, [[one]])
        jobs = bench.submit(n)
        burst = [jobs[i : i + n // 10] for i in range(0, n, n // 10)]
        results["one_waiter_per_job_burst_of_10"] = bench.run(jobs, burst)
    finally:
        bench.close()
        scratch_database.drop(args.database)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
