"""What a publish costs the publisher and RabbitMQ: a confirm per message, or a transaction.

`python -m bench.publish_cost` publishes persistent no-op messages from one thread to a
scratch queue on the local RabbitMQ: one by one with a publisher confirm each (Dramatiq's
`enqueue`, how a lone request publishes), and in AMQP transactions of 1, 4 and 16 messages
(`delivery.publisher.send`, which the API's group publisher runs for that many concurrent
requests). The modes alternate for `--rounds` rounds; it prints the median CPU ms per
message of this process and of RabbitMQ, and the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench import cpu
from delivery import publisher


def _confirm_each(broker: RabbitmqBroker, messages: list[Message[None]]) -> None:
    for message in messages:
        broker.enqueue(message)


MODES: dict[str, tuple[int, Callable[[RabbitmqBroker, list[Message[None]]], None]]] = {
    "confirm each": (1, _confirm_each),
    "transaction of 1": (1, publisher.send),
    "transaction of 4": (4, publisher.send),
    "transaction of 16": (16, publisher.send),
}


def measure(broker: RabbitmqBroker, queue: str, mode: str, messages: int) -> dict[str, float]:
    """CPU ms per message of this process and RabbitMQ, and wall ms per message."""
    size, send = MODES[mode]
    meter = cpu.Meter({}, database="-")
    meter.start()
    for _ in range(0, messages, size):
        batch = [
            Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})
            for _ in range(size)
        ]
        send(broker, batch)
    usage = meter.stop(messages)
    per_message = usage["cpu_ms_per_job"]
    return {
        "publisher": per_message.get("load generator", 0.0),
        "rabbitmq": per_message.get("rabbitmq", 0.0),
        "wall": usage["wall_s"] * 1000 / messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_cost", description=__doc__)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--messages", type=int, default=3000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    broker = RabbitmqBroker(url=args.url, confirm_delivery=True, middleware=[])
    queue = f"bench-publish-cost-{uuid.uuid4().hex[:8]}"
    broker.declare_queue(queue, ensure=True)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(args.rounds):
            for mode in MODES:
                runs[mode].append(measure(broker, queue, mode, args.messages))
                broker.channel.queue_purge(queue)
                time.sleep(0.5)  # let RabbitMQ finish writing before the next mode
    finally:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            broker.channel.queue_delete(name)
        broker.close()
    print(f"median of {args.rounds} rounds of {args.messages:,} messages, ms per message")
    print(f"{'mode':<20}{'publisher CPU':>15}{'RabbitMQ CPU':>15}{'wall':>10}")
    for mode, results in runs.items():
        median = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"{mode:<20}{median['publisher']:>15.3f}{median['rabbitmq']:>15.3f}"
            f"{median['wall']:>10.3f}"
        )


if __name__ == "__main__":
    main()
