"""`python -m bench.reconcile`: does the reconciler leave a healthy backlog alone, and heal a loss?

Fills a database of its own and a vhost of its own with `--jobs` (100,000) waiting jobs, each
published through the outbox as the API does, with no worker consuming. Then `--reconcilers`
(2) reconcilers, as in that many worker processes, run rounds every `--interval-s` for
`--healthy-s` seconds, from the moment the last message was published (so the first rounds
see the management API's statistics lag behind). With `--consume-per-s`, a consumer takes
that many jobs a second meanwhile as a worker does (prefetch 100, claim, finish, then
acknowledge), so the queue always has messages delivered and not yet acknowledged. That
phase must republish nothing. Then
`--lose` (500) messages are taken out of the queue, as a consumer that acknowledged them
after a failed claim would, and the rounds go on for `--heal-s`: they must republish those
and hardly more. Prints one JSON object; the database and vhost are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import pika
import psycopg
from dramatiq import Message
from sqlalchemy import select

from bench import scratch_database
from courier.broker import publishing_broker
from courier.settings import Settings
from delivery import held_messages, reconcile, relay
from delivery.outbox import Outbox
from store import migrate, transitions
from store.db import make_engine
from store.models import Job
from store.outbox import MESSAGE_COLUMNS, JobMessage
from store.states import Status
from store.transitions import Outcome

AMQP = "amqp://guest:guest@127.0.0.1:5672"
API = "http://127.0.0.1:15672"
AUTH = ("guest", "guest")

_SEED = """
INSERT INTO jobs (id, tenant, type, queue, entity_id, payload, status, priority, attempts,
                  max_attempts, timeout_s, correlation_id, created_at)
SELECT gen_random_uuid(), 'bench', 'customer_sync', 'sync', 'c_' || g, '{}'::jsonb, 'queued',
       0, 0, 4, 600, 'bench-' || g, now()
FROM generate_series(1, %(jobs)s) AS g
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--reconcilers", type=int, default=2)
    p.add_argument("--interval-s", type=float, default=2.0)
    p.add_argument("--settle-s", type=float, default=10.0)
    p.add_argument("--healthy-s", type=float, default=60.0)
    p.add_argument("--lose", type=int, default=500)
    p.add_argument("--heal-s", type=float, default=30.0)
    p.add_argument("--consume-per-s", type=float, default=0.0, help="0: no consumer (default)")
    p.add_argument("--database", default="courier_bench_reconcile")
    p.add_argument("--vhost", default="courier-bench-reconcile")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scratch_database.recreate(args.database)
    _recreate_vhost(args.vhost)
    settings = Settings(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:5432/{args.database}",
        broker_url=f"{AMQP}/{quote(args.vhost, safe='')}",
        rabbitmq_api_url=f"http://guest:guest@{API.removeprefix('http://')}",
    )
    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        result: dict[str, Any] = {"jobs": args.jobs, "reconcilers": args.reconcilers}
        result |= {"interval_s": args.interval_s, "settle_s": args.settle_s}
        result["publish_s"] = _fill(engine, settings, args.jobs)
        rounds = Rounds(engine, settings, args)
        consumer = SlowConsumer(engine, settings.broker_url, args.consume_per_s)
        if args.consume_per_s:
            consumer.start()
        result["healthy"] = rounds.run(args.healthy_s)
        _take(args.vhost, args.lose)
        result["lost"] = args.lose
        result["after_loss"] = rounds.run(args.heal_s)
        consumer.stop()
        result["consumed"] = consumer.consumed
        result["queue_ready_at_end"] = _ready(args.vhost)
    finally:
        engine.dispose()
        httpx.delete(f"{API}/api/vhosts/{quote(args.vhost, safe='')}", auth=AUTH)
        scratch_database.drop(args.database)
    print(json.dumps(result, indent=2))
    return 0


def _fill(engine: Any, settings: Settings, jobs: int) -> float:
    """Insert the jobs and publish them through the outbox, 1,000 a transaction."""
    with psycopg.connect(settings.database_url.replace("+psycopg", ""), autocommit=True) as c:
        c.execute(_SEED, {"jobs": jobs})
        c.execute("ANALYZE jobs")
    out = Outbox(publishing_broker(settings), engine)
    started = time.monotonic()
    last = None
    while True:
        query = select(*MESSAGE_COLUMNS).order_by(Job.id).limit(1000)
        if last is not None:
            query = query.where(Job.id > last)
        with engine.connect() as db:
            batch = [JobMessage(*row) for row in db.execute(query)]
        if not batch:
            return round(time.monotonic() - started, 1)
        assert out.publish(batch) == len(batch), "the broker refused a batch"
        last = batch[-1].job_id


class Rounds:
    """Reconcilers on threads, one Outbox (one broker connection) each, as worker processes."""

    def __init__(self, engine: Any, settings: Settings, args: argparse.Namespace) -> None:
        self.engine = engine
        self.args = args
        self.held = partial(
            held_messages.held,
            parameters=pika.URLParameters(settings.broker_url),
            broker_url=settings.broker_url,
            api_url=settings.rabbitmq_api_url,
        )
        self.outboxes = [
            Outbox(publishing_broker(settings), engine) for _ in range(args.reconcilers)
        ]

    def run(self, seconds: float) -> dict[str, Any]:
        """Rounds for `seconds`: how many, how many jobs they republished and when the last
        of them was (seconds into the phase), how long each round took."""
        lock = threading.Lock()
        republished, durations, last = [0], [], [None]
        begun = time.monotonic()
        stop = begun + seconds

        def loop(out: Outbox) -> None:
            surpluses = reconcile.Surpluses(self.args.settle_s)  # each reconciler its own
            while time.monotonic() < stop:
                started = time.monotonic()
                done = reconcile.reconcile(
                    self.engine,
                    ["sync"],
                    self.held,
                    settle_s=self.args.settle_s,
                    surpluses=surpluses,
                )
                took = time.monotonic() - started
                relay.publish_due(self.engine, out, limit=1000)  # what the round gave back
                with lock:
                    republished[0] += sum(done.values())
                    durations.append(took)
                    if sum(done.values()):
                        last[0] = round(time.monotonic() - begun, 1)
                time.sleep(max(0.0, min(self.args.interval_s, stop - time.monotonic())))

        threads = [threading.Thread(target=loop, args=(out,)) for out in self.outboxes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "seconds": seconds,
            "rounds": len(durations),
            "republished": republished[0],
            "last_republished_at_s": last[0],
            "round_ms_median": round(statistics.median(durations) * 1000, 1),
            "round_ms_max": round(max(durations) * 1000, 1),
        }


class SlowConsumer(threading.Thread):
    """Takes jobs as a worker does, at a fixed rate: claim, finish, then acknowledge."""

    def __init__(self, engine: Any, broker_url: str, per_s: float) -> None:
        super().__init__(daemon=True)
        self.engine, self.broker_url, self.per_s = engine, broker_url, per_s
        self.consumed = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.broker_url))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        for method, _properties, body in channel.consume("sync", inactivity_timeout=1):
            if self._stopping.is_set():
                break
            if method is None:
                continue
            job_id = uuid.UUID(Message.decode(body).args[0])
            with self.engine.begin() as db:
                claims = transitions.claim(db, [job_id], worker="bench:1", lease_s=60)
                done = Outcome(job_status=Status.SUCCEEDED, result={})
                transitions.finish(db, [(claim, done) for claim in claims.values()])
            channel.basic_ack(method.delivery_tag)
            self.consumed += 1
            connection.sleep(1 / self.per_s)
        connection.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()


def _take(vhost: str, count: int) -> None:
    """Take messages out of the queue for good, through the management API."""
    taken = 0
    while taken < count:
        got = httpx.post(
            f"{API}/api/queues/{quote(vhost, safe='')}/sync/get",
            json={
                "count": min(count - taken, 100),
                "ackmode": "ack_requeue_false",
                "encoding": "auto",
            },
            auth=AUTH,
            timeout=30,
        ).raise_for_status()
        taken += len(got.json())


def _ready(vhost: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(f"{AMQP}/{quote(vhost, safe='')}"))
    try:
        return connection.channel().queue_declare("sync", passive=True).method.message_count
    finally:
        connection.close()


def _recreate_vhost(vhost: str) -> None:
    path = quote(vhost, safe="")
    httpx.delete(f"{API}/api/vhosts/{path}", auth=AUTH)
    httpx.put(f"{API}/api/vhosts/{path}", auth=AUTH).raise_for_status()
    httpx.put(
        f"{API}/api/permissions/{path}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=AUTH,
    ).raise_for_status()


if __name__ == "__main__":
    raise SystemExit(main())
