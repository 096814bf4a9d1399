"""Priority bands: how one Courier queue is laid out in RabbitMQ, by queue type.

A classic queue orders its messages by priority itself (`x-max-priority`). A quorum queue
on RabbitMQ 3.x has no priorities, so a quorum Courier queue `Q` is three queues, one per
band of broker priorities: `Q` (0-3), `Q.mid` (4-6) and `Q.high` (7-9). A message is
published to its band and still names `Q` in its body, so acks, dead letters (`Q.XQ`) and
SQL's counts all stay per `Q`. Workers consume every band; which runs first among what
they hold is decided in the worker (middleware.work_order).
"""

from __future__ import annotations

from dramatiq.common import q_name

CLASSIC = "classic"
QUORUM = "quorum"

#: The bands above the base queue: suffix and the lowest broker priority it takes.
BANDS = ((".high", 7), (".mid", 4))


def names(queue: str, queue_type: str) -> list[str]:
    """The RabbitMQ queues that hold `queue`'s ready work, base queue first."""
    if queue_type != QUORUM:
        return [queue]
    return [queue, *(queue + suffix for suffix, _ in reversed(BANDS))]


def band_for(queue: str, priority: int | None, queue_type: str) -> str:
    """The RabbitMQ queue a message of `queue` with this broker priority goes to."""
    if queue_type == QUORUM:
        for suffix, lowest in BANDS:
            if (priority or 0) >= lowest:
                return queue + suffix
    return queue


def base_of(name: str) -> str:
    """The Courier queue a band belongs to (a base queue is its own)."""
    for suffix, _ in BANDS:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def courier_queue(name: str) -> str:
    """The Courier queue a RabbitMQ queue belongs to: it is a band, the delay or dead-letter
    queue (`.DQ`, `.XQ`), or the Courier queue itself."""
    return base_of(q_name(name))


def is_band(name: str) -> bool:
    """Whether `name` is an upper band (`.mid`, `.high`) rather than a base queue."""
    return base_of(name) != name
