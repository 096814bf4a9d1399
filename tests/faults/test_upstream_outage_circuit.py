"""A CRM outage with a backlog: the circuit opens, the backlog waits without spending
attempts, a few probes find the CRM back, and every job then succeeds."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.faults.harness import elapsed
from tests.support.polling import wait_for

pytestmark = pytest.mark.faults

JOBS = 500
OUTAGE_S = 60.0
PROBES = 3


def circuit(deployment) -> tuple[str, bool]:
    with deployment.sql() as conn:
        row = conn.execute("SELECT state, forced FROM circuits WHERE upstream = 'crm'").fetchone()
    return (row[0], row[1]) if row else ("closed", False)


def test_a_crm_outage_parks_the_backlog_on_its_circuit_and_every_job_succeeds_once_it_recovers(
    deployment, upstream
):
    deployment.env.update(
        {
            "COURIER_CIRCUIT_COOLDOWN_S": "10",  # half-open after 10 s, then 20 s, 40 s
            "COURIER_CIRCUIT_PROBES": str(PROBES),
            # Failures before the circuit opens are retried only after it has.
            "COURIER_MIN_BACKOFF_MS": "2000",
            "COURIER_MAX_BACKOFF_MS": "4000",
        }
    )
    upstream.script("GET", "/crm/customers/c_*", {"status": 503}, repeat_last=True)
    deployment.start_api()
    workers = deployment.start_worker(processes=2, threads=8)
    bodies = [
        {"type": "customer_sync", "entity_id": f"c_{i}", "max_attempts": 4} for i in range(JOBS)
    ]
    began = time.monotonic()
    job_ids = deployment.submit_all(bodies)
    operator = deployment.token("ops", "operator")

    wait_for(lambda: circuit(deployment)[0] == "open", timeout=20, what="the CRM circuit open")
    # The backlog waits on the circuit: queued or retrying, waiting_for upstream:crm.
    wait_for(
        lambda: deployment.count("waiting_for = 'upstream:crm'") > JOBS // 2,
        timeout=20,
        what="most jobs waiting for upstream:crm",
    )
    with deployment.http() as http:
        listed = http.get("/v1/upstreams", headers=operator).json()["upstreams"]
    crm = next(u for u in listed if u["upstream"] == "crm")
    assert crm["state"] in ("open", "half_open") and crm["forced"] is False

    time.sleep(max(0.0, OUTAGE_S - elapsed(began)))  # the outage itself: 60 s of 503s
    upstream.script("GET", "/crm/customers/c_*")  # recovered: the demo CRM answers again

    report = deployment.settle_and_check(job_ids, timeout=110 - elapsed(began))
    # Counted by their answers: a call may still have got a 503 as the script changed.
    answered_503 = len(
        [
            c
            for c in upstream.calls(method="GET")
            if c["path"].startswith("/crm/customers/") and c["status"] == 503
        ]
    )

    statuses = Counter(report.jobs[j]["status"] for j in job_ids)
    assert statuses == {"succeeded": JOBS}
    spent = Counter(len(report.attempts[j]) for j in job_ids)
    # No job spends more than one failed attempt (before the circuit opened, or as a probe
    # that found the CRM still down) before the attempt that succeeds.
    assert set(spent) <= {1, 2}, spent
    for job_id in job_ids:
        trail = [(a["status"], a["error_type"]) for a in report.attempts[job_id]]
        assert trail[-1] == ("succeeded", None)
        assert all(t == ("failed", "UpstreamUnavailable") for t in trail[:-1]), trail
    # Waiting is not failing: the backlog was held back, not tried against the dead CRM.
    # Each 503 cost one job its one failed attempt: those in flight as the circuit opened
    # (16 threads), and the probes of the two half-opens that found it still down.
    assert spent[2] == answered_503 < 60, (spent, answered_503)
    assert circuit(deployment) == ("closed", False)
    assert deployment.count("waiting_for IS NOT NULL") == 0
    assert workers.restarts() == 0
    print(f"attempts per job: {dict(spent)}; 503s answered: {answered_503}; {elapsed(began):.0f} s")
