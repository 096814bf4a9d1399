"""Dead letters: RabbitMQ's sync.XQ and SQL agree, through failures and replays."""

from __future__ import annotations

import pika
import pytest
from dramatiq import Message
from sqlalchemy import select

from store.models import AuditEntry
from tests.support import services
from tests.support.polling import wait_for
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def xq(stack) -> list[dict]:
    return services.queue_messages(stack.vhost, "sync.XQ")


def xq_job_ids(stack) -> set[str]:
    return {m["properties"]["headers"]["x-job-id"] for m in xq(stack)}


def make_dead(stack, upstream, entity_ids, headers=None):
    for entity_id in entity_ids:
        upstream.script("GET", f"/crm/customers/{entity_id}", {"status": 503}, repeat_last=True)
    ids = [
        stack.submit(type="customer_sync", entity_id=entity_id, max_attempts=2, headers=headers)
        for entity_id in entity_ids
    ]
    for job_id in ids:
        stack.wait_status(job_id, "dead")
    return ids


def api_dead_letter_ids(stack, operator) -> set[str]:
    return {
        j["id"]
        for j in stack.client.simulate_get(
            "/v1/dead-letters", query_string="limit=500", headers=operator
        ).json["items"]
    }


def test_a_dead_job_is_in_sync_xq_with_headers_that_explain_it(stack, upstream):
    stack.start_worker()
    [job_id] = make_dead(stack, upstream, ["c_dead"])
    wait_for(lambda: xq(stack), what="the dead letter in sync.XQ")
    [message] = xq(stack)
    headers = message["properties"]["headers"]
    assert headers == {"x-job-id": job_id, "x-error-type": "UpstreamUnavailable", "x-attempts": 2}
    assert message["properties"]["delivery_mode"] == 2
    assert stack.job(job_id).dead_lettered_at is not None
    operator = stack.token("ops", "operator")
    assert api_dead_letter_ids(stack, operator) == {job_id}


def test_dead_letters_can_be_filtered(stack, upstream):
    stack.start_worker()
    make_dead(stack, upstream, ["c_a"], headers=stack.token("acme"))
    [other] = make_dead(stack, upstream, ["c_b"], headers=stack.token("globex"))
    operator = stack.token("ops", "operator")
    page = stack.client.simulate_get(
        "/v1/dead-letters", query_string="tenant=globex", headers=operator
    ).json
    assert [j["id"] for j in page["items"]] == [other]
    none = stack.client.simulate_get(
        "/v1/dead-letters", query_string="error_type=UpstreamNotFound", headers=operator
    )
    assert none.json["items"] == []


def test_replaying_a_dead_job_links_both_ways_and_clears_its_dead_letter(stack, upstream):
    stack.start_worker()
    [old_id] = make_dead(stack, upstream, ["c_r"])
    wait_for(lambda: xq_job_ids(stack) == {old_id}, what="the dead letter")
    old_attempts = [(a.number, a.status, a.decision) for a in stack.attempts(old_id)]
    upstream.reset()  # the upstream recovered
    operator = stack.token("ops", "operator")
    response = stack.client.simulate_post(
        f"/v1/jobs/{old_id}/replay", json={"reason": "CRM is back"}, headers=operator
    )
    assert response.status_code == 202, response.text
    new = response.json
    assert new["replay_of"] == old_id and new["status"] == "queued"
    assert response.headers["Location"] == f"/v1/jobs/{new['id']}"
    stack.wait_status(new["id"], "succeeded")
    old = stack.job(old_id)
    assert old.status == "dead" and str(old.replayed_by) == new["id"]
    assert [(a.number, a.status, a.decision) for a in stack.attempts(old_id)] == old_attempts
    assert xq(stack) == []
    assert api_dead_letter_ids(stack, operator) == set()
    with stack.sessions() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.job_id == old.id)).all()
    assert entry.action == "replay" and entry.reason == "CRM is back"
    assert entry.details["new_job_id"] == new["id"] and entry.actor.startswith("operator:ops")


def test_a_dead_job_can_be_replayed_once(stack, upstream):
    stack.start_worker()
    [old_id] = make_dead(stack, upstream, ["c_once"])
    operator = stack.token("ops", "operator")
    assert (
        stack.client.simulate_post(f"/v1/jobs/{old_id}/replay", headers=operator).status_code == 202
    )
    again = stack.client.simulate_post(f"/v1/jobs/{old_id}/replay", headers=operator)
    assert again.status_code == 409 and "already replayed" in again.json["description"]


def test_only_operators_replay_dead_jobs(stack, upstream):
    stack.start_worker()
    client = stack.token("acme")
    [old_id] = make_dead(stack, upstream, ["c_op"], headers=client)
    assert (
        stack.client.simulate_post(f"/v1/jobs/{old_id}/replay", headers=client).status_code == 403
    )
    assert stack.job(old_id).replayed_by is None


def test_bulk_replay_of_hundreds_of_dead_jobs(stack, upstream):
    upstream.script("GET", "/crm/customers/*", {"status": 503}, repeat_last=True)
    ids = stack.submit_all(
        {"type": "customer_sync", "entity_id": f"c_{i}", "max_attempts": 1} for i in range(300)
    )
    # Every failure counts here: no circuit holds the jobs back for the CRM's sake.
    stack.start_worker(threads=8, circuit_failures=10_000)
    wait_for(
        lambda: all(stack.job(i).status == "dead" for i in ids[-5:]), timeout=60, what="jobs to die"
    )
    for job_id in ids:
        stack.wait_status(job_id, "dead")
    wait_for(lambda: len(xq(stack)) == 300, what="300 dead letters")
    upstream.reset()
    operator = stack.token("ops", "operator")
    response = stack.client.simulate_post(
        "/v1/dead-letters/replay",
        json={"type": "customer_sync", "reason": "bulk"},
        headers=operator,
    )
    assert response.status_code == 202, response.text
    assert response.json["count"] == 300
    assert {r["job_id"] for r in response.json["replayed"]} == set(ids)
    new_ids = [r["new_job_id"] for r in response.json["replayed"]]
    for job_id in new_ids:
        stack.wait_status(job_id, "succeeded", timeout=60)
    assert xq(stack) == []
    assert api_dead_letter_ids(stack, operator) == set()


def test_bulk_replay_respects_ids_and_limit(stack, upstream):
    stack.start_worker()
    ids = make_dead(stack, upstream, ["c_1", "c_2", "c_3"])
    upstream.reset()  # replays succeed, so they do not become dead letters themselves
    operator = stack.token("ops", "operator")
    by_id = stack.client.simulate_post(
        "/v1/dead-letters/replay", json={"job_ids": [ids[0]]}, headers=operator
    ).json
    assert [r["job_id"] for r in by_id["replayed"]] == [ids[0]]
    limited = stack.client.simulate_post(
        "/v1/dead-letters/replay", json={"limit": 1, "all": True}, headers=operator
    ).json
    assert limited["count"] == 1
    assert api_dead_letter_ids(stack, operator) == set(ids) - {
        ids[0],
        limited["replayed"][0]["job_id"],
    }


def test_a_message_moved_from_xq_back_to_the_queue_does_not_rewrite_history(stack, upstream):
    stack.start_worker()
    [job_id] = make_dead(stack, upstream, ["c_move"])
    wait_for(lambda: xq(stack), what="the dead letter")
    before = [(a.number, a.status) for a in stack.attempts(job_id)]
    # What the console's "move messages" (shovel) does: take from sync.XQ, publish to sync.
    connection = pika.BlockingConnection(pika.URLParameters(stack.settings.broker_url))
    channel = connection.channel()
    method, properties, body = channel.basic_get("sync.XQ")
    channel.basic_publish("", "sync", body, properties)
    channel.basic_ack(method.delivery_tag)
    connection.close()
    wait_for(
        lambda: stack.workers[0][0].broker.get_queue_message_counts("sync")[:2] == (0, 0),
        what="the queue to drain",
    )
    job = stack.job(job_id)
    assert job.status == "dead" and job.attempts == 2
    assert [(a.number, a.status) for a in stack.attempts(job_id)] == before


def test_a_job_for_a_type_no_worker_knows_ends_dead_in_xq(stack):
    stack.start_worker()
    job_id = stack.submit(type="customer_sync", entity_id="c_x", run_at=LATER)
    stack.api_broker.enqueue(
        Message(queue_name="sync", actor_name="retired_sync", args=(job_id,), kwargs={}, options={})
    )
    job = stack.wait_status(job_id, "dead")
    assert job.error_type == "ActorNotFound" and job.attempts == 0
    wait_for(lambda: len(xq(stack)) == 1, what="the message in sync.XQ")
