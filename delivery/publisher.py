"""Publishing many messages with one broker round trip, as safely as one-by-one confirms.

Dramatiq's RabbitMQ broker waits for a publisher confirm after every message (~1 ms
each). A batch is instead published on a channel in AMQP transaction mode and committed
once: `tx.commit` returns only after RabbitMQ has taken every persistent message, so the
batch is as safe as confirmed one by one, and either all of it is taken or none.
`GroupPublisher` does the same for the messages of concurrent requests.

RabbitMQ blocks publishers while a memory or disk alarm lasts: it takes a message and then
answers nothing. A publish waits at most `BLOCKED_TIMEOUT_S` on a blocked connection, and
for `BLOCKED_BACKOFF_S` after that every publish fails at once: the jobs are safe in SQL
and the relay publishes them when the alarm is over.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
from dramatiq import Broker, Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionClosed

from background.batcher import Batcher, Request
from delivery import bands, quorum

_channels = threading.local()


#: A publish that lost its connection (RabbitMQ restarted since the last one) or found a
#: queue gone is tried again once, on a new connection or after declaring the queue again.
_ATTEMPTS = 2

#: The longest a publish waits on a connection RabbitMQ has blocked; then pika closes it.
BLOCKED_TIMEOUT_S = 2.0
#: After a publish was blocked, publishes to that broker fail at once for this long.
BLOCKED_BACKOFF_S = 5.0

_blocked_until: weakref.WeakKeyDictionary[Broker, float] = weakref.WeakKeyDictionary()

#: On quorum queues a publishing channel is replaced after this long. On RabbitMQ 3.10 a
#: channel that has lived through the change of a quorum queue's leader can have its
#: publishes to that queue confirmed and never enqueued (the queue keeps its publisher's
#: sequence from before); a new channel is a new publisher. This bounds such a loss, which
#: the reconciler then heals; opening a channel costs two round trips.
CHANNEL_MAX_AGE_S = 2.0


class BrokerBlocked(ConnectionClosed):
    """RabbitMQ blocks publishers (a memory or disk alarm); the messages were not taken."""


def bound_blocked_waits(broker: Broker) -> None:
    """Make the broker's connections give up on a blocked publish after `BLOCKED_TIMEOUT_S`
    (unless its URL sets `blocked_connection_timeout` itself)."""
    if not isinstance(broker, RabbitmqBroker):
        return
    parameters = broker.parameters
    for each in parameters if isinstance(parameters, list) else [parameters]:
        if each.blocked_connection_timeout is None:
            each.blocked_connection_timeout = BLOCKED_TIMEOUT_S


def send(broker: Broker, messages: Sequence[Message[Any]]) -> None:
    """Publish `messages`; raises a Dramatiq BrokerConnectionError if they were not all taken."""
    if not messages:
        return
    if not isinstance(broker, RabbitmqBroker):
        for message in messages:
            broker.enqueue(message)
        return
    if time.monotonic() < _blocked_until.get(broker, 0.0):
        raise BrokerBlocked("RabbitMQ blocked the last publish (a memory or disk alarm)")
    for attempt in range(1, _ATTEMPTS + 1):
        for queue in {m.queue_name for m in messages}:
            broker.declare_queue(queue, ensure=True)
        try:
            unroutable = _publish_in_transaction(broker, messages)
        except pika.exceptions.ConnectionBlockedTimeout as e:
            # Another connection would be blocked too: the alarm is the broker's.
            _forget_channel(broker)
            _blocked_until[broker] = time.monotonic() + BLOCKED_BACKOFF_S
            raise BrokerBlocked(e) from None
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            _forget_channel(broker)
            if attempt == _ATTEMPTS:
                raise ConnectionClosed(e) from None
            continue
        if not unroutable:
            return
        # Their queue was deleted under us: RabbitMQ took the transaction but dropped these.
        # Declare it again and send just these; duplicates of the others are not needed.
        broker.queues_pending.update(unroutable)
        messages = [m for m in messages if _routing_key(broker, m) in unroutable]
    raise ConnectionClosed(f"no queue took the messages for {sorted(unroutable)}")


def _routing_key(broker: RabbitmqBroker, message: Message[Any]) -> str:
    """The message's queue, or on quorum queues the band of its priority (delivery.bands)."""
    priority = message.options.get("broker_priority")
    return bands.band_for(message.queue_name, priority, quorum.queue_type(broker))


def _publish_in_transaction(broker: RabbitmqBroker, messages: Sequence[Message[Any]]) -> set[str]:
    """Publish and commit; returns the queues of messages RabbitMQ returned as unroutable."""
    channel, returned = _tx_channel(broker)
    returned.clear()
    for message in messages:
        channel.basic_publish(
            exchange="",
            routing_key=_routing_key(broker, message),
            body=message.encode(),
            properties=pika.BasicProperties(
                delivery_mode=2, priority=message.options.get("broker_priority")
            ),
            mandatory=True,
        )
    channel.tx_commit()
    # RabbitMQ sends a Basic.Return before the commit's answer; this hands it to the
    # channel's return callback.
    channel.connection.process_data_events(time_limit=0)
    return set(returned)


def _tx_channel(broker: RabbitmqBroker) -> tuple[Any, list[str]]:
    # One transactional channel per thread, on the broker's own (thread-local) connection,
    # with the queues of the messages it had returned.
    channel = getattr(_channels, "channel", None)
    if channel is not None and _too_old(broker):
        _close_quietly(channel)
        channel = None
    if channel is None or not channel.is_open or getattr(_channels, "broker", None) is not broker:
        channel = broker.connection.channel()
        channel.tx_select()
        returned: list[str] = []
        channel.add_on_return_callback(
            lambda _channel, method, _properties, _body: returned.append(method.routing_key)
        )
        _channels.channel, _channels.returned, _channels.broker = channel, returned, broker
        _channels.opened_at = time.monotonic()
    return channel, _channels.returned


def _too_old(broker: RabbitmqBroker) -> bool:
    age = time.monotonic() - _channels.opened_at
    return quorum.queue_type(broker) == bands.QUORUM and age > CHANNEL_MAX_AGE_S


def _close_quietly(channel: Any) -> None:
    with contextlib.suppress(pika.exceptions.AMQPError):
        if channel.is_open:
            channel.close()


def _forget_channel(broker: RabbitmqBroker) -> None:
    _channels.channel = None
    del broker.connection  # the next use reconnects


@dataclass
class _Send(Request):
    messages: Sequence[Message[Any]]


class GroupPublisher:
    """`send` for many threads: what they publish at the same moment goes in one transaction.

    A confirm per request cost the API and RabbitMQ about twice the CPU per message of a
    transaction shared by four requests. Each caller still returns only once RabbitMQ has
    taken its messages, and if the shared transaction fails, every caller in it gets the
    error and leaves its jobs to the relay, as with a publish of its own.
    """

    def __init__(self, broker: Broker, *, max_requests: int = 64, idle_s: float = 20.0) -> None:
        self.broker = broker
        # The thread closes its connection when it ends: idle, it would miss its heartbeats.
        self._batcher = Batcher(
            self._send,
            name="courier-group-publish",
            max_batch=max_requests,
            idle_s=idle_s,
            on_exit=self._close_connection,
        )

    def send(self, messages: Sequence[Message[Any]]) -> None:
        """As `send(broker, messages)`."""
        if not isinstance(self.broker, RabbitmqBroker):
            send(self.broker, messages)
        elif messages:
            self._batcher.submit(_Send(messages))

    def stop(self) -> None:
        """End the publishing thread once what was asked before this call is sent."""
        self._batcher.stop()

    def _close_connection(self) -> None:
        if isinstance(self.broker, RabbitmqBroker):
            _forget_channel(self.broker)

    def _send(self, batch: list[_Send]) -> None:
        send(self.broker, [m for request in batch for m in request.messages])
        for request in batch:
            request.done.set_result(None)
