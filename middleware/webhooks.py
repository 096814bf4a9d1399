"""Webhooks: each worker process queues deliveries for ended jobs and sends the due ones.

Any number of processes do this at once: queueing skips the jobs another process has
locked, and each due delivery is claimed by one process for a lease. Sends run on a small
pool of threads per process, each bounded by the timeout, so a slow endpoint holds up only
its own thread; no transaction is open while a send waits.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine

from delivery.webhooks import Sender
from middleware import backoff
from middleware.periodic import Periodic
from store import webhooks
from store.webhooks import Body, Due

log = logging.getLogger(__name__)


class Webhooks(Periodic):
    """Queues and sends the webhooks of ended jobs, retrying refusals with backoff."""

    def __init__(
        self,
        *,
        engine: Engine,
        body: Body,
        interval_s: float,
        retry_window_s: int,
        min_backoff_s: float,
        max_backoff_s: float,
        timeout_s: float,
        concurrency: int,
        batch: int = 200,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.body = body
        self.interval_s = interval_s
        self.retry_window_s = retry_window_s
        self.min_backoff_ms = round(min_backoff_s * 1000)
        self.max_backoff_ms = round(max_backoff_s * 1000)
        self.concurrency = concurrency
        self.batch = batch
        # Past the longest a send may take (waiting for a pooled connection, connecting,
        # writing and reading each get the timeout), so a delivery is sent again only when
        # its sender is gone.
        self.lease_s = 4 * timeout_s + 10
        self.timeout_s = timeout_s
        self._sender: Sender | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._lock = threading.Lock()

    def tick(self) -> None:
        while self.queue_ended() == self.batch:
            pass
        self.send_due()

    def queue_ended(self) -> int:
        """Queue deliveries for one batch of ended jobs; returns how many."""
        with self.engine.begin() as db:
            queued = webhooks.queue_ended(db, body=self.body, limit=self.batch)
        if queued:
            log.info("queued %d webhook deliveries", queued)
        return queued

    def send_due(self) -> int:
        """Claim as many due deliveries as there are idle senders and start sending them."""
        with self._lock:
            free = self.concurrency - self._in_flight
        if free <= 0:
            return 0
        with self.engine.begin() as db:
            claimed = webhooks.claim_due(db, limit=free, lease_s=self.lease_s)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")
            self._sender = Sender(timeout_s=self.timeout_s, max_connections=self.concurrency)
        for due in claimed:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._deliver, due)
        return len(claimed)

    def _deliver(self, due: Due) -> None:
        try:
            self.deliver(due)
        except Exception:
            # The claim's lease runs out and another round sends it again.
            log.exception("webhook delivery %s of job %s could not be recorded", due.id, due.job_id)
        finally:
            with self._lock:
                self._in_flight -= 1

    def deliver(self, due: Due) -> None:
        """Send one claimed delivery and record what came of it."""
        assert self._sender is not None  # made with the pool that runs this
        outcome = self._sender.send(due)
        extra = {"job_id": str(due.job_id), "delivery_id": str(due.id)}
        if outcome.delivered:
            with self.engine.begin() as db:
                webhooks.record_delivered(db, due.id, status_code=outcome.status_code or 200)
            log.info("webhook %s of job %s delivered", due.event, due.job_id, extra=extra)
            return
        delay_ms = backoff.retry_delay_ms(
            due.attempt, min_ms=self.min_backoff_ms, max_ms=self.max_backoff_ms
        )
        with self.engine.begin() as db:
            status = webhooks.record_refused(
                db,
                due,
                status_code=outcome.status_code,
                error=outcome.error or "",
                delay_ms=delay_ms,
                window_s=self.retry_window_s,
            )
        log.warning(
            "webhook %s of job %s attempt %d not delivered (%s); %s",
            due.event,
            due.job_id,
            due.attempt,
            outcome.error,
            "given up" if status == webhooks.FAILED else "retrying",
            extra=extra,
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; sends under way finish (each within its timeout)."""
        super().stop(timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self._in_flight = 0
