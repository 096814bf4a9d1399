"""Group commit of the ledger's per-message writes on PostgreSQL.

Every worker thread claims its job before running it and records the outcome after. One
transaction per call made those writes most of a worker's CPU and of PostgreSQL's. Here
one writer thread per process takes every claim and finish that is waiting, runs them in a
single transaction (one statement for the claims, one for the finishes) and only then
wakes their threads: a message is still acked only after its outcome is committed, and
every row keeps its own fence (`status = 'running' AND attempts = n`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from store import ledger
from store.batching import Batcher, Request
from store.db import is_unavailable, make_engine
from store.ledger import Claim, Outcome, millis
from store.types import utcnow


def _psycopg_placeholders(sql: str) -> str:
    """`:name` → `%(name)s`: the statements are written readably and run on psycopg."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


# Both statements find their rows by primary key only (`status || ''`: see ledger.STATUS;
# with a plain status test, a fresh database's claims read the whole backlog, 4x the
# database CPU per job in the benchmark).

# Claims the due jobs among :ids and opens their attempts. Jobs that are waiting but not
# due yet (a stale duplicate, or a clock behind the relay's) are handed back to the relay.
_CLAIM = _psycopg_placeholders(
    """
    WITH claimed AS (
        UPDATE jobs
        SET status = 'running', attempts = attempts + 1, lease_expires_at = :lease_expires_at,
            started_at = coalesce(started_at, :now), next_attempt_at = NULL
        WHERE id = ANY(:ids) AND status || '' IN ('queued', 'retrying')
          AND cancel_requested_at IS NULL
          AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
        RETURNING id, attempts, max_attempts, tenant, type, entity_id, payload,
                  correlation_id, timeout_s
    ), opened AS (
        INSERT INTO attempts (job_id, number, status, started_at, worker)
        SELECT id, attempts, 'running', :now, :worker FROM claimed
    ), early AS (
        UPDATE jobs SET published_at = NULL
        WHERE id = ANY(:ids) AND status || '' IN ('queued', 'retrying')
          AND cancel_requested_at IS NULL AND next_attempt_at > :now
    )
    SELECT * FROM claimed
    """
)

# A retry asked for while a cancel was requested stops as cancelled instead. The test is in
# the UPDATE itself so that it sees the row as locked, not as first read.
_STATUS = (
    "CASE WHEN o.status = 'retrying' AND j.cancel_requested_at IS NOT NULL"
    " THEN 'cancelled' ELSE o.status END"
)
_FINISH = _psycopg_placeholders(
    f"""
    WITH outcome AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:numbers AS int[]), CAST(:statuses AS text[]),
            CAST(:decisions AS text[]), CAST(:error_types AS text[]), CAST(:errors AS text[]),
            CAST(:retry_in_ms AS bigint[]), CAST(:results AS jsonb[]),
            CAST(:durations AS bigint[])
        ) AS o(id, number, status, decision, error_type, error, retry_in_ms, result, duration_ms)
    ), job AS (
        UPDATE jobs AS j
        SET status = {_STATUS},
            lease_expires_at = NULL,
            error_type = o.error_type,
            error = o.error,
            result = o.result,
            finished_at = CASE WHEN {_STATUS} = 'retrying' THEN NULL ELSE :now END,
            next_attempt_at = CASE WHEN {_STATUS} = 'retrying'
                THEN :now + o.retry_in_ms * interval '1 millisecond' END,
            -- the retry is due for the relay to publish
            published_at = CASE WHEN {_STATUS} = 'retrying' THEN NULL ELSE j.published_at END
        FROM outcome AS o
        WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = o.id
          AND j.status || '' = 'running' AND j.attempts = o.number
        RETURNING j.id, j.status
    ), closed AS (
        UPDATE attempts AS a
        SET status = CASE WHEN job.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
            decision = CASE WHEN job.status = 'cancelled' AND o.status = 'retrying'
                THEN 'skip' ELSE o.decision END,
            error_type = o.error_type,
            error = o.error,
            retry_in_ms = CASE WHEN job.status = 'retrying' THEN o.retry_in_ms END,
            finished_at = :now,
            duration_ms = o.duration_ms
        FROM job JOIN outcome AS o ON o.id = job.id
        WHERE a.job_id = job.id AND a.number = o.number AND a.status = 'running'
    )
    SELECT id, status FROM job
    """
)

_FINISH_COLUMNS = (
    "ids",
    "numbers",
    "statuses",
    "decisions",
    "error_types",
    "errors",
    "retry_in_ms",
    "results",
    "durations",
)


#: The writer's own connection. Its two statements always want the same plan (primary key
#: lookups), so they are planned once per connection, not per batch. A plan made while the
#: table was nearly empty would be a sequential scan, kept as the table grows (seen: 4-6 ms
#: of database CPU per job after a few thousand jobs), so sequential scans are ruled out.
WRITER_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}


@dataclass
class _Request(Request):
    job_id: uuid.UUID
    claim: Claim | None = None  # set for a finish
    outcome: Outcome | None = None


class GroupCommit:
    """Claims and finishes of all of a process's worker threads, committed together."""

    def __init__(self, engine: Engine, *, worker: str, lease_s: int, max_batch: int = 200) -> None:
        self.engine = engine
        self.worker = worker
        self.lease_s = lease_s
        self._batcher = Batcher(self._write, name="courier-group-commit", max_batch=max_batch)

    def claim(self, job_id: uuid.UUID) -> Claim | None:
        """As `store.ledger.claim`: the claim once committed, or None if not claimable."""
        return self._batcher.submit(_Request(job_id))

    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """As `store.ledger.finish`: True once committed, False if the fence held it off."""
        return self._batcher.submit(_Request(claim.job_id, claim, outcome))

    def stop(self) -> None:
        """Let the writer end once the requests before this call are written."""
        self._batcher.stop()
        self.engine.dispose()

    def _write(self, batch: list[_Request]) -> None:
        try:
            answers = self._in_transaction(batch)
        except DBAPIError as e:
            if len(batch) > 1 and not is_unavailable(e):
                # One bad row (or a deadlock between two workers' batches) must not fail
                # the others: write each request on its own.
                for request in batch:
                    try:
                        self._write([request])
                    except DBAPIError as alone:
                        request.done.set_exception(alone)
                return
            raise
        for request, answer in zip(batch, answers, strict=True):
            request.done.set_result(answer)

    def _in_transaction(self, batch: list[_Request]) -> list[Any]:
        # psycopg directly, on the writer's own pooled connection: SQLAlchemy's per-statement
        # machinery was a third of the writer's CPU. Errors come out as SQLAlchemy's, so the
        # Ledger tells an outage from a bad row the same way as everywhere else.
        try:
            conn = self.engine.raw_connection()
        except psycopg.Error as e:  # the database is out of reach: no connection to clean up
            raise DBAPIError.instance(None, None, e, psycopg.Error) from e
        try:
            with conn.cursor() as cursor:
                answers = self._execute(cursor, batch)
            conn.commit()
            return answers
        except psycopg.Error as e:
            lost = isinstance(e, psycopg.OperationalError) or conn.dbapi_connection.closed
            if lost:
                conn.invalidate(e)
            else:
                conn.rollback()
            raise DBAPIError.instance(
                None, None, e, psycopg.Error, connection_invalidated=bool(lost)
            ) from e
        finally:
            conn.close()

    def _execute(self, cursor: psycopg.Cursor[Any], batch: list[_Request]) -> list[Any]:
        now = utcnow()
        claims = [r for r in batch if r.claim is None]
        finishes = [r for r in batch if r.claim is not None]
        claimed = self._claim(cursor, claims, now) if claims else {}
        finished = self._finish(cursor, finishes, now) if finishes else set()
        answers: list[Any] = []
        for r in batch:
            if r.claim is None:
                # A job named twice in one batch (a duplicate message) is claimed once.
                answers.append(claimed.pop(r.job_id, None))
            else:
                answers.append(r.job_id in finished)
        return answers

    def _claim(self, cursor: psycopg.Cursor[Any], claims: list[_Request], now: datetime) -> dict:
        cursor.execute(
            _CLAIM,
            {
                "ids": list({r.job_id for r in claims}),
                "now": now,
                "lease_expires_at": now + timedelta(seconds=self.lease_s),
                "worker": self.worker,
            },
        )
        return {row[0]: Claim(row[0], *row[1:], started_at=now) for row in cursor}

    def _finish(self, cursor: psycopg.Cursor[Any], finishes: list[_Request], now: datetime) -> set:
        rows = []
        for r in finishes:
            c, o = r.claim, r.outcome
            assert c is not None and o is not None
            result = None if o.result is None else Jsonb(o.result)
            duration = millis(now - c.started_at)
            rows.append(
                (
                    *(c.job_id, c.number, o.job_status, o.decision, o.error_type, o.error),
                    *(o.retry_in_ms, result, duration),
                )
            )
        columns = dict(zip(_FINISH_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        cursor.execute(_FINISH, {**columns, "now": now})
        return {row[0] for row in cursor}


class OneTransactionEach:
    """Claims and finishes each in a transaction of its own: for SQLite, which writes serially."""

    def __init__(self, sessions: sessionmaker[Session], *, worker: str, lease_s: int) -> None:
        self.sessions = sessions
        self.worker = worker
        self.lease_s = lease_s

    def claim(self, job_id: uuid.UUID) -> Claim | None:
        with self.sessions.begin() as session:
            return ledger.claim(session, job_id, worker=self.worker, lease_s=self.lease_s)

    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        with self.sessions.begin() as session:
            return ledger.finish(session, claim, outcome)

    def stop(self) -> None:
        pass


def writer_for(
    sessions: sessionmaker[Session], *, worker: str, lease_s: int
) -> GroupCommit | OneTransactionEach:
    """Group commit on PostgreSQL, one transaction per write elsewhere."""
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        own = make_engine(
            engine.url.render_as_string(hide_password=False),
            pool_size=1,
            pg_settings=WRITER_SETTINGS,
        )
        return GroupCommit(own, worker=worker, lease_s=lease_s)
    return OneTransactionEach(sessions, worker=worker, lease_s=lease_s)
