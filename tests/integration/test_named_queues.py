"""Named queues: a job type moved to queue `low` (COURIER_JOB_QUEUES) gets everything `sync`
has — priorities, dead letters with headers, replays, relay, reaper, reconciler, depths."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import select

from store.models import Attempt
from store.types import utcnow
from tests.support import services
from tests.support.polling import holds_for, wait_for
from tests.support.records import add_queued, insert_jobs

pytestmark = pytest.mark.integration

#: customer_sync moved to `low`; every other type stays on `sync`.
MOVED = (("customer_sync", "low"),)


@pytest.fixture
def job_queues() -> tuple[tuple[str, str], ...]:
    return MOVED


def xq_headers(stack, queue: str) -> list[dict]:
    """The headers of the dead letters in `<queue>.XQ`."""
    return [m["properties"]["headers"] for m in services.queue_messages(stack.vhost, f"{queue}.XQ")]


def test_a_moved_job_type_is_published_to_its_queue_and_shows_it(stack, upstream):
    job_id = stack.submit(type="customer_sync", entity_id="c_low")
    other = stack.submit(type="invoice_sync", entity_id="i_sync")
    wait_for(lambda: stack.ready("low") == 1 and stack.ready("sync") == 1, what="one message each")
    shown = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=stack.headers).json
    assert (shown["queue"], shown["schedule_id"], shown["scheduled_for"]) == ("low", None, None)
    listed = stack.client.simulate_get("/v1/jobs", headers=stack.headers).json["items"]
    assert {j["id"]: j["queue"] for j in listed} == {job_id: "low", other: "sync"}
    stack.start_worker()
    stack.wait_status(job_id, "succeeded")
    stack.wait_status(other, "succeeded")


def test_priorities_order_work_within_a_queue(stack, upstream):
    low_first = [
        stack.submit(type="customer_sync", entity_id=f"c_p0_{i}", priority=0) for i in range(4)
    ]
    urgent = [
        stack.submit(type="customer_sync", entity_id=f"c_p9_{i}", priority=9) for i in range(4)
    ]
    wait_for(lambda: stack.ready("low") == 8, what="eight messages waiting in low")
    stack.start_worker(threads=1)
    for job_id in low_first + urgent:
        stack.wait_status(job_id, "succeeded")
    with stack.sessions() as session:
        started = session.scalars(select(Attempt.job_id).order_by(Attempt.started_at)).all()
    assert {str(i) for i in started[:4]} == set(urgent)


def test_a_job_exhausting_its_attempts_lands_in_low_xq_and_its_replay_runs_on_low(stack, upstream):
    stack.start_worker()
    upstream.script("GET", "/crm/customers/c_dead", {"status": 503}, repeat_last=True)
    old_id = stack.submit(type="customer_sync", entity_id="c_dead", max_attempts=2)
    stack.wait_status(old_id, "dead")
    wait_for(lambda: xq_headers(stack, "low"), what="the dead letter in low.XQ")
    assert xq_headers(stack, "low") == [
        {"x-job-id": old_id, "x-error-type": "UpstreamUnavailable", "x-attempts": 2}
    ]
    assert xq_headers(stack, "sync") == []
    upstream.reset()
    operator = stack.token("ops", "operator")
    replayed = stack.client.simulate_post(f"/v1/jobs/{old_id}/replay", headers=operator)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json["queue"] == "low"
    stack.wait_status(replayed.json["id"], "succeeded")
    assert xq_headers(stack, "low") == []
    assert stack.job(replayed.json["id"]).queue == "low"


def test_a_replay_goes_to_the_queue_its_type_runs_on_now(stack, upstream):
    # Dead on `sync`, before COURIER_JOB_QUEUES moved customer_sync to `low`.
    single, bulk = insert_jobs(
        stack.engine,
        2,
        entity_id=lambda i: f"c_old_{i}",
        status="dead",
        attempts=1,
        error_type="UpstreamUnavailable",
        finished_at=utcnow(),
    )
    assert stack.job(single).queue == stack.job(bulk).queue == "sync"
    operator = stack.token("ops", "operator")
    one = stack.client.simulate_post(f"/v1/jobs/{single}/replay", headers=operator)
    assert one.status_code == 202, one.text
    many = stack.client.simulate_post(
        "/v1/dead-letters/replay", json={"job_ids": [str(bulk)]}, headers=operator
    )
    assert many.status_code == 202, many.text
    [pair] = many.json["replayed"]
    news = [one.json["id"], pair["new_job_id"]]
    assert [stack.job(n).queue for n in news] == ["low", "low"]
    wait_for(lambda: stack.ready("low") == 2, what="both replays published to low")
    assert stack.ready("sync") == 0
    stack.start_worker()
    for new in news:
        stack.wait_status(new, "succeeded")


def test_the_relay_publishes_a_waiting_low_job_to_low(stack, upstream):
    job_id = add_queued(stack.sessions, type="customer_sync", queue="low", entity_id="c_relay")
    stack.start_worker()
    assert stack.wait_status(str(job_id), "succeeded").published_at is not None
    assert services.SHARED_RABBITMQ.queue(stack.vhost, "low") is not None


def test_the_reaper_retries_a_low_job_whose_worker_vanished(stack, upstream):
    past = utcnow() - timedelta(minutes=5)
    [job_id] = insert_jobs(
        stack.engine,
        1,
        type="customer_sync",
        queue="low",
        entity_id="c_reaped",
        status="running",
        attempts=1,
        started_at=past,
        lease_expires_at=past,
    )
    stack.start_worker()
    job = stack.wait_status(str(job_id), "succeeded")
    assert job.attempts == 2
    assert [a.status for a in stack.attempts(job_id)] == ["succeeded"]


def test_the_reconciler_republishes_a_job_whose_message_was_purged_from_low_in_the_console(
    stack, upstream
):
    job_id = stack.submit(type="customer_sync", entity_id="c_purged")
    wait_for(lambda: stack.ready("low") == 1, what="the message in low")
    with services.SHARED_RABBITMQ.api() as api:
        api.delete(f"/api/queues/{quote(stack.vhost, safe='')}/low/contents").raise_for_status()
    assert stack.ready("low") == 0
    stack.start_worker(reconcile_interval_s=0.5, reconcile_settle_s=0.5)
    assert stack.wait_status(job_id, "succeeded").attempts == 1


def test_stats_and_metrics_list_every_queue(stack, upstream):
    stack.submit(type="customer_sync", entity_id="c_depth")
    wait_for(lambda: stack.ready("low") == 1, what="the message in low")
    operator = stack.token("ops", "operator")
    queues = stack.client.simulate_get("/v1/stats", headers=operator).json["queues"]
    assert set(queues) == {"low", "sync"}
    metrics = stack.client.simulate_get("/metrics").text
    for queue in ("low", "sync"):
        assert f'courier_queue_messages{{queue="{queue}",state="ready"}}' in metrics


def test_a_worker_for_sync_only_leaves_low_jobs_queued(stack, upstream):
    on_low = stack.submit(type="customer_sync", entity_id="c_wait")
    on_sync = stack.submit(type="invoice_sync", entity_id="i_run")
    stack.start_worker(queues={"sync"})
    stack.wait_status(on_sync, "succeeded")
    holds_for(lambda: stack.job(on_low).status == "queued", 2, what="the low job waits")
    assert stack.ready("low") == 1
    stack.start_worker(queues={"low"})
    stack.wait_status(on_low, "succeeded")


def test_the_openapi_job_object_has_its_queue_and_schedule_fields(stack):
    document = stack.client.simulate_get("/openapi.json").json
    job = document["components"]["schemas"]["JobOut"]
    assert {"queue", "schedule_id", "scheduled_for"} <= set(job["required"])
