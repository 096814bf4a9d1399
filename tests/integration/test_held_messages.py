"""What the reconciler reads of RabbitMQ: every message a queue holds, ready or unacknowledged,
counted live, and unknown rather than 0 when it cannot tell."""

from __future__ import annotations

import pika
import pytest

from delivery import held_messages
from tests.support import services
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


def held(vhost: str, *queues: str, api_url: str | None = services.RABBIT_API):
    url = services.amqp_url(vhost)
    return held_messages.held(
        list(queues), parameters=pika.URLParameters(url), broker_url=url, api_url=api_url
    )


@pytest.fixture
def channel(vhost):
    with services.SHARED_RABBITMQ.channel(vhost) as channel:
        channel.queue_declare("sync", durable=True)
        for i in range(10):
            services.RabbitTarget.send(channel, "sync", b"m%d" % i)
        yield channel


def unacknowledged_in_statistics(vhost: str) -> int | None:
    return (services.SHARED_RABBITMQ.queue(vhost, "sync") or {}).get("messages_unacknowledged")


def test_counts_ready_and_unacknowledged_messages_and_sees_a_purge_at_once(vhost, channel):
    for _ in range(4):
        channel.basic_get("sync")  # delivered, not acknowledged
    wait_for(lambda: unacknowledged_in_statistics(vhost) == 4, timeout=15, what="statistics")
    assert held(vhost, "sync") == {"sync": 10}
    channel.queue_purge("sync")
    # The statistics still count the six ready messages for a few seconds; the queue does not.
    assert held(vhost, "sync") == {"sync": 4}


def test_a_missing_queue_holds_nothing_and_an_unknown_count_is_none(vhost, channel):
    wait_for(lambda: held(vhost, "sync") == {"sync": 10}, timeout=15, what="statistics")
    assert held(vhost, "sync", "low") == {"sync": 10, "low": 0}
    assert held(vhost, "sync", api_url=None) == {"sync": None}
    assert held(vhost, "sync", api_url="http://127.0.0.1:1") == {"sync": None}
