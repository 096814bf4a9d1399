"""Section 7: Celery and Procrastinate drain the same no-op job, against section 3's Courier.

As in section 3, the jobs are enqueued first and the workers started after; the drain is
timed from what each peer's own result store recorded: Procrastinate's events (first
`started` to last `succeeded`, by the database's clock), Celery's result rows (first to last
`SUCCESS` by `date_done`: the backend writes no time for STARTED, so the window starts one
job late and counts the jobs after the first). Each peer gets a database of its own on the
shared PostgreSQL (Celery also a vhost), dropped afterwards, and the bench's process count.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import cpu, scratch_database, stack
from bench.peers import venvs
from bench.processes import Process

NAMES = ("celery", "procrastinate")


def prepare() -> dict[str, Path]:
    """Each peer's virtualenv, made now if needed, before anything is measured."""
    return {name: venvs.ensure(name) for name in NAMES}


def peers(
    bins: dict[str, Path],
    *,
    database: str,
    vhost: str,
    processes: int,
    threads: int,
    jobs: int,
    courier_per_s: float,
    logs: Path,
    keep: bool = False,
) -> dict[str, Any]:
    """Both peers on `jobs` each, and Courier's drain rate over each peer's."""
    result: dict[str, Any] = {"jobs": jobs, "courier_per_s": courier_per_s}
    for name in NAMES:
        peer = _make(name, bins[name], database, vhost, processes, threads)
        try:
            peer.create()
            drained = _drain(peer, jobs, logs)
        finally:
            if not keep:
                peer.drop()
        result[name] = drained
        result[f"ratio_vs_{name}"] = courier_per_s / drained["per_s"] if drained["per_s"] else 0.0
    return result


@dataclass
class Peer:
    """One peer's database (and vhost), its worker commands and what its store says."""

    name: str
    bin: Path
    database: str
    processes: int
    threads: int
    vhost: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    def create(self) -> None:
        scratch_database.recreate(self.database)
        if self.vhost is not None:
            stack.recreate_vhost(self.vhost)

    def drop(self) -> None:
        scratch_database.drop(self.database)
        if self.vhost is not None:
            stack.delete_vhost(self.vhost)

    def workers(self) -> list[list[str]]:
        raise NotImplementedError

    def succeeded(self, conn: psycopg.Connection) -> int:
        raise NotImplementedError

    def window(self, conn: psycopg.Connection) -> tuple[int, float]:
        """(jobs finished in the timed window, its seconds)."""
        raise NotImplementedError

    def statuses(self, conn: psycopg.Connection) -> dict[str, int]:
        raise NotImplementedError


class Celery(Peer):
    """Prefork pool, as many pool processes as the bench's worker processes."""

    def workers(self) -> list[list[str]]:
        worker = [str(self.bin / "celery"), "-A", "bench.peers.celery_noop", "worker"]
        worker += ["--pool", "prefork", "--concurrency", str(self.processes)]
        return [[*worker, "--loglevel", "WARNING", "--hostname", "bench-peer@%h"]]

    def succeeded(self, conn: psycopg.Connection) -> int:
        return _one(conn, "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")

    def window(self, conn: psycopg.Connection) -> tuple[int, float]:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(date_done) - min(date_done))"
            " FROM celery_taskmeta WHERE status = 'SUCCESS'"
        ).fetchone()
        count, seconds = row if row else (0, None)
        return max(0, count - 1), float(seconds or 0)

    def statuses(self, conn: psycopg.Connection) -> dict[str, int]:
        return _grouped(conn, "SELECT status, count(*) FROM celery_taskmeta GROUP BY status")


class Procrastinate(Peer):
    """The bench's process count of `procrastinate worker`, each as concurrent as its threads."""

    def workers(self) -> list[list[str]]:
        app = ["--app", "bench.peers.procrastinate_noop.app", "--log-level", "warning"]
        worker = ["worker", "--concurrency", str(self.threads), "--queues", "bench"]
        command = [str(self.bin / "procrastinate"), *app, *worker]
        return [[*command, "--name", f"bench-{i}"] for i in range(self.processes)]

    def succeeded(self, conn: psycopg.Connection) -> int:
        return _one(conn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")

    def window(self, conn: psycopg.Connection) -> tuple[int, float]:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE type = 'succeeded'),"
            " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
            "  - min(at) FILTER (WHERE type = 'started'))"
            " FROM procrastinate_events"
        ).fetchone()
        count, seconds = row if row else (0, None)
        return count, float(seconds or 0)

    def statuses(self, conn: psycopg.Connection) -> dict[str, int]:
        return _grouped(conn, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")


def _make(name: str, bin_: Path, database: str, vhost: str, processes: int, threads: int) -> Peer:
    peer_database = f"{database}_{name}"
    if name == "celery":
        peer: Peer = Celery(name, bin_, peer_database, processes, threads, f"{vhost}-{name}")
    else:
        peer = Procrastinate(name, bin_, peer_database, processes, threads)
    peer.env = {
        "BENCH_PEER_DATABASE_URL": peer.database_url,
        "PYTHONPATH": str(stack.ROOT),  # where bench.peers.* is found
        **({"BENCH_PEER_BROKER_URL": stack.vhost_url(peer.vhost)} if peer.vhost else {}),
    }
    return peer


def _drain(peer: Peer, jobs: int, logs: Path) -> dict[str, Any]:
    enqueued = _enqueue(peer, jobs)
    workers = [
        Process(f"{peer.name}-{i}", args, env=peer.env, logs=logs)
        for i, args in enumerate(peer.workers())
    ]
    try:
        with psycopg.connect(peer.database_url, autocommit=True) as conn:
            usage = _wait_all_done(peer, conn, workers, jobs)
            finished, seconds = peer.window(conn)
            statuses = peer.statuses(conn)
    finally:
        for worker in workers:
            worker.stop()
    return {
        "per_s": finished / seconds if seconds else 0.0,
        "seconds": seconds,
        "enqueue_s": enqueued["seconds"],
        "statuses": statuses,
        "workers": len(workers),
        "cpu": usage,
    }


def _enqueue(peer: Peer, jobs: int) -> dict[str, Any]:
    args = [str(peer.bin / "python"), "-m", "bench.peers.enqueue", peer.name, str(jobs)]
    done = subprocess.run(
        args, env={**os.environ, **peer.env}, cwd=stack.ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"enqueueing {jobs} {peer.name} jobs failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait_all_done(
    peer: Peer, conn: psycopg.Connection, workers: list[Process], jobs: int
) -> dict[str, Any]:
    """Wait for every job to succeed; the CPU used from the first one done to the last.

    The meter starts once the workers have finished a job, as section 3's starts once
    Courier's consume: the figures are the drain's, not the peers' start-up.
    """
    timeout = 120 + jobs / 20  # as section 3's
    meter = cpu.Meter({"worker": [w.pid for w in workers]}, database=peer.database)
    started_at = 0
    deadline = time.monotonic() + timeout
    while True:
        for worker in workers:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited early:\n{worker.tail()}")
        done = peer.succeeded(conn)
        if done and not started_at:
            started_at = done
            meter.start()
        if done >= jobs:
            return meter.stop(max(1, jobs - started_at))
        if time.monotonic() > deadline:
            raise RuntimeError(f"{peer.name}: {done} of {jobs} jobs done after {timeout:.0f}s")
        time.sleep(0.1)


def _one(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _grouped(conn: psycopg.Connection, query: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in conn.execute(query).fetchall()}
