"""Queue depths from the RabbitMQ management API (or the in-process broker): never an error.

An unreachable management API means the depths are unknown (None), not that the caller fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx
from dramatiq import Broker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

from delivery import bands

log = logging.getLogger(__name__)

Depths = dict[str, int | None]
#: One management API URL, several comma-separated or a list, or none.
ApiUrls = str | Sequence[str] | None


def depths(
    queues: list[str],
    *,
    broker_url: str,
    api_url: ApiUrls,
    broker: Broker | None = None,
    queue_type: str = bands.CLASSIC,
) -> dict[str, Depths]:
    """`{queue: {"ready", "unacked", "delayed", "dead"}}`; a value is None when unknown.

    A quorum queue's figures are the sums over its bands.
    """
    if isinstance(broker, StubBroker):
        return {q: _stub_depths(broker, q) for q in queues}
    unknown: Depths = dict.fromkeys(("ready", "unacked", "delayed", "dead"))
    found = vhost_queues(broker_url, api_url)
    if found is None:
        return {q: dict(unknown) for q in queues}

    def total(names: list[str], field: str) -> int:
        return sum(found.get(name, {}).get(field, 0) for name in names)

    return {
        q: {
            "ready": total(bands.names(q, queue_type), "messages_ready"),
            "unacked": total(bands.names(q, queue_type), "messages_unacknowledged"),
            "delayed": total([dq_name(q)], "messages"),
            "dead": total([xq_name(q)], "messages"),
        }
        for q in queues
    }


def vhost_queues(broker_url: str, api_url: ApiUrls) -> dict[str, dict[str, Any]] | None:
    """The management API's queues of the broker URL's vhost by name; None if unreachable.

    Several API URLs (one per node of a cluster, comma-separated or a list) are asked in
    order until one answers: any node's API reports the whole cluster's queues.
    """
    urls = api_url.split(",") if isinstance(api_url, str) else list(api_url or ())
    vhost = unquote(urlsplit(broker_url.split(",")[0]).path.lstrip("/")) or "/"
    for url in (u.strip() for u in urls if u.strip()):
        try:
            with _client(url) as api:
                listed = api.get(f"/api/queues/{quote(vhost, safe='')}").raise_for_status().json()
        except (httpx.HTTPError, ValueError) as e:
            log.info("management API %s unreachable (%s)", _host(url), type(e).__name__)
            continue
        return {q["name"]: q for q in listed}
    if urls:
        log.info("queue depths unknown: no management API answered")
    return None


def _host(api_url: str) -> str:
    url = urlsplit(api_url)
    return f"{url.hostname}:{url.port}"


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
