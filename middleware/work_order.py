"""The order a worker runs the messages it holds: actor priority, then broker priority.

Dramatiq's worker keeps what its consumers prefetched in one priority queue ordered by
actor priority and arrival alone, so a worker holding low-priority messages of one queue
(or band) runs them before a high-priority one that arrived later. This middleware gives
the worker, before it starts, a queue ordered by (actor priority, highest broker priority
first, arrival), whatever the queue type.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from queue import PriorityQueue
from typing import Any

import dramatiq
from dramatiq import MessageProxy


@dataclass(frozen=True, order=True)
class _Ranked:
    key: tuple[int, int, int]
    message: MessageProxy = field(compare=False)


class RankedWork(PriorityQueue):  # holds _Ranked, takes Dramatiq's items
    """A work queue that ranks Dramatiq's `_WorkQueueItem`s by broker priority too."""

    def _put(self, item: Any) -> None:
        priority = item.message.options.get("broker_priority") or 0
        heapq.heappush(
            self.queue, _Ranked((item.priority, -priority, time.monotonic_ns()), item.message)
        )


class WorkOrder(dramatiq.Middleware):
    """Installs `RankedWork` on every worker before its consumers and threads start."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        worker.work_queue = RankedWork()
