"""The real commands against real services: `courier migrate`, `courier api`, `courier worker`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from tests.support import services
from tests.support.processes import Process, courier_command, free_port, wait_http
from tests.support.upstream import ScriptableUpstream


@dataclass
class Deployment:
    """A Courier deployment made of subprocesses, and an HTTP client for its API."""

    env: dict[str, str]
    api_url: str
    upstream: ScriptableUpstream
    processes: list[Process] = field(default_factory=list)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a one-shot `courier` command."""
        return subprocess.run(
            courier_command(*args),
            env={**_os_env(), **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def token(self, tenant: str = "acme", role: str = "client") -> dict[str, str]:
        """Authorization headers for a token made with `courier token create`."""
        done = self.run("token", "create", "--tenant", tenant, "--role", role)
        assert done.returncode == 0, done.stderr
        return {"Authorization": f"Bearer {done.stdout.strip().splitlines()[-1]}"}

    def start(self, name: str, *args: str) -> Process:
        """Start a long-running `courier` command."""
        process = Process(name, courier_command(*args), self.env)
        self.processes.append(process)
        return process

    def start_api(self) -> Process:
        """Start `courier api` and wait until it is ready."""
        api = self.start(
            "api", "api", "--bind", self.api_url.removeprefix("http://"), "--workers", "2"
        )
        wait_http(f"{self.api_url}/readyz", process=api)
        return api

    def run_sql(self) -> psycopg.Connection:
        """A connection to the deployment's database, for checking the record directly."""
        return psycopg.connect(
            self.env["COURIER_DATABASE_URL"].replace("+psycopg", ""), autocommit=True
        )

    def http(self) -> httpx.Client:
        """A client for the API."""
        return httpx.Client(base_url=self.api_url, timeout=30)


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture
def deployment(
    request, database_url: str, vhost: str, upstream: ScriptableUpstream
) -> Iterator[Deployment]:
    """A migrated database and an empty vhost; start the processes a test needs."""
    env = {
        "COURIER_DATABASE_URL": database_url,
        "COURIER_BROKER_URL": services.amqp_url(vhost),
        "COURIER_CRM_URL": upstream.crm_url,
        "COURIER_BILLING_URL": upstream.billing_url,
        "COURIER_MIN_BACKOFF_MS": "100",
        "COURIER_MAX_BACKOFF_MS": "500",
        "COURIER_LEASE_S": "5",
        "COURIER_REAPER_INTERVAL_S": "1",
        "COURIER_LOG_FORMAT": "json",
    }
    d = Deployment(env, f"http://127.0.0.1:{free_port()}", upstream)
    migrated = d.run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    yield d
    for process in reversed(d.processes):
        process.stop()
