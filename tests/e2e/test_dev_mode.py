"""`courier dev`: the embedded mode works end to end from an empty directory."""

from __future__ import annotations

import re
import signal

import httpx
import pytest

from tests.support.polling import wait_for
from tests.support.processes import Process, courier_command, free_port

pytestmark = pytest.mark.e2e


def test_courier_dev_runs_a_job_to_success_and_exits_0_on_ctrl_c(tmp_path):
    port, upstream_port = free_port(), free_port()
    env = {
        "COURIER_CRM_URL": f"http://127.0.0.1:{upstream_port}/crm",
        "COURIER_BILLING_URL": f"http://127.0.0.1:{upstream_port}/billing",
    }
    process = Process(
        "courier-dev",
        courier_command("dev", "--port", str(port)),
        env,
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
        assert client != operator
        headers = {"Authorization": f"Bearer {client}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            created = http.post(
                "/v1/jobs", json={"type": "customer_sync", "entity_id": "c_1001"}, headers=headers
            )
            assert created.status_code == 202, created.text
            job = wait_for(
                lambda: (
                    (j := http.get(created.headers["Location"], headers=headers).json())["status"]
                    in ("succeeded", "failed", "dead")
                    and j
                ),
                timeout=30,
                what="the job to finish",
            )
        assert job["status"] == "succeeded", job
        assert (tmp_path / "courier-dev.db").exists()
        process.send(signal.SIGINT)
        assert process.popen.wait(30) == 0
    finally:
        process.stop()
