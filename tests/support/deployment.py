"""Courier as it is deployed: the real `courier` commands as subprocesses, for the e2e and the
fault tiers.

`ProcessDeployment` runs `courier api` and `courier worker` against a database and a vhost
of its own, waits for each to be ready with a deadline, stops or kills them, keeps their
output under test-artifacts/ and reads the record in SQL. `WorkerGroup` finds the processes
behind one `courier worker` (its supervisor, Dramatiq's main process and the worker processes
that run actors) so a test can stop or kill exactly the one it means to.

The in-process harness (API through falcon's TestClient) is `tests.support.stack.Stack`;
both submit and wait through `tests.support.harness.Harness`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.support.harness import Harness
from tests.support.polling import wait_for
from tests.support.processes import (
    Process,
    alive,
    children,
    cmdline,
    courier_command,
    descendants,
    free_port,
    signal_all,
    wait_http,
)
from tests.support.services import RabbitTarget
from tests.support.upstream import ScriptableUpstream


def label_for(test_name: str) -> str:
    """A test's name as it can stand in file names: its processes' logs are named after it.

    A long name is cut, and a hash of the whole name keeps it apart from another it shares
    its start with (the cases of one parametrized test): the two may run side by side.
    """
    label = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    if len(label) <= 60:
        return label
    return f"{label[:51].rstrip('-')}-{hashlib.sha1(test_name.encode()).hexdigest()[:8]}"


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
            if not self.process.running:
                raise self.process.exited_early()
            return (
                self.ready_count() >= after + self.processes
                and len(self.worker_pids()) == self.processes
            )

        wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.process.name} to be ready")

    def kill_group(self) -> list[int]:
        """kill -9 Dramatiq's main process and every worker process (not the supervisor).

        Everything is frozen first, so no process sees another die and starts shutting down.
        """
        pids = descendants(self.supervisor)
        signal_all(pids, signal.SIGSTOP)
        signal_all(pids, signal.SIGKILL)
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

    def output(self) -> str:
        """Everything the group printed so far."""
        return self.process.output()

    def log_lines(self, needle: str) -> list[str]:
        """Lines of the group's output containing `needle`."""
        return self.process.lines(needle)


@dataclass
class ProcessDeployment(Harness):
    """A deployment: its environment, API address, services and the processes started."""

    name: str
    env: dict[str, str]
    api_url: str
    upstream: ScriptableUpstream
    broker: RabbitTarget
    vhost: str
    processes: list[Process] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        name: str,
        *,
        database_url: str,
        broker: RabbitTarget,
        vhost: str,
        upstream: ScriptableUpstream,
        settings: Mapping[str, str],
    ) -> Self:
        """A deployment on a database, a vhost and the upstream; `settings`: more COURIER_*
        variables (timings). Its processes' logs are named `name-LABEL`."""
        env = {
            **settings,
            "COURIER_DATABASE_URL": database_url,
            "COURIER_BROKER_URL": broker.amqp_url(vhost),
            "COURIER_RABBITMQ_API_URL": broker.api_url,
            "COURIER_CRM_URL": upstream.crm_url,
            "COURIER_BILLING_URL": upstream.billing_url,
        }
        return cls(name, env, f"http://127.0.0.1:{free_port()}", upstream, broker, vhost)

    # ------------------------------------------------------------------ processes

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a one-shot `courier` command."""
        return subprocess.run(
            courier_command(*args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def migrate(self) -> None:
        """Run `courier migrate`; it must succeed."""
        done = self.run("migrate")
        assert done.returncode == 0, done.stderr

    def start(
        self,
        label: str,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: Sequence[str] = (),
    ) -> Process:
        """Start a long-running `courier` command, its output in test-artifacts/; `wrapper`
        runs it through another command that execs it (`ip netns exec NS`)."""
        process = Process(
            f"{self.name}-{label}",
            [*wrapper, *courier_command(*args)],
            {**self.env, **(env or {})},
        )
        self.processes.append(process)
        return process

    def start_api(self, label: str = "api", *, timeout: float = 60) -> Process:
        """Start `courier api` and wait until it is ready."""
        api = self.start(
            label, "api", "--bind", self.api_url.removeprefix("http://"), "--workers", "2"
        )
        wait_http(f"{self.api_url}/readyz", process=api, timeout=timeout)
        return api

    def start_worker(
        self,
        label: str = "worker",
        *,
        processes: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
        wait: bool = True,
        queues: str | None = None,
        wrapper: Sequence[str] = (),
    ) -> WorkerGroup:
        """Start `courier worker` (supervised; `queues`: its `--queues`; `wrapper`: as for
        `start`) and, by default, wait until it is ready."""
        args = ["worker", "--processes", str(processes), "--threads", str(threads)]
        if queues is not None:
            args += ["--queues", queues]
        process = self.start(label, *args, env=env, wrapper=wrapper)
        group = WorkerGroup(process, processes)
        if wait:
            group.wait_ready()
        return group

    def stop_all(self) -> None:
        """Stop every process started here, last first: SIGTERM, then kill -9 if it lingers."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def kill_all(self) -> None:
        """kill -9 every process started here at once (frozen ones included)."""
        for process in reversed(self.processes):
            process.kill_group(signal.SIGKILL)
            process.stop(timeout=10)
        self.processes.clear()

    # ------------------------------------------------------------------ the API

    def http(self, timeout: float = 30) -> httpx.Client:
        """A client for the API."""
        return httpx.Client(base_url=self.api_url, timeout=timeout)

    def token(self, tenant: str = "acme", role: str = "client") -> dict[str, str]:
        """Authorization headers for a token made with `courier token create`."""
        done = self.run("token", "create", "--tenant", tenant, "--role", role)
        assert done.returncode == 0, done.stderr
        return {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}

    def post(self, path: str, body: Any, headers: Mapping[str, str]) -> tuple[int, str]:
        with self.http() as http:
            response = http.post(path, json=body, headers=dict(headers))
        return response.status_code, response.text

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

    def status_of(self, job: dict[str, Any]) -> str:
        return job["status"]

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
