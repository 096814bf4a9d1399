"""`courier dev`: the embedded mode works end to end from an empty directory."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.deployment import label_for
from tests.support.polling import wait_for
from tests.support.processes import Process, courier_command, free_port

pytestmark = pytest.mark.e2e


@contextmanager
def courier_dev(
    request: pytest.FixtureRequest, tmp_path, env: dict[str, str] | None = None
) -> Iterator[tuple[Process, int, str, str]]:
    """`courier dev` in `tmp_path`, once its banner is out: the process, its port, and its
    client and operator tokens. Its log is named after the test, which may run beside
    another one of this module."""
    port, upstream_port = free_port(), free_port()
    process = Process(
        f"courier-dev-{label_for(request.node.name)}",
        courier_command("dev", "--port", str(port)),
        {
            "COURIER_CRM_URL": f"http://127.0.0.1:{upstream_port}/crm",
            "COURIER_BILLING_URL": f"http://127.0.0.1:{upstream_port}/billing",
            **(env or {}),
        },
        cwd=str(tmp_path),
        unset=("COURIER_DATABASE_URL", "COURIER_BROKER_URL"),  # dev mode uses its own defaults
    )
    try:
        banner = wait_for(
            lambda: (out := process.output()).count("token:") >= 2 and out,
            timeout=60,
            what="the banner",
        )
        assert f"url: http://127.0.0.1:{port}" in banner
        client = re.search(r"^client token: (\S+)$", banner, re.M).group(1)
        operator = re.search(r"^operator token: (\S+)$", banner, re.M).group(1)
        yield process, port, client, operator
    finally:
        process.stop()


def finished(http: httpx.Client, location: str, headers: dict[str, str]) -> dict:
    """The job at `location` once it has finished."""
    return wait_for(
        lambda: (
            (j := http.get(location, headers=headers).json())["status"]
            in ("succeeded", "failed", "dead")
            and j
        ),
        timeout=30,
        what="the job to finish",
    )


def test_courier_dev_runs_a_job_to_success_and_exits_0_on_ctrl_c(request, tmp_path):
    with courier_dev(request, tmp_path) as (process, port, client, operator):
        assert client != operator
        headers = {"Authorization": f"Bearer {client}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            created = http.post(
                "/v1/jobs", json={"type": "customer_sync", "entity_id": "c_1001"}, headers=headers
            )
            assert created.status_code == 202, created.text
            job = finished(http, created.headers["Location"], headers)
        assert job["status"] == "succeeded", job
        assert (tmp_path / "courier-dev.db").exists()
        process.send(signal.SIGINT)
        assert process.popen.wait(30) == 0


def test_courier_dev_runs_the_jobs_of_every_queue(request, tmp_path):
    with courier_dev(request, tmp_path, {"COURIER_JOB_QUEUES": "customer_sync=low"}) as (
        _process,
        port,
        client,
        _operator,
    ):
        headers = {"Authorization": f"Bearer {client}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            locations = []
            for body in (
                {"type": "customer_sync", "entity_id": "c_low"},
                {"type": "invoice_sync", "entity_id": "i_sync"},
            ):
                created = http.post("/v1/jobs", json=body, headers=headers)
                assert created.status_code == 202, created.text
                locations.append(created.headers["Location"])
            jobs = [finished(http, location, headers) for location in locations]
        assert [(j["queue"], j["status"]) for j in jobs] == [
            ("low", "succeeded"),
            ("sync", "succeeded"),
        ]
