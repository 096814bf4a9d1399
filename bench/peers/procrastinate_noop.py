"""The Procrastinate peer, run in its own virtualenv: `procrastinate --app
bench.peers.procrastinate_noop.app worker`.

A no-op task on PostgreSQL alone (Procrastinate's queue is its jobs table).
`python -m bench.peers.enqueue procrastinate N` applies the schema to the empty database and
defers N jobs, then prints what that took as JSON.
"""

from __future__ import annotations

import os
import time

import procrastinate

QUEUE = "bench"
_CHUNK = 1000  # jobs per INSERT

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PEER_DATABASE_URL", "postgresql://postgres@127.0.0.1/")
    )
)


@app.task(name="noop", queue=QUEUE)
async def noop() -> None:
    """Nothing: the figures are Procrastinate's own cost."""


def enqueue(jobs: int) -> dict[str, float]:
    """Apply the schema, then defer `jobs` in chunks."""
    with app.open():
        app.schema_manager.apply_schema()
        began = time.perf_counter()
        for start in range(0, jobs, _CHUNK):
            noop.batch_defer(*({} for _ in range(min(_CHUNK, jobs - start))))
    return {"enqueued": jobs, "seconds": time.perf_counter() - began}
