"""The real stack for the benchmark: its own database and vhost, and the processes on them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pika
import psycopg
from psycopg import sql

from bench import cpu, noop_job, processes
from bench.processes import Process

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
RABBIT_API = "http://127.0.0.1:15672"
RABBIT_AUTH = ("guest", "guest")


@dataclass(frozen=True)
class Shape:
    """How many processes and threads the API and the workers run."""

    api_workers: int = 2
    api_threads: int = 4
    processes: int = 2
    threads: int = 8


@dataclass
class Stack:
    """PostgreSQL database + RabbitMQ vhost + no-op upstream + `courier api` (+ workers)."""

    database: str
    vhost: str
    shape: Shape
    logs: Path
    #: What sections 1-3 submit: the no-op type (bench/noop_job.py) or a built-in type.
    job_type: str = noop_job.NAME
    api_port: int = field(default_factory=processes.free_port)
    upstream_port: int = field(default_factory=processes.free_port)
    api: Process | None = None
    upstream: Process | None = None
    worker: Process | None = None
    memory: dict[str, list[dict]] = field(default_factory=dict)  # role -> last sample

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.database}"

    @property
    def broker_url(self) -> str:
        return vhost_url(self.vhost)

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "COURIER_DATABASE_URL": self.database_url.replace("postgresql:", "postgresql+psycopg:"),
            "COURIER_BROKER_URL": self.broker_url,
            "COURIER_RABBITMQ_API_URL": "http://guest:guest@127.0.0.1:15672",
            "COURIER_CRM_URL": f"{self.upstream_url}/crm",
            "COURIER_BILLING_URL": f"{self.upstream_url}/billing",
            "COURIER_LOG_FORMAT": "json",
            "COURIER_JOB_MODULES": noop_job.__name__,
            "PYTHONPATH": str(ROOT),  # where bench.noop_job is found
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Fresh database (migrated) and vhost, then the upstream and the API."""
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            name = sql.Identifier(self.database)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
        recreate_vhost(self.vhost)
        self._courier_once("migrate")
        self.upstream = self._spawn(
            "upstream",
            [str(processes.BIN / "python"), "-m", "bench.upstream", str(self.upstream_port)],
        )
        processes.wait_http(f"{self.upstream_url}/crm/customers/probe", self.upstream)
        bind = f"127.0.0.1:{self.api_port}"
        workers, threads = str(self.shape.api_workers), str(self.shape.api_threads)
        self.api = self._spawn(
            "api", _courier("api", "--bind", bind, "--workers", workers, "--threads", threads)
        )
        processes.wait_http(f"http://{bind}/readyz", self.api)

    def close(self, *, keep: bool = False) -> None:
        """Stop every process; drop the database and vhost unless `keep`."""
        for process in (self.worker, self.api, self.upstream):
            if process is not None:
                process.stop()
        if keep:
            return
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )
        delete_vhost(self.vhost)

    def start_worker(self) -> Process:
        """`courier worker`, waiting until every process consumes from `sync`."""
        self.stop_worker()
        shape = self.shape
        self.worker = self._spawn(
            "worker",
            _courier(
                "worker", "--processes", str(shape.processes), "--threads", str(shape.threads)
            ),
        )
        self.wait_consumers("sync", shape.processes, self.worker)
        return self.worker

    def stop_worker(self) -> None:
        """Stop `courier worker` (its memory is sampled first)."""
        if self.worker is not None:
            self.sample_memory("worker", self.worker)
            self.worker.stop()
            self.worker = None

    def start_bare(self, *, with_upstream: bool) -> Process:
        """`dramatiq bench.bare_worker` with the same processes and threads as Courier's."""
        env = {"BENCH_BROKER_URL": self.broker_url}
        if with_upstream:
            env["BENCH_BARE_UPSTREAM"] = self.upstream_url
        args = [str(processes.BIN / "dramatiq"), "bench.bare_worker"]
        args += ["--processes", str(self.shape.processes), "--threads", str(self.shape.threads)]
        name = "bare-upstream" if with_upstream else "bare"
        return Process(name, args, env=env, logs=self.logs)

    def sample_memory(self, role: str, process: Process) -> None:
        """Remember the memory of `process` and everything below it, as `role`."""
        rows = []
        for pid in [process.pid, *processes.descendants(process.pid)]:
            usage = processes.memory_kib(pid)
            if usage is not None:
                rows.append(
                    {
                        "pid": pid,
                        "ppid": processes.parent(pid),
                        "command": processes.command_line(pid)[:160],
                        **usage,
                    }
                )
        self.memory[role] = rows

    # ------------------------------------------------------------------ helpers

    def cpu_meter(self) -> cpu.Meter:
        """A CPU meter over the running processes, PostgreSQL's backends and RabbitMQ."""
        roots = {"api": self.api, "worker": self.worker, "upstream": self.upstream}
        pids = {role: p.pid if p is not None else None for role, p in roots.items()}
        return cpu.Meter(pids, database=self.database, connect=self.connect)

    def connect(self) -> psycopg.Connection:
        """An autocommit connection to the benchmark database."""
        return psycopg.connect(self.database_url, autocommit=True)

    def token(self, tenant: str, role: str = "client") -> str:
        """A new API token (made the way `courier token create` makes it)."""
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        from store import tokens

        engine = create_engine(self.env["COURIER_DATABASE_URL"])
        try:
            with Session(engine) as session, session.begin():
                return tokens.create(session, tenant=tenant, role=role, name="bench")
        finally:
            engine.dispose()

    def queue(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue right now; None if it does not exist."""
        with Rabbit(self.broker_url) as rabbit:
            return rabbit.depth(name)

    def wait_consumers(self, queue: str, count: int, process: Process, timeout=90.0) -> None:
        """Wait until `count` consumers read `queue` (the workers are up)."""

        def ready() -> bool:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
            depth = self.queue(queue)
            return depth is not None and depth[1] >= count

        processes.wait_until(ready, timeout=timeout, what=f"{count} consumers on {queue}")

    def _spawn(self, name: str, args: list[str]) -> Process:
        return Process(name, args, env=self.env, logs=self.logs)

    def _courier_once(self, *args: str) -> None:
        done = subprocess.run(
            _courier(*args), env={**os.environ, **self.env}, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"courier {' '.join(args)} failed: {done.stderr.strip()}")


class Rabbit:
    """A short-lived AMQP connection for looking at queue depths."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def __enter__(self) -> Rabbit:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.connection.is_open:
            self.connection.close()

    def depth(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers), or None if there is no such queue."""
        if not self.channel.is_open:  # a passive declare of a missing queue closes it
            self.channel = self.connection.channel()
        try:
            method = self.channel.queue_declare(queue, passive=True).method
        except pika.exceptions.ChannelClosedByBroker:
            return None
        return method.message_count, method.consumer_count


def recreate_vhost(name: str) -> None:
    """Delete the vhost if it exists and create it empty, open to guest."""
    with _rabbit_api() as api:
        api.delete(f"/api/vhosts/{quote(name, safe='')}")
        api.put(f"/api/vhosts/{quote(name, safe='')}").raise_for_status()
        api.put(
            f"/api/permissions/{quote(name, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()


def delete_vhost(name: str) -> None:
    """Delete the vhost and everything in it (nothing if there is none)."""
    with _rabbit_api() as api:
        api.delete(f"/api/vhosts/{quote(name, safe='')}")


def vhost_url(name: str) -> str:
    """The AMQP URL of a vhost on the local RabbitMQ."""
    return f"{AMQP}/{quote(name, safe='')}"


def rabbitmq_overview() -> dict:
    """The management API's overview (versions)."""
    with _rabbit_api() as api:
        return api.get("/api/overview").json()


def wait_drained(rabbit: Rabbit, queue: str, total: int, timeout: float) -> tuple[float, float]:
    """Poll a pre-filled queue; (first time it was below `total`, time it was empty)."""
    first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = rabbit.depth(queue)
        now = time.perf_counter()
        ready = depth[0] if depth else 0
        if first is None and ready < total:
            first = now
        if ready == 0:
            return first or now, now
        time.sleep(0.01)
    raise RuntimeError(f"{queue} not drained within {timeout:.0f}s")


def _courier(*args: str) -> list[str]:
    return [str(processes.BIN / "courier"), *args]


def _rabbit_api() -> httpx.Client:
    return httpx.Client(base_url=RABBIT_API, auth=RABBIT_AUTH, timeout=10)


def dumps(value: object) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":")).encode()
