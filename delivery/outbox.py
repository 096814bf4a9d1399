"""Publish, then mark published: the one path from SQL to the broker.

The API (jobs just accepted), the relay (jobs due) and replays (new jobs) all go through
`Outbox.publish`. The job is safe in SQL before its message is sent: a publish that fails
is left to the relay, and a message sent twice is refused by the worker's claim.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Sequence
from typing import Any

from dramatiq import Broker, Message
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from background.thread import BackgroundThread, every
from delivery import publisher
from store import errors, transitions
from store.outbox import JobMessage
from tracing import spans

log = logging.getLogger(__name__)


def message_for(job: JobMessage) -> Message[Any]:
    """The Dramatiq message that asks a worker to run the job; the body names only the job."""
    return Message(
        queue_name=job.queue,
        actor_name=job.type,
        args=(str(job.job_id),),
        kwargs={},
        options={
            "broker_priority": job.priority,
            "time_limit": job.timeout_s * 1000,
            "correlation_id": job.correlation_id,
        },
    )


class Outbox:
    """Sends jobs' messages to the broker and records that it took them.

    With `group`, what concurrent threads publish at the same moment shares one AMQP
    transaction; with `marks_in_background`, the published marks of one interval are
    written together by a background thread instead of a transaction per call.
    """

    def __init__(
        self,
        broker: Broker,
        engine: Engine,
        *,
        group: bool = False,
        marks_in_background: bool = False,
    ) -> None:
        self.broker = broker
        self.engine = engine
        self._group = publisher.GroupPublisher(broker) if group else None
        self._marks = PublishedMarks(engine) if marks_in_background else None

    def publish(self, jobs: Sequence[JobMessage], *, db: Connection | None = None) -> int:
        """Send the jobs' messages, then mark them published; returns how many were sent.

        With `db`, the marks are written in that (the caller's) transaction. Never raises
        for a broker outage or a blocked broker: the jobs wait in SQL for the relay.
        """
        if not jobs:
            return 0
        messages = [message_for(job) for job in jobs]
        try:
            with spans.publishing(jobs, messages):
                if self._group is not None:
                    self._group.send(messages)
                else:
                    publisher.send(self.broker, messages)
        except BrokerConnectionError:
            log.warning("broker unavailable; %d job(s) left to the relay", len(jobs))
            return 0
        states = [job.state for job in jobs]
        if db is not None:
            transitions.mark_published(db, states)
        elif self._marks is not None:
            self._marks.add(states)
        else:
            write_marks(self.engine, states)
        return len(jobs)


def write_marks(engine: Engine, states: Sequence[tuple[Any, int]]) -> None:
    """Mark published in a transaction of their own; a failure only costs a second message."""
    try:
        with engine.begin() as db:
            transitions.mark_published(db, states)
    except (SQLAlchemyError, errors.StoreError):
        # The relay publishes them again after its grace; the claim refuses the copy.
        log.warning("could not mark %d job(s) published", len(states), exc_info=True)


class PublishedMarks:
    """Published marks written from a background thread, all of one interval per statement.

    A transaction of its own per accepted job cost the API as much as accepting the job.
    `interval_s` is far inside the relay's grace, so the relay leaves these jobs alone. A
    mark lost to a crash lets the relay publish the job a second time, which the claim
    refuses. Whatever is queued is written by `close()`, which also runs at exit.
    """

    def __init__(self, engine: Engine, *, interval_s: float = 0.05) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._queued: list[tuple[Any, int]] = []
        self._thread = BackgroundThread(
            every(interval_s, self.flush, what="published marks"), name="published-marks"
        )
        self._at_exit = False

    def add(self, states: Sequence[tuple[Any, int]]) -> None:
        """Queue marks for messages the broker has taken."""
        with self._lock:
            self._queued.extend(states)
            if not self._at_exit:
                atexit.register(self.close)
                self._at_exit = True
        self._thread.start()

    def flush(self) -> int:
        """Write the marks queued so far; returns how many there were."""
        with self._lock:
            batch, self._queued = self._queued, []
        if batch:
            write_marks(self._engine, batch)
        return len(batch)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and write what is still queued."""
        self._thread.stop(timeout_s)
        self.flush()
