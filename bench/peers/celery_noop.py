"""The Celery peer, run in its own virtualenv: `celery -A bench.peers.celery_noop worker`.

A no-op task on RabbitMQ with the SQLAlchemy result backend on PostgreSQL, acked after it
runs and recorded when it starts (a row in STARTED, then in SUCCESS), as a deployment that
must not lose work would configure it. `python -m bench.peers.enqueue celery N` creates the
result tables and publishes N messages, then prints what that took as JSON.
"""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "bench_peer",
    broker=os.environ.get("BENCH_PEER_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=f"db+{os.environ.get('BENCH_PEER_DATABASE_URL', 'postgresql://postgres@127.0.0.1/')}",
)
app.conf.update(
    task_acks_late=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    """Nothing: the figures are Celery's own cost."""


def enqueue(jobs: int) -> dict[str, float]:
    """Create the result tables (before two pool processes race to), then publish `jobs`."""
    app.backend  # noqa: B018 - the database backend creates its tables when first made
    began = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(jobs):
            noop.apply_async(producer=producer)
    return {"enqueued": jobs, "seconds": time.perf_counter() - began}
