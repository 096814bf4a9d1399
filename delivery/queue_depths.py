"""Queue depths from the RabbitMQ management API (or the in-process broker): never an error.

An unreachable management API means the depths are unknown (None), not that the caller fails.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

log = logging.getLogger(__name__)

Depths = dict[str, int | None]


def depths(
    queues: list[str], *, broker_url: str, api_url: str | None, broker: Broker | None = None
) -> dict[str, Depths]:
    """`{queue: {"ready", "unacked", "delayed", "dead"}}`; a value is None when unknown."""
    if isinstance(broker, StubBroker):
        return {q: _stub_depths(broker, q) for q in queues}
    unknown: Depths = dict.fromkeys(("ready", "unacked", "delayed", "dead"))
    found = vhost_queues(broker_url, api_url)
    if found is None:
        return {q: dict(unknown) for q in queues}
    return {
        q: {
            "ready": found.get(q, {}).get("messages_ready", 0),
            "unacked": found.get(q, {}).get("messages_unacknowledged", 0),
            "delayed": found.get(dq_name(q), {}).get("messages", 0),
            "dead": found.get(xq_name(q), {}).get("messages", 0),
        }
        for q in queues
    }


def vhost_queues(broker_url: str, api_url: str | None) -> dict[str, dict[str, Any]] | None:
    """The management API's queues of the broker URL's vhost by name; None if unreachable."""
    if not api_url:
        return None
    vhost = unquote(urlsplit(broker_url).path.lstrip("/")) or "/"
    try:
        with _client(api_url) as api:
            listed = api.get(f"/api/queues/{quote(vhost, safe='')}").raise_for_status().json()
    except (httpx.HTTPError, ValueError) as e:
        log.info("queue depths unknown: management API unreachable (%s)", type(e).__name__)
        return None
    return {q["name"]: q for q in listed}


def _client(api_url: str) -> httpx.Client:
    url = httpx.URL(api_url)
    return httpx.Client(
        base_url=str(url.copy_with(username=None, password=None)),
        auth=(url.username or "guest", url.password or "guest"),
        timeout=2.0,
    )


def _stub_depths(broker: StubBroker, queue: str) -> Depths:
    ready = broker.queues[queue].qsize() if queue in broker.queues else 0
    delayed = broker.queues[dq_name(queue)].qsize() if dq_name(queue) in broker.queues else 0
    return {
        "ready": ready,
        "unacked": None,  # the in-process broker does not track deliveries
        "delayed": delayed,
        "dead": len(broker.dead_letters_by_queue.get(queue, [])),
    }
