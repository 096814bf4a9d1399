"""Group commit of the worker's claims and finishes.

Every worker thread claims its job before running it and records the outcome after. One
transaction per call made those writes most of a worker's CPU and of PostgreSQL's. Here
one writer thread per process takes every claim and finish that is waiting, runs them in a
single transaction (the store's statements, each over the whole batch) and only then
wakes their threads: a message is still acked only after its outcome is committed, and
every row keeps its own fence.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from background.batcher import Batcher, Request
from store import circuits, errors, transitions
from store.admission import Rule
from store.db import make_engine
from store.transitions import Claim, Outcome

#: The writer's own connection. Its statements always want the same plan (primary key
#: lookups), so they are planned once per connection, not per batch. A plan made while the
#: table was nearly empty would be a sequential scan, kept as the table grows (seen: 4-6 ms
#: of database CPU per job after a few thousand jobs), so sequential scans are ruled out.
WRITER_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}

#: How long a batch waits for the claims and finishes of the process's other busy threads:
#: a transaction for each thread or two cost more than the wait (see `Batcher`).
LINGER_S = 0.002


@dataclass
class _Write(Request):
    job_id: uuid.UUID
    finishing: tuple[Claim, Outcome] | None = None
    job_type: str | None = None  # what the message says, for the admission rules
    calls: tuple[circuits.Call, ...] = ()


class GroupCommit:
    """Claims and finishes of all of a process's worker threads, committed together."""

    def __init__(
        self,
        engine: Engine,
        *,
        worker: str,
        lease_s: float,
        rules: Sequence[Rule] = (),
        max_batch: int = 200,
        circuit_policy: circuits.Policy | None = None,
    ) -> None:
        self.engine = engine
        self.circuit_policy = circuit_policy
        self.worker = worker
        self.lease_s = lease_s
        self.rules = tuple(rules)
        self._db: Connection | None = None
        self._batcher: Batcher[_Write] = Batcher(
            self._write, name="courier-group-commit", max_batch=max_batch, linger_s=LINGER_S
        )

    @classmethod
    def on(
        cls,
        url: str,
        *,
        worker: str,
        lease_s: float,
        rules: Sequence[Rule] = (),
        circuit_policy: circuits.Policy | None = None,
    ) -> GroupCommit:
        """A group commit with a connection of its own to the database at `url`; its claims
        admit jobs by `rules` (`store.admission`)."""
        settings = WRITER_SETTINGS if not url.startswith("sqlite") else None
        return cls(
            make_engine(url, pool_size=1, pg_settings=settings),
            worker=worker,
            lease_s=lease_s,
            rules=rules,
            circuit_policy=circuit_policy,
        )

    def claim(self, job_id: uuid.UUID, job_type: str | None = None) -> Claim | None:
        """The claim once committed, or None if the job is not claimable or a rule holds it
        back (then it is parked). `job_type`, the message's, spares rules of other types."""
        return self._batcher.submit(_Write(job_id, job_type=job_type))

    def finish(
        self, claim: Claim, outcome: Outcome, calls: tuple[circuits.Call, ...] = ()
    ) -> str | None:
        """The job's status once committed (a cancel may beat the one asked for), or None
        if the fence held it off. What the attempt says of the upstreams it called
        (`calls`) counts towards their circuits, unless the fence held it off."""
        return self._batcher.submit(_Write(claim.job_id, (claim, outcome), calls=calls))

    def stop(self) -> None:
        """Let the writer end once the requests before this call are written."""
        self._batcher.stop()
        self._forget_connection()
        self.engine.dispose()

    def _connection(self) -> Connection:
        # The writer thread keeps its connection between batches: checking one out of the
        # pool and back for every batch cost as much as a statement.
        if self._db is None:
            self._db = self.engine.connect()
        return self._db

    def _forget_connection(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _write(self, batch: list[_Write]) -> None:
        try:
            answers = self._in_transaction(batch)
        except (SQLAlchemyError, errors.InvalidValue):
            if len(batch) == 1:
                raise
            # One bad row must not fail the others: write each request on its own.
            for request in batch:
                try:
                    self._write([request])
                except Exception as alone:
                    request.done.set_exception(alone)
            return
        for request, answer in zip(batch, answers, strict=True):
            request.done.set_result(answer)

    def _in_transaction(self, batch: list[_Write]) -> list[Any]:
        claims = [r.job_id for r in batch if r.finishing is None]
        types = {r.job_type for r in batch if r.finishing is None}
        # A message naming no type could be of any: every rule then sees the batch.
        known = None if None in types else {t for t in types if t is not None}
        finishes = [r.finishing for r in batch if r.finishing is not None]
        db = self._connection()
        try:
            with db.begin():
                # The claim and the finish announce their jobs in their own statements:
                # waiting API requests wake at commit.
                claimed = (
                    transitions.claim(
                        db,
                        claims,
                        worker=self.worker,
                        lease_s=self.lease_s,
                        rules=self.rules,
                        types=known,
                    )
                    if claims
                    else {}
                )
                finished = transitions.finish(db, finishes) if finishes else {}
                calls = [c for r in batch if r.job_id in finished for c in r.calls]
                if calls:
                    circuits.record(db, calls, self.circuit_policy)
        except errors.DatabaseUnavailable:
            self._forget_connection()
            raise
        answers: list[Any] = []
        for r in batch:
            if r.finishing is None:
                # A job named twice in one batch (a duplicate message) is claimed once.
                answers.append(claimed.pop(r.job_id, None))
            else:
                answers.append(finished.get(r.job_id))
        return answers
