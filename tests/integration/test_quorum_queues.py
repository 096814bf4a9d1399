"""COURIER_QUEUE_TYPE=quorum on one RabbitMQ node: every queue is a quorum queue, a Courier
queue is three of them (its priority bands), and a high-priority backlog still runs first."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from dramatiq.worker import Worker

from courier.settings import Settings
from delivery import bands, held_messages, queue_depths
from delivery.quorum import DELIVERY_LIMIT
from middleware.work_order import RankedWork
from tests.faults.harness import slow
from tests.support import services
from tests.support.polling import wait_for
from tests.support.processes import free_port
from tests.support.stack import build

pytestmark = pytest.mark.integration

BANDS = ["sync", "sync.mid", "sync.high"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(queue_type="quorum")


def queues(stack) -> dict[str, dict]:
    with services.SHARED_RABBITMQ.api() as api:
        listed = api.get(f"/api/queues/{stack.vhost.replace('/', '%2F')}").json()
    return {q["name"]: q for q in listed}


def test_every_queue_is_a_quorum_queue_with_dead_letters_in_the_base_queues_xq(stack):
    stack.start_worker()
    wait_for(lambda: set(BANDS) <= set(queues(stack)), what="the bands of sync declared")
    found = queues(stack)
    assert set(found) == {*BANDS, "sync.DQ", "sync.XQ"}  # no .DQ or .XQ per band
    for name in [*BANDS, "sync.DQ"]:
        assert found[name]["type"] == "quorum", name
        assert found[name]["arguments"] == {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "sync.XQ",
        }, name
    assert found["sync.XQ"]["type"] == "quorum"
    assert found["sync.XQ"]["arguments"] == {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-message-ttl": 7 * 86_400_000,
    }


def test_a_message_goes_to_the_band_of_its_priority_and_still_names_its_queue(stack):
    for priority in (0, 3, 4, 6, 7, 9):
        stack.submit(type="customer_sync", entity_id=f"c_{priority}", priority=priority)
    assert [stack.ready(name) for name in BANDS] == [2, 2, 2]
    for name in BANDS:
        bodies = services.queue_messages(stack.vhost, name)
        assert {m["payload"].count('"queue_name":"sync"') for m in bodies} == {1}, name


def test_a_backlog_runs_its_high_band_first(stack, upstream, monkeypatch):
    # The whole backlog fits in the worker's prefetch, and the first job takes long enough
    # for every band's consumer to deliver what it holds: from then on the worker's own
    # order decides, not which consumer connected first.
    monkeypatch.setattr("dramatiq.worker.QUEUE_PREFETCH", 100)
    low = [stack.submit(type="customer_sync", entity_id=f"c_low_{i}") for i in range(5)]
    high = [
        stack.submit(type="customer_sync", entity_id=f"c_high_{i}", priority=p)
        for i, p in enumerate((7, 9, 8))
    ]
    for job_id in [*low, *high]:
        upstream.script("GET", f"/crm/customers/{stack.job(job_id).entity_id}", slow(1.0))
    stack.start_worker(threads=1)

    def first_runs() -> list[str]:
        started = {j: stack.attempts(j)[0].started_at for j in [*low, *high] if stack.attempts(j)}
        return sorted(started, key=started.__getitem__)

    wait_for(lambda: len(first_runs()) >= 4, timeout=30, what="four jobs started")
    first, *then = first_runs()[:4]
    # The first job may be any: it started before the other bands were delivered. Then the
    # high band, highest priority first, before any other low one.
    expected = [j for j in (high[1], high[2], high[0]) if j != first]
    assert then[: len(expected)] == expected
    assert isinstance(_worker_of(stack).work_queue, RankedWork)
    # Each delivery was acknowledged on the channel of its own band.
    for job_id in [*low, *high]:
        stack.wait_status(job_id, "succeeded")
    for name, count in zip(BANDS, (len(low), 0, len(high)), strict=True):
        stack.wait_acknowledged(count, name)


def test_a_dead_job_of_the_high_band_lands_in_sync_xq_with_its_headers(stack, upstream):
    stack.start_worker()
    upstream.script("GET", "/crm/customers/c_dead", {"status": 503}, repeat_last=True)
    job_id = stack.submit(type="customer_sync", entity_id="c_dead", max_attempts=2, priority=9)
    stack.wait_status(job_id, "dead")
    wait_for(lambda: services.queue_messages(stack.vhost, "sync.XQ"), what="the dead letter")
    [message] = services.queue_messages(stack.vhost, "sync.XQ")
    headers = message["properties"]["headers"]
    # A quorum queue counts the returns of our peeks in x-delivery-count.
    assert headers.keys() - {"x-delivery-count"} == {"x-job-id", "x-error-type", "x-attempts"}
    assert (headers["x-job-id"], headers["x-error-type"], headers["x-attempts"]) == (
        job_id,
        "UpstreamUnavailable",
        2,
    )


def test_a_purge_empties_every_band(stack):
    for priority in (0, 5, 9):
        stack.submit(type="customer_sync", entity_id=f"c_{priority}", priority=priority)
    assert [stack.ready(name) for name in BANDS] == [1, 1, 1]
    operator = stack.token("ops", "operator")
    response = stack.client.simulate_post("/v1/queues/sync/purge", headers=operator)
    assert (response.status_code, response.json) == (200, {"queue": "sync", "cancelled": 3})
    assert [stack.ready(name) for name in BANDS] == [0, 0, 0]


def test_depths_and_held_counts_sum_a_queues_bands(stack):
    for i, priority in enumerate((0, 5, 9, 9)):
        stack.submit(type="customer_sync", entity_id=f"c_{i}", priority=priority)
    settings = stack.settings

    def depth() -> dict:
        return queue_depths.depths(
            ["sync"],
            broker_url=settings.broker_url,
            api_url=settings.rabbitmq_api_urls,
            queue_type=bands.QUORUM,
        )["sync"]

    wait_for(lambda: depth()["ready"] == 4, timeout=15, what="4 ready in the statistics")
    assert depth() == {"ready": 4, "unacked": 0, "delayed": 0, "dead": 0}
    held = held_messages.held(
        ["sync"],
        parameters=stack.api_broker.parameters,
        broker_url=settings.broker_url,
        api_url=settings.rabbitmq_api_urls,
        queue_type=bands.QUORUM,
    )
    assert held == {"sync": 4}


def _worker_of(stack) -> Worker:
    [(_, worker)] = stack.workers
    return worker


def test_a_dead_first_node_is_skipped_by_every_connection_and_the_management_api(
    settings, engine, sessions
):
    dead = free_port()  # nothing listens there: a refused connection, at once
    live_api = settings.rabbitmq_api_urls[0]
    failing_over = settings.replace(
        broker_url=f"amqp://guest:guest@127.0.0.1:{dead}/{quote(_vhost(settings), safe='')},"
        f"{settings.broker_url}",
        rabbitmq_api_url=f"http://guest:guest@127.0.0.1:{dead},{live_api}",
    )
    stack = build(failing_over, engine, sessions)
    try:
        operator = stack.token("ops", "operator")
        ids = [stack.submit(type="customer_sync", entity_id=f"c_{i}", priority=i) for i in (0, 9)]
        wait_for(
            lambda: (
                stack.client.simulate_get("/v1/stats", headers=operator).json["queues"]["sync"][
                    "ready"
                ]
                == 2
            ),
            timeout=15,
            what="both jobs ready in the statistics of the live node's API",
        )
        stack.start_worker()
        for job_id in ids:
            stack.wait_status(job_id, "succeeded")
        response = stack.client.simulate_post("/v1/queues/sync/purge", headers=operator)
        assert response.status_code == 200, response.text
    finally:
        stack.close()


def _vhost(settings: Settings) -> str:
    return unquote(settings.broker_url.rsplit("/", 1)[1])
