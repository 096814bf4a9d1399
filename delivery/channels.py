"""Channels of Courier's own on RabbitMQ, for the few operations Dramatiq has no call for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.errors import ConnectionClosed
from pika.adapters.blocking_connection import BlockingChannel


@contextmanager
def own_channel(broker: RabbitmqBroker) -> Iterator[BlockingChannel]:
    """A channel on a connection of its own, closed afterwards.

    The broker's connection belongs to the thread that opened it, so reading or purging a
    queue from any thread takes its own. Broker errors leave as `ConnectionClosed`; a queue
    that does not exist ends the block quietly, as an empty one would.
    """
    try:
        connection = pika.BlockingConnection(broker.parameters)
    except pika.exceptions.AMQPError as e:
        raise ConnectionClosed(e) from None
    try:
        yield connection.channel()
    except pika.exceptions.ChannelClosedByBroker as e:
        if e.reply_code != 404:  # 404: no such queue, nothing in it
            raise ConnectionClosed(e) from None
    except pika.exceptions.AMQPError as e:
        raise ConnectionClosed(e) from None
    finally:
        if connection.is_open:
            connection.close()
