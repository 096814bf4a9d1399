"""A Courier deployment of real processes to inject faults into, and the tools to do it.

`Courier` runs `courier api` and `courier worker` as subprocesses against a database and a
vhost of its own; `WorkerGroup` finds the processes behind one `courier worker` (its
supervisor, Dramatiq's main process and the worker processes that run actors) so a test
can kill, freeze or stop exactly the one it means to.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from dramatiq import Message
from psycopg.rows import dict_row
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from store import tokens
from tests.support import invariants
from tests.support.polling import wait_for
from tests.support.private_services import RabbitTarget, alive, children
from tests.support.processes import Process, courier_command, wait_http
from tests.support.upstream import ScriptableUpstream

#: A scripted upstream answer that takes a while: jobs are caught mid-flight.
OK = {"status": 200, "body": {"ok": True}}


def slow(seconds: float, status: int = 200, body: Any = None) -> dict[str, Any]:
    """An upstream answer delayed by `seconds`."""
    return {"status": status, "body": {"ok": True} if body is None else body, "delay_s": seconds}


def cmdline(pid: int) -> list[str]:
    """A process's command line (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop(0)):
            found.append(child)
            todo.append(child)
    return found


def worker_pid(attempt_worker: str) -> int:
    """The pid in an attempt's `worker` column (`host:pid`)."""
    return int(attempt_worker.rsplit(":", 1)[1])


class WorkerGroup:
    """One `courier worker`: a supervisor that restarts its Dramatiq group when it dies."""

    def __init__(self, process: Process, processes: int) -> None:
        self.process = process
        self.processes = processes

    @property
    def supervisor(self) -> int:
        return self.process.pid

    def dramatiq_main(self) -> int | None:
        """Dramatiq's main process (the supervisor's child), if one is running."""
        for pid in children(self.supervisor):
            if "dramatiq" in cmdline(pid) and alive(pid):
                return pid
        return None

    def worker_pids(self) -> list[int]:
        """The worker processes (forks of Dramatiq's main process) that run actors."""
        main = self.dramatiq_main()
        if main is None:
            return []
        return [p for p in children(main) if cmdline(p) == cmdline(main) and alive(p)]

    def ready_count(self) -> int:
        """How many times a worker process of this group has announced it is ready."""
        return self.process.output().count("Worker process is ready for action")

    def wait_ready(self, after: int = 0, timeout: float = 60) -> None:
        """Wait until a (re)started group's processes are all ready (`after`: count before)."""

        def ready() -> bool:
            if self.process.popen.poll() is not None:
                raise AssertionError(
                    f"{self.process.name} exited:\n{self.process.output()[-3000:]}"
                )
            return (
                self.ready_count() >= after + self.processes
                and len(self.worker_pids()) == self.processes
            )

        wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.process.name} to be ready")

    def kill_group(self) -> list[int]:
        """SIGKILL Dramatiq's main process and every worker process (not the supervisor).

        Everything is frozen first, so no process sees another die and starts shutting down.
        """
        pids = descendants(self.supervisor)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def restarts(self) -> int:
        """How many times the supervisor restarted the group."""
        return self.process.output().count("worker group exited")

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM the supervisor (a graceful stop of the whole group) and wait for it."""
        self.process.send(signal.SIGTERM)
        try:
            return self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.process.name} did not stop within {timeout}s") from None

    def log_lines(self, needle: str) -> list[str]:
        """Lines of the group's output containing `needle`."""
        return [line for line in self.process.output().splitlines() if needle in line]


@dataclass
class Courier:
    """A deployment: its environment, API address, services and the processes started."""

    name: str
    env: dict[str, str]
    api_url: str
    upstream: ScriptableUpstream
    broker: RabbitTarget
    vhost: str
    processes: list[Process] = field(default_factory=list)
    _token: dict[str, str] | None = None

    # ------------------------------------------------------------------ processes

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a one-shot `courier` command."""
        return subprocess.run(
            courier_command(*args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, label: str, *args: str, env: dict[str, str] | None = None) -> Process:
        """Start a long-running `courier` command, its output in test-artifacts/."""
        process = Process(
            f"faults-{self.name}-{label}", courier_command(*args), {**self.env, **(env or {})}
        )
        self.processes.append(process)
        return process

    def start_api(self, label: str = "api") -> Process:
        """Start `courier api` and wait until it is ready."""
        api = self.start(
            label, "api", "--bind", self.api_url.removeprefix("http://"), "--workers", "2"
        )
        wait_http(f"{self.api_url}/readyz", process=api, timeout=60)
        return api

    def start_worker(
        self,
        label: str = "worker",
        *,
        processes: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerGroup:
        """Start `courier worker` (supervised) and, by default, wait until it is ready."""
        process = self.start(
            label,
            "worker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            env=env,
        )
        group = WorkerGroup(process, processes)
        if wait:
            group.wait_ready()
        return group

    def stop_all(self) -> None:
        """Stop every process started here at once (frozen ones included): the test is over and
        its database and vhost are dropped next, so nothing needs a graceful shutdown."""
        for process in reversed(self.processes):
            process.kill_group(signal.SIGKILL)
            process.stop(timeout=10)
        self.processes.clear()

    # ------------------------------------------------------------------ the API

    def http(self, timeout: float = 30) -> httpx.Client:
        """A client for the API."""
        return httpx.Client(base_url=self.api_url, timeout=timeout)

    def token(self, tenant: str = "acme", role: str = "client") -> dict[str, str]:
        """Authorization headers for a new token (made with the store, as the CLI does)."""
        engine = create_engine(self.env["COURIER_DATABASE_URL"])
        try:
            with sessionmaker(engine).begin() as session:
                secret = tokens.create(session, tenant=tenant, role=role, name="faults")
        finally:
            engine.dispose()
        return {"Authorization": f"Bearer {secret}"}

    @property
    def headers(self) -> dict[str, str]:
        """A client token's headers, made once."""
        if self._token is None:
            self._token = self.token()
        return self._token

    def submit(self, bodies: Iterable[dict[str, Any]]) -> list[str]:
        """Submit jobs in batches of up to 1000; every one must be accepted (202)."""
        bodies = list(bodies)
        ids: list[str] = []
        with self.http() as http:
            for start in range(0, len(bodies), 1000):
                response = http.post(
                    "/v1/jobs/batch",
                    json={"jobs": bodies[start : start + 1000]},
                    headers=self.headers,
                )
                assert response.status_code == 207, response.text
                for item in response.json()["items"]:
                    assert item["status"] == 202, item
                    ids.append(item["job"]["id"])
        return ids

    def submit_one(self, body: dict[str, Any]) -> str:
        """Submit one job through `POST /v1/jobs`; it must be accepted (202)."""
        with self.http() as http:
            response = http.post("/v1/jobs", json=body, headers=self.headers)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    # ------------------------------------------------------------------ the record

    @contextlib.contextmanager
    def sql(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection to the deployment's database."""
        url = self.env["COURIER_DATABASE_URL"].replace("+psycopg", "")
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            yield conn

    def job(self, job_id: str) -> dict[str, Any]:
        """The job's row as it is now."""
        with self.sql() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
        assert row is not None, f"no job {job_id}"
        return row

    def attempts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's attempt rows in order."""
        with self.sql() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT * FROM attempts WHERE job_id = %s ORDER BY number", (job_id,)
            ).fetchall()

    def running_attempts(self) -> list[dict[str, Any]]:
        """Every attempt running right now, with its job's entity."""
        with self.sql() as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT a.*, j.entity_id FROM attempts a JOIN jobs j ON j.id = a.job_id "
                "WHERE a.status = 'running' ORDER BY a.started_at"
            ).fetchall()

    def count(self, where: str = "true", params: tuple = ()) -> int:
        """How many jobs match a SQL condition."""
        with self.sql() as conn:
            return conn.execute(f"SELECT count(*) FROM jobs WHERE {where}", params).fetchone()[0]

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until the job reaches one of `statuses`."""
        wait_for(
            lambda: self.job(job_id)["status"] in statuses,
            timeout=timeout,
            interval=0.1,
            what=f"job {job_id} to be {'/'.join(statuses)}",
        )
        return self.job(job_id)

    # ------------------------------------------------------------------ the broker

    def queue_counts(self, queue: str = "sync") -> dict[str, int]:
        """Ready/unacked messages of a queue (management API) and ready ones asked directly."""
        return invariants.queue_counts(self.broker, self.vhost, queue)

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


def elapsed(since: float) -> float:
    """Seconds since a `time.monotonic()` reading."""
    return time.monotonic() - since
