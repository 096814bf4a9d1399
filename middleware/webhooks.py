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
        # One permit per sender: a delivery is claimed only when a sender is free to send it,
        # so nothing claimed waits in a queue while its lease runs.
        self._idle = threading.BoundedSemaphore(concurrency)
        self._stopping = threading.Event()

    def tick(self) -> None:
        while self.queue_ended() == self.batch and not self._stopping.is_set():
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
        """Keep the senders busy while deliveries are due; returns how many were started.

        Claims as many as there are idle senders, and again as senders free up, until a
        claim finds fewer due than it asked for, or no sender frees up within an interval
        (all of them waiting on slow endpoints): then the next round goes on.
        """
        started = 0
        while not self._stopping.is_set() and self._idle.acquire(timeout=self.interval_s):
            free = 1
            while free < self.concurrency and self._idle.acquire(blocking=False):
                free += 1
            try:
                with self.engine.begin() as db:
                    claimed = webhooks.claim_due(db, limit=free, lease_s=self.lease_s)
            except Exception:
                self._release(free)
                raise
            self._release(free - len(claimed))
            pool = self._senders()
            for due in claimed:
                pool.submit(self._deliver, due)
            started += len(claimed)
            if len(claimed) < free:
                break
        return started

    def _release(self, permits: int) -> None:
        for _ in range(permits):
            self._idle.release()

    def _senders(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")
            self._sender = Sender(timeout_s=self.timeout_s, max_connections=self.concurrency)
        return self._pool

    def _deliver(self, due: Due) -> None:
        try:
            self.deliver(due)
        except Exception:
            # The claim's lease runs out and another round sends it again.
            log.exception("webhook delivery %s of job %s could not be recorded", due.id, due.job_id)
        finally:
            self._idle.release()

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

    def start(self) -> None:
        """Start the rounds (worker boot calls this)."""
        self._stopping.clear()
        super().start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop claiming; sends under way finish (each within its timeout)."""
        self._stopping.set()
        super().stop(timeout_s)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        self._idle = threading.BoundedSemaphore(self.concurrency)
