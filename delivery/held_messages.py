"""How many messages RabbitMQ holds for each queue, as the reconciler needs it: never 0 for unknown.

Ready messages are asked of the queue itself (a passive declare, live); unacknowledged ones
of the management API, whose statistics lag by up to their collection interval (5 s). The
statistics' total lags the same way, and would still count every message acknowledged since
their last refresh: on a busy queue, a loss smaller than that stayed hidden for as long as
workers kept consuming. The unacknowledged count alone only moves by what the workers'
prefetch windows fill or empty meanwhile, a few messages per consumer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import dq_name

from delivery import bands, queue_depths

#: Passive declare's answer for a queue that does not exist.
_MISSING = -1


def held(
    queues: list[str],
    *,
    parameters: Any,
    broker_url: str,
    api_url: queue_depths.ApiUrls,
    queue_type: str = bands.CLASSIC,
) -> dict[str, int | None]:
    """Messages each queue (all its bands) and its delay queue hold, ready or delivered and
    not acknowledged.

    A queue that does not exist holds 0. None when unknown: RabbitMQ or its management API
    does not answer, or the API has no statistics for the queue yet (just declared, or the
    node just started).
    """
    names = {q: [*bands.names(q, queue_type), dq_name(q)] for q in queues}
    stats = queue_depths.vhost_queues(broker_url, api_url)
    ready = _ready_now(parameters, [name for q in queues for name in names[q]])
    if stats is None or ready is None:
        return dict.fromkeys(queues)
    return {q: _total(stats, ready, names[q]) for q in queues}


def _total(stats: dict[str, Any], ready: dict[str, int], names: Sequence[str]) -> int | None:
    total = 0
    for name in names:
        if ready[name] == _MISSING:
            continue
        unacked = stats.get(name, {}).get("messages_unacknowledged")
        if unacked is None:
            return None
        total += ready[name] + unacked
    return total


def _ready_now(parameters: Any, names: list[str]) -> dict[str, int] | None:
    """Ready messages per queue (`_MISSING` if it does not exist); None if RabbitMQ is away."""
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.AMQPError:
        return None
    try:
        counts = {}
        channel = connection.channel()
        for name in names:
            try:
                counts[name] = channel.queue_declare(name, passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as e:
                if e.reply_code != 404:
                    return None
                counts[name] = _MISSING
                channel = connection.channel()
        return counts
    except pika.exceptions.AMQPError:
        return None
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()
