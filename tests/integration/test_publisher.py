"""Publishing on real RabbitMQ: shared transactions, lost connections and deleted queues."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from urllib.parse import quote

import pika
import pytest
from dramatiq.errors import BrokerConnectionError

from courier.broker import publishing_broker
from delivery import dead_letters, publisher
from delivery.outbox import message_for
from store.outbox import JobMessage
from tests.support import services
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

QUEUE = "sync"


@pytest.fixture
def broker(settings):
    broker = publishing_broker(settings)
    broker.declare_queue(QUEUE, ensure=True)
    yield broker
    broker.close()


def messages(prefix: str, n: int):
    """Messages whose correlation ids are `prefix-0`, `prefix-1`, ..."""
    return [
        message_for(JobMessage(uuid.uuid4(), "bench_noop", QUEUE, 0, 60, f"{prefix}-{i}", 0))
        for i in range(n)
    ]


def queued_ids(vhost: str) -> list[str]:
    """The correlation ids of the messages in the queue."""
    return [
        json.loads(m["payload"])["options"]["correlation_id"]
        for m in services.queue_messages(vhost, QUEUE)
    ]


class HeldPublisher(publisher.GroupPublisher):
    """Holds its first batch until released, so that the requests behind it form one batch."""

    def __init__(self, broker) -> None:
        super().__init__(broker)
        self.taken = threading.Event()
        self.release = threading.Event()
        self.batch_sizes: list[int] = []

    def _send(self, batch) -> None:
        if not self.taken.is_set():
            self.taken.set()
            self.release.wait(10)
        self.batch_sizes.append(len(batch))
        super()._send(batch)


def send_in_threads(group, batches):
    errors: list[BaseException] = []

    def run(batch):
        try:
            group.send(batch)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    return threads, errors


def send_behind_a_held_batch(group, first, rest):
    """Send `first`, then `rest` while the first batch is held: `rest` forms one batch."""
    [held], errors = send_in_threads(group, [first])
    assert group.taken.wait(10), "the first request was not taken"
    threads, more_errors = send_in_threads(group, rest)
    wait_for(lambda: group._batcher.waiting() == len(rest), what="the requests to queue up")
    group.release.set()
    for t in [held, *threads]:
        t.join(30)
    group.stop()
    return errors + more_errors


def test_concurrent_requests_share_one_transaction_and_every_message_arrives(broker, vhost):
    group = HeldPublisher(broker)
    first, rest = messages("first", 1), [messages(f"r{i}", 3) for i in range(5)]
    assert send_behind_a_held_batch(group, first, rest) == []
    assert group.batch_sizes == [1, 5]
    expected = {m.options["correlation_id"] for m in first + [m for b in rest for m in b]}
    assert sorted(queued_ids(vhost)) == sorted(expected)


def test_every_request_of_a_failed_transaction_gets_the_error(settings):
    # A vhost that does not exist: RabbitMQ refuses the connection.
    broker = publishing_broker(replace(settings, broker_url=services.amqp_url("no-such-vhost")))
    group = HeldPublisher(broker)
    errors = send_behind_a_held_batch(
        group, messages("f", 2), [messages(f"f{i}", 2) for i in range(3)]
    )
    assert group.batch_sizes == [1, 3]
    assert len(errors) == 4
    assert all(isinstance(e, BrokerConnectionError) for e in errors)


def test_messages_for_a_deleted_queue_are_sent_again_after_declaring_it(broker, vhost):
    publisher.send(broker, messages("before", 2))
    params = pika.URLParameters(services.amqp_url(vhost))
    with pika.BlockingConnection(params) as connection:
        connection.channel().queue_delete(QUEUE)
    publisher.send(broker, messages("after", 3))
    assert sorted(queued_ids(vhost)) == ["after-0", "after-1", "after-2"]


def test_an_idle_publisher_closes_its_connection_and_opens_one_when_needed(broker, vhost):
    group = publisher.GroupPublisher(broker, idle_s=0.1)
    before = set(broker.connections)
    group.send(messages("a", 2))
    opened = broker.connections - before
    assert opened
    wait_for(lambda: not (opened & broker.connections), what="the idle thread to close it")
    group.send(messages("b", 2))
    group.stop()
    assert sorted(queued_ids(vhost)) == ["a-0", "a-1", "b-0", "b-1"]


def test_on_quorum_queues_a_channel_older_than_its_max_age_is_replaced_and_nothing_is_lost(
    settings, vhost, monkeypatch
):
    broker = publishing_broker(settings.replace(queue_type="quorum"))
    broker.declare_queue(QUEUE, ensure=True)
    try:
        publisher.send(broker, messages("old", 2))
        old = publisher._channels.channel  # this thread's publishing channel
        publisher.send(broker, messages("same", 1))
        assert publisher._channels.channel is old, "replaced before its time"
        monkeypatch.setattr(publisher, "CHANNEL_MAX_AGE_S", 0.0)
        publisher.send(broker, messages("new", 2))
        new = publisher._channels.channel
        assert new is not old and old.is_closed and new.is_open
        assert sorted(queued_ids(vhost)) == ["new-0", "new-1", "old-0", "old-1", "same-0"]
    finally:
        broker.close()


def test_on_classic_queues_a_publishing_channel_is_kept(broker, vhost, monkeypatch):
    monkeypatch.setattr(publisher, "CHANNEL_MAX_AGE_S", 0.0)
    publisher.send(broker, messages("a", 1))
    kept = publisher._channels.channel
    publisher.send(broker, messages("b", 1))
    assert publisher._channels.channel is kept and kept.is_open
    assert sorted(queued_ids(vhost)) == ["a-0", "b-0"]


def test_a_dead_letter_whose_queue_was_deleted_lands_on_the_next_try(broker, vhost):
    with services.SHARED_RABBITMQ.api() as api:
        api.delete(f"/api/queues/{quote(vhost, safe='')}/sync.XQ").raise_for_status()
    (message,) = messages("dead", 1)
    headers = dead_letters.headers_for(str(uuid.uuid4()), "UpstreamUnavailable", 4)
    with pytest.raises(BrokerConnectionError):
        dead_letters.publish(broker, message, headers)
    dead_letters.publish(broker, message, headers)  # the relay's next copy
    assert len(services.queue_messages(vhost, "sync.XQ")) == 1
