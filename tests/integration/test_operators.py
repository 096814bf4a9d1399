"""The operators' numbers: /v1/stats, /metrics, and retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from store import retention
from store.models import Attempt, AuditEntry, Job
from store.types import utcnow
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


def run_mix(stack, upstream):
    """Two successes, one skip, one dead job after a retry."""
    upstream.script("GET", "/crm/customers/gone", {"status": 404})
    upstream.script("GET", "/crm/customers/down", {"status": 503}, repeat_last=True)
    stack.start_worker()
    headers = stack.token()
    ids = {}
    for entity, kind in (
        ("c_1", "customer_sync"),
        ("i_1", "invoice_sync"),
        ("gone", "customer_sync"),
        ("down", "customer_sync"),
    ):
        ids[entity] = stack.client.simulate_post(
            "/v1/jobs", json={"type": kind, "entity_id": entity, "max_attempts": 2}, headers=headers
        ).json["id"]
    for entity, status in (
        ("c_1", "succeeded"),
        ("i_1", "succeeded"),
        ("gone", "failed"),
        ("down", "dead"),
    ):
        stack.wait_status(ids[entity], status)
    return ids


def test_stats_count_jobs_rates_durations_and_queues(stack, upstream):
    run_mix(stack, upstream)
    operator = stack.token("ops", "operator")
    body = stack.client.simulate_get("/v1/stats", headers=operator).json
    assert (
        body["jobs"]["succeeded"] == 2 and body["jobs"]["failed"] == 1 and body["jobs"]["dead"] == 1
    )
    assert body["by_type"]["customer_sync"]["succeeded"] == 1
    assert body["by_type"]["invoice_sync"]["succeeded"] == 1
    assert body["success_rate"] == 0.5
    assert body["retry_count"] == 1
    assert body["avg_duration_ms"] is not None and body["p95_duration_ms"] >= 0
    assert set(body["queues"]["sync"]) == {"ready", "unacked", "delayed", "dead"}
    # The management API refreshes its figures every few seconds.
    wait_for(
        lambda: (
            stack.client.simulate_get("/v1/stats", headers=operator).json["queues"]["sync"]
            == {"ready": 0, "unacked": 0, "delayed": 0, "dead": 1}
        ),
        what="queue depths to settle",
    )


def test_stats_are_for_operators(stack):
    assert stack.client.simulate_get("/v1/stats", headers=stack.token()).status_code == 403


def test_queue_depths_are_null_when_the_management_api_is_unreachable(
    stack, settings, engine, sessions
):
    from tests.support.processes import free_port
    from tests.support.stack import build

    blind = build(
        settings.replace(rabbitmq_api_url=f"http://127.0.0.1:{free_port()}"), engine, sessions
    )
    try:
        body = blind.client.simulate_get("/v1/stats", headers=blind.token("ops", "operator"))
        assert body.status_code == 200
        assert body.json["queues"]["sync"] == {
            "ready": None,
            "unacked": None,
            "delayed": None,
            "dead": None,
        }
        metrics = blind.client.simulate_get("/metrics")
        assert metrics.status_code == 200 and "courier_queue_messages{" not in metrics.text
    finally:
        blind.api_broker.close()


def test_metrics_parse_and_agree_with_the_record(stack, upstream):
    run_mix(stack, upstream)
    response = stack.client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    jobs = {
        (s.labels["status"], s.labels["type"]): s.value for s in families["courier_jobs"].samples
    }
    assert jobs[("succeeded", "customer_sync")] == 1 and jobs[("dead", "customer_sync")] == 1
    assert jobs[("failed", "customer_sync")] == 1 and jobs[("queued", "invoice_sync")] == 0
    assert families["courier_dead_letters"].samples[0].value == 1
    histogram = families["courier_attempt_duration_seconds"]
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    with stack.sessions() as session:
        assert count == session.scalar(select(func.count()).select_from(Attempt))
    buckets = [s.value for s in histogram.samples if s.name.endswith("_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == count
    assert {s.labels["state"] for s in families["courier_queue_messages"].samples} == {
        "ready",
        "unacked",
        "delayed",
        "dead",
    }


def test_prune_deletes_old_finished_jobs_in_batches_but_keeps_dead_jobs_and_the_audit_log(
    stack, upstream
):
    ids = run_mix(stack, upstream)
    operator = stack.token("ops", "operator")
    replay = stack.client.simulate_post(
        f"/v1/jobs/{ids['gone']}/replay", json={"reason": "r"}, headers=operator
    )
    stack.wait_status(replay.json["id"], "succeeded")
    stack.stop_workers()
    with stack.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.finished_at.is_not(None))
            .values(finished_at=utcnow() - timedelta(days=40))
        )
    cutoff = utcnow() - timedelta(days=30)
    with stack.sessions() as session:
        assert retention.count_prunable(session, cutoff, include_dead=False) == {
            "succeeded": 3,
            "failed": 1,
        }
    batches = []
    assert retention.prune(stack.sessions, cutoff, batch=3, on_batch=batches.append) == 4
    assert batches == [3, 1]
    with stack.sessions() as session:
        left = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        assert left.get("succeeded") is None and left["dead"] == 1
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1
        orphans = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.job_id.not_in(select(Job.id)))
        )
        assert orphans == 0
    assert retention.prune(stack.sessions, cutoff, include_dead=True) == 1
