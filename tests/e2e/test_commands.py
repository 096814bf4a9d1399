"""The path a user takes: real commands as subprocesses, polled over HTTP."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e


def run_to_success(http, headers, body):
    """Submit one job and wait for it to succeed; returns the job as the API shows it."""
    created = http.post("/v1/jobs", json=body, headers=headers)
    assert created.status_code == 202, created.text
    url = created.headers["Location"]
    return wait_for(
        lambda: (j := http.get(url, headers=headers).json())["status"] == "succeeded" and j,
        timeout=30,
        what="the job to succeed",
    )


def test_migrate_is_idempotent(deployment):
    again = deployment.run("migrate")
    assert again.returncode == 0, again.stderr


def test_a_job_goes_through_api_and_worker_processes(deployment, upstream):
    deployment.start_api()
    deployment.start_worker(threads=4)
    headers = deployment.token()
    with deployment.http() as http:
        job = run_to_success(http, headers, {"type": "customer_sync", "entity_id": "c_e2e"})
        attempts = http.get(f"/v1/jobs/{job['id']}/attempts", headers=headers).json()["items"]
    assert job["attempts"] == len(attempts) == 1
    [write] = upstream.calls(path="/billing/customers/c_e2e", method="PUT")
    assert write["headers"]["Idempotency-Key"] == job["id"]


def test_two_worker_processes_run_a_thousand_jobs_once_each(deployment, upstream):
    deployment.start_api()
    headers = deployment.token()
    ids = []
    for chunk in range(2):
        ids += deployment.submit_all(
            ({"type": "customer_sync", "entity_id": f"c_{chunk}_{i}"} for i in range(500)),
            headers=headers,
        )
    assert len(set(ids)) == 1000
    # Both start at once, so that both have work to do.
    groups = [deployment.start_worker(f"worker-{n}", threads=8, wait=False) for n in (1, 2)]
    for group in groups:
        group.wait_ready()
    operator = deployment.token("ops", "operator")
    with deployment.http() as http:

        def all_done() -> bool:
            page = http.get(
                "/v1/jobs", params={"status": "succeeded", "limit": 500}, headers=operator
            ).json()
            return page["next_cursor"] is not None and _count_succeeded(http, operator) == 1000

        wait_for(all_done, timeout=180, interval=1, what="1000 jobs to succeed")
    puts = Counter(c["headers"]["Idempotency-Key"] for c in upstream.calls(method="PUT"))
    assert set(puts) == set(ids)
    assert max(puts.values()) == 1, [k for k, v in puts.items() if v > 1][:5]
    with deployment.sql() as sql:
        workers = {w for (w,) in sql.execute("SELECT DISTINCT worker FROM attempts")}
        per_job = sql.execute(
            "SELECT count(*) FROM attempts GROUP BY job_id HAVING count(*) > 1"
        ).fetchall()
    assert len({w.split(":")[1] for w in workers}) >= 2, workers  # both processes did work
    assert per_job == []


def _count_succeeded(http, headers) -> int:
    total, cursor = 0, None
    while True:
        params = {"status": "succeeded", "limit": 500, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/jobs", params=params, headers=headers).json()
        total += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return total


def test_bad_configuration_fails_at_start_with_one_line_naming_the_variable(deployment):
    deployment.env["COURIER_MAX_ATTEMPTS"] = "lots"
    done = deployment.run("migrate")
    assert done.returncode == 1
    assert "COURIER_MAX_ATTEMPTS" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_usage_exits_2(deployment):
    done = deployment.run("token", "create", "--role", "client")
    assert done.returncode == 2
    assert "--tenant" in done.stderr


def test_every_command_has_help(deployment):
    for command in (
        ["dev"],
        ["migrate"],
        ["api"],
        ["worker"],
        ["token", "create"],
        ["token", "list"],
        ["token", "revoke"],
        ["upstream-mock"],
    ):
        done = deployment.run(*command, "--help")
        assert done.returncode == 0, (command, done.stderr)
        assert "Usage" in done.stdout


def test_a_revoked_token_is_refused(deployment):
    deployment.start_api()
    done = deployment.run("token", "create", "--tenant", "acme")
    secret = done.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {secret}"}
    with deployment.http() as http:
        assert http.get("/v1/jobs", headers=headers).status_code == 200
        assert deployment.run("token", "revoke", secret).returncode == 0
        assert http.get("/v1/jobs", headers=headers).status_code == 401


def test_job_types_from_job_modules_run_in_the_api_and_the_workers(deployment):
    deployment.env["COURIER_JOB_MODULES"] = "tests.support.job_types"
    deployment.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    deployment.start_api()
    deployment.start_worker(threads=2)
    with deployment.http() as http:
        body = {"type": "bug_for_test", "payload": {"a": 1, "b": 2}}
        job = run_to_success(http, deployment.token(), body)
    assert job["result"] == {"ratio": 0.5}


def test_a_job_module_that_cannot_be_imported_fails_at_start_in_one_line(deployment):
    deployment.env["COURIER_JOB_MODULES"] = "acme_jobs_not_installed"
    done = deployment.run("migrate")
    assert done.returncode == 1
    assert "COURIER_JOB_MODULES" in done.stderr and "acme_jobs_not_installed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
