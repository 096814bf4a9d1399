"""A RabbitMQ broker whose queues are quorum queues, replicated over a cluster's nodes.

Each Courier queue is declared as its priority bands (delivery.bands), all quorum queues:
RabbitMQ 3.10 refuses `x-max-priority` on them. Only the base queue gets Dramatiq's `.DQ`
and `.XQ`; a band dead-letters to its base queue's `.XQ` and has no delay queue, which
Courier never uses (retries wait in SQL).

The delivery limit: RabbitMQ 3.x sets none by default, 4.x sets 20 and then dead-letters
a message returned that often (a worker dying with it, a nack with requeue). `-1` means
"no limit" on 4.x but is taken on 3.10 as a limit below any count: the first return
dead-letters the message. The largest 32-bit count is accepted by both and never reached.
The `.XQ` gets it too: reading a dead letter and leaving it there is a return as well.
"""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import xq_name

from delivery import bands

#: Returns of one message before RabbitMQ would dead-letter it: never, in practice.
DELIVERY_LIMIT = 2**31 - 1


class QuorumBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker with every queue a quorum queue, laid out in bands."""

    queue_type = bands.QUORUM

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _BandConsumer

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        """Declare a Courier queue with its bands (a band's name declares its base queue)."""
        base = bands.courier_queue(queue_name)
        super().declare_queue(base, ensure=ensure)
        for band in bands.names(base, self.queue_type)[1:]:
            if band not in self.queues:
                # What Dramatiq does for a queue, less its delay queue.
                self.emit_before("declare_queue", band)
                self.queues.add(band)
                self.queues_pending.add(band)
                self.emit_after("declare_queue", band)
            if ensure:
                self._ensure_queue(band)

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": xq_name(bands.courier_queue(queue_name)),
        }

    def _declare_dq_queue(self, queue_name: str) -> Any:
        if bands.is_band(queue_name):
            return None
        return super()._declare_dq_queue(queue_name)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        if bands.is_band(queue_name):
            return None
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            # Reading dead letters returns them (the console's "get", `remove`): no limit.
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-message-ttl": DEAD_MESSAGE_TTL,
            },
        )


class _BandConsumer(_RabbitmqConsumer):
    """A consumer whose deliveries name the RabbitMQ queue they came from.

    Dramatiq's worker acknowledges a message through the consumer of `message.queue_name`.
    A band's messages name their Courier queue in their body, so the proxy of each delivery
    says its band instead (as Dramatiq's own delayed messages say `.DQ`); the body, and any
    copy of it (`encode`), still names the Courier queue.
    """

    def __next__(self) -> Any:
        delivery = super().__next__()
        if delivery is not None and bands.is_band(self.queue_name):
            delivery.queue_name = self.queue_name
        return delivery


def queue_type(broker: Any) -> str:
    """`quorum` for a QuorumBroker, else `classic`."""
    return getattr(broker, "queue_type", bands.CLASSIC)
