"""Copies of dead jobs' messages in the queue's dead-letter queue (`<queue>.XQ`).

Dramatiq's own `message.fail()` nacks the delivery, which cannot carry headers; Courier
publishes the copy itself, with headers an operator can read in the RabbitMQ console, and
then acks the delivery. SQL remains the record: the copy is a convenience that expires.
"""

from __future__ import annotations

from typing import Any

import pika
from dramatiq import Broker, Message, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import xq_name
from dramatiq.errors import ConnectionClosed

from delivery import bands, channels


def headers_for(job_id: str, error_type: str | None, attempts: int) -> dict[str, Any]:
    """The AMQP headers that explain a dead letter."""
    return {"x-job-id": job_id, "x-error-type": error_type or "", "x-attempts": attempts}


def publish(broker: Broker, message: Message[Any] | MessageProxy, headers: dict[str, Any]) -> None:
    """Put a copy of `message` in its queue's `.XQ`, confirmed by the broker when it is RabbitMQ."""
    # A delivery names the RabbitMQ queue it came from: a delay queue, or a priority band.
    base = bands.courier_queue(message.queue_name)
    queue = xq_name(base)
    if isinstance(broker, RabbitmqBroker):
        broker.declare_queue(message.queue_name, ensure=True)
        try:
            broker.channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=message.encode(),
                properties=pika.BasicProperties(delivery_mode=2, headers=headers),
                mandatory=True,
            )
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as e:
            if isinstance(e, pika.exceptions.UnroutableError):
                # The `.XQ` is gone (deleted in the console): declare it again next time.
                broker.queues_pending.add(base)
            del broker.connection  # reconnect on next use
            raise ConnectionClosed(e) from None
    elif isinstance(broker, StubBroker):
        # The in-memory broker keeps dead letters in a list per canonical queue, as proxies
        # (what it puts there itself, and what its `join` reads).
        proxy = message if isinstance(message, MessageProxy) else MessageProxy(message)
        broker.dead_letters_by_queue[message.queue_name].append(proxy)
    else:
        raise TypeError(f"dead letters are not supported on {type(broker).__name__}")


def remove(broker: Broker, queue_name: str, job_ids: set[str]) -> int:
    """Take the copies of these jobs out of `<queue_name>.XQ`; returns how many were removed.

    RabbitMQ cannot delete a message by header, so this reads the queue once, acks the
    matching messages and returns the others to the queue.
    """
    queue = xq_name(queue_name)
    if isinstance(broker, StubBroker):
        kept = broker.dead_letters_by_queue[queue_name]
        before = len(kept)
        kept[:] = [m for m in kept if str(m.args[0] if m.args else "") not in job_ids]
        return before - len(kept)
    if not isinstance(broker, RabbitmqBroker):
        raise TypeError(f"dead letters are not supported on {type(broker).__name__}")
    removed = 0
    with channels.own_channel(broker) as channel:
        count = channel.queue_declare(queue, passive=True).method.message_count
        for _ in range(count):
            method, properties, _body = channel.basic_get(queue, auto_ack=False)
            if method is None or properties is None:  # both None when the queue is empty
                break
            tag = method.delivery_tag  # always set on a Basic.GetOk from the broker
            if tag is not None and str((properties.headers or {}).get("x-job-id")) in job_ids:
                channel.basic_ack(tag)
                removed += 1
        # Everything not acked goes back to the queue when the channel closes.
        channel.close()
    return removed
