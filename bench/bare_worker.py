"""Bare Dramatiq, the baseline of the drain benchmark: `dramatiq bench.bare_worker`.

A no-op actor on a RabbitmqBroker with Dramatiq's default middleware and the same queue
arguments as Courier's (priorities 0-9). With `BENCH_BARE_UPSTREAM` set to a base URL the
actor also makes the two upstream calls of a `customer_sync` (GET then PUT), which separates
the cost of the HTTP calls from the cost of Courier's ledger.
"""

from __future__ import annotations

import os

import dramatiq
import httpx
from dramatiq.brokers.rabbitmq import RabbitmqBroker

QUEUE = "bare"
ACTOR = "bare_noop"
MAX_PRIORITY = 9  # as courier.broker declares Courier's queues


def make_broker(url: str) -> RabbitmqBroker:
    """The broker the bare worker consumes from (and the benchmark publishes to)."""
    return RabbitmqBroker(url=url, max_priority=MAX_PRIORITY)


broker = make_broker(os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
dramatiq.set_broker(broker)

_UPSTREAM = os.environ.get("BENCH_BARE_UPSTREAM")
_http = httpx.Client(base_url=_UPSTREAM, timeout=10) if _UPSTREAM else None


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, broker=broker)
def bare_noop(entity_id: str) -> None:
    """Nothing, or the upstream round trips of a customer sync."""
    if _http is not None:
        record = _http.get(f"/crm/customers/{entity_id}").json()
        _http.put(f"/billing/customers/{entity_id}", json=record).raise_for_status()
