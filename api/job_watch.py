"""The one watcher of job changes in an API process: requests waiting on a job wait on it.

A request that waits (a long poll, an event stream) follows its job here and then waits on
a condition, holding no database connection. One thread per process holds one connection:
on PostgreSQL it LISTENs for the ids the workers and the API announce
(`store.job_changes`), reads every announced job that someone follows in one statement per
burst of notifications, and wakes that job's followers if what they would see changed. On
SQLite, which cannot notify, the same thread reads all followed jobs every `poll_s` instead.

Notifications sent while the thread was not listening are lost, so after every
(re)connection, and every `recheck_s` besides, it reads all followed jobs; the thread runs
only while someone follows a job (and `linger_s` after), so an idle API holds no connection.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterator
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine, text

from api import serialize
from api.versions import Version
from store import job_changes, queries

log = logging.getLogger(__name__)

#: How the watcher's connection shows in pg_stat_activity.
APPLICATION_NAME = "courier-job-watch"

#: Jobs read per statement: a refresh of more followed jobs than this takes several.
READ_CHUNK = 1000

#: After a burst's first notification, how long to gather the rest before reading.
GATHER_S = 0.01


class WatchFull(Exception):
    """As many requests wait in this process as it lets wait at once."""


class _Followed:
    """A job someone in this process waits on, and the latest version the watcher read."""

    def __init__(self, lock: threading.Lock) -> None:
        self.changed = threading.Condition(lock)
        self.version: Version | None = None
        self.generation = 0
        self.followers = 0
        self.streams = 0  # followers who want its attempts too


class Follower:
    """One request's hold on a job: the versions of it the watcher reads, as they come."""

    def __init__(self, watch: JobWatch, job_id: uuid.UUID, followed: _Followed, streams: bool):
        self.job_id = job_id
        self._watch = watch
        self._followed = followed
        self._streams = streams
        self._seen = followed.generation
        self._closed = False

    def next(self, timeout: float) -> Version | None:
        """The next version of the job the watcher reads, or None if none comes within
        `timeout` seconds."""
        followed = self._followed
        with followed.changed:
            followed.changed.wait_for(lambda: followed.generation != self._seen, timeout)
            if followed.generation == self._seen:
                return None
            self._seen = followed.generation
            return followed.version

    def close(self) -> None:
        """Stop following the job (again: no effect)."""
        if not self._closed:
            self._closed = True
            self._watch._unfollow(self.job_id, streams=self._streams)


class JobWatch:
    """Follows jobs for the requests of one API process, with one thread and one connection.

    At most `max_followers` follow at once (None: no limit): each holds a server thread,
    and the process must keep some for everything else.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_followers: int | None = None,
        poll_s: float = 0.5,
        recheck_s: float = 15.0,
        linger_s: float = 5.0,
        max_retry_s: float = 10.0,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._listens = engine.dialect.name == "postgresql"
        self.poll_s = poll_s
        self.recheck_s = recheck_s
        self.linger_s = linger_s
        self.max_retry_s = max_retry_s
        self.max_followers = max_followers
        self._followers = 0
        self._lock = threading.Lock()
        self._followed: dict[uuid.UUID, _Followed] = {}
        self._idle_since = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def follow(self, job_id: uuid.UUID, *, attempts: bool = False) -> Follower:
        """Follow a job (its attempts too, if `attempts`); close the follower when done.

        Follow before reading the job yourself: a change between the two is then not missed.
        Raises WatchFull if `max_followers` already follow.
        """
        with self._lock:
            if self.max_followers is not None and self._followers >= self.max_followers:
                raise WatchFull(f"{self._followers} requests are waiting in this process")
            self._followers += 1
            followed = self._followed.get(job_id)
            if followed is None:
                followed = self._followed[job_id] = _Followed(self._lock)
            followed.followers += 1
            followed.streams += attempts
            if self._thread is None or not self._thread.is_alive():
                # Started on first use, so each gunicorn worker (a fork) runs its own.
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="courier-job-watch")
                self._thread.daemon = True
                self._thread.start()
        return Follower(self, job_id, followed, attempts)

    def following(self) -> int:
        """How many jobs are followed now."""
        with self._lock:
            return len(self._followed)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread now (a later `follow` starts it again)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _unfollow(self, job_id: uuid.UUID, *, streams: bool) -> None:
        with self._lock:
            self._followers -= 1
            followed = self._followed[job_id]
            followed.followers -= 1
            followed.streams -= streams
            if not followed.followers:
                del self._followed[job_id]
                if not self._followed:
                    self._idle_since = time.monotonic()

    def _done(self) -> bool:
        """Whether the thread should end: stopped, or nobody followed anything for a while.
        Decided under the lock, so a `follow` then starts a new thread."""
        with self._lock:
            idle = not self._followed and time.monotonic() - self._idle_since >= self.linger_s
            if self._stopping.is_set() or idle:
                self._thread = None
                return True
            return False

    def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                for _ in self._listen() if self._listens else self._poll():
                    delay = 0.5  # connected and reading again
                return
            except Exception as e:
                log.warning(
                    "job watch: database unavailable (%s); reconnecting in %.1fs",
                    str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__,
                    delay,
                )
            if self._stopping.wait(delay) or self._done():
                return
            delay = min(delay * 2, self.max_retry_s)

    def _listen(self) -> Iterator[None]:
        """Read followed jobs as their changes are announced; yields after each read."""
        with self._engine.connect() as db:
            db.execute(text(f"SET application_name = '{APPLICATION_NAME}'"))
            db.execute(text(f"LISTEN {job_changes.CHANNEL}"))
            driver = db.connection.driver_connection
            assert driver is not None
            # Whatever was announced while nobody listened is lost: read everything.
            self._refresh(db, None)
            yield
            recheck_at = time.monotonic() + self.recheck_s
            while not self._done():
                notices = list(driver.notifies(timeout=1.0, stop_after=1))
                if notices:
                    # One read for the whole burst: the writers commit batches back to back.
                    notices += driver.notifies(timeout=GATHER_S)
                    changed = set().union(*(job_changes.changed_ids(n.payload) for n in notices))
                    self._refresh(db, changed)
                if time.monotonic() >= recheck_at:
                    self._refresh(db, None)
                    recheck_at = time.monotonic() + self.recheck_s
                yield

    def _poll(self) -> Iterator[None]:
        """Read all followed jobs every `poll_s` (SQLite, which cannot notify)."""
        while not self._done():
            with self._engine.connect() as db:
                self._refresh(db, None)
            yield
            self._stopping.wait(self.poll_s)

    def _refresh(self, db: Connection, changed: Collection[uuid.UUID] | None) -> None:
        """Read the followed ones of `changed` (None: all followed jobs) and wake the
        followers of those that changed."""
        with self._lock:
            ids = list(self._followed if changed is None else set(changed) & self._followed.keys())
            streamed = {i for i in ids if self._followed[i].streams}
        for chunk in _chunks(ids, READ_CHUNK):
            versions = _read(db, chunk, streamed)
            with self._lock:
                for job_id, version in versions.items():
                    followed = self._followed.get(job_id)
                    if followed is None or version.same_as(followed.version):
                        continue
                    followed.version = version
                    followed.generation += 1
                    followed.changed.notify_all()


def _read(
    db: Connection, ids: list[uuid.UUID], streamed: set[uuid.UUID]
) -> dict[uuid.UUID, Version]:
    """The versions of these jobs, with attempts for those in `streamed` (a second statement,
    only when some are)."""
    attempts: dict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    wanted = [i for i in ids if i in streamed]
    for row in queries.attempts_of(db, wanted):
        attempts[row.job_id].append(serialize.attempt(row))
    return {
        row.id: Version.of(serialize.job(row), attempts[row.id] if row.id in streamed else None)
        for row in queries.read_jobs(db, ids)
    }


def _chunks(ids: list[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    it = iter(ids)
    while chunk := list(islice(it, size)):
        yield chunk
