"""Admission at claim: which claiming jobs may start now, and which wait.

"Waiting is not failing": a job held back by a concurrency limit or an open circuit is
parked — it keeps its status and attempts, says what it waits for (`waiting_for`), and is
published again when due. Rules decide; the claim parks what any rule holds back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Uuid, column, select

from store import states
from store.models import JOBS
from store.sql import Batch


@dataclass(frozen=True)
class Claiming:
    """A job being claimed, as the rules see it."""

    job_id: uuid.UUID
    tenant: str
    type: str
    entity_id: str | None


@dataclass(frozen=True)
class Park:
    """Why a job waits (`key`, e.g. `entity` or `upstream:crm`) and until when (None: the
    default short delay, by the database's clock)."""

    key: str
    until: datetime | None = None


#: A rule: of the jobs being claimed, those it holds back and why.
Rule = Callable[[Connection, Sequence[Claiming]], dict[uuid.UUID, Park]]


#: How long a held-back job waits before it is published again when its rule names no time:
#: a slot freed meanwhile is taken within about this long (plus the relay's interval).
PARK_DELAY_S = 1.0

_J = JOBS.c
_CLAIMING = Batch("admitting", column("id", Uuid))
# Oldest first, so that when a rule admits only some, the waiters that came first start.
_READ_CLAIMING = (
    select(_J.id, _J.tenant, _J.type, _J.entity_id)
    .where(_CLAIMING.has(_J.id), states.claimable_now(_J))
    .order_by(_J.created_at, _J.id)
)


def applies(rule: Rule, types: Collection[str] | None) -> bool:
    """Whether `rule` may hold back a job of one of `types` (None: types unknown).

    A rule may name the job types it can hold back as a `types` attribute (a set); a
    batch of other types then costs it no statement. A rule without one sees every batch.
    """
    scope: Collection[str] | None = getattr(rule, "types", None)
    return types is None or scope is None or any(t in scope for t in types)


def decide(
    db: Connection,
    job_ids: Sequence[uuid.UUID],
    rules: Sequence[Rule],
    *,
    types: Collection[str] | None = None,
) -> dict[uuid.UUID, Park]:
    """The jobs among `job_ids` (claimable now) that some rule holds back, and why.

    Each rule sees the jobs the rules before it let through, oldest first; the first rule
    that holds a job back names what it waits for. With no rule for `types` (the job types
    of the batch, if known), nothing is read.
    """
    active = [rule for rule in rules if applies(rule, types)]
    if not active or not job_ids:
        return {}
    rows = db.execute(_READ_CLAIMING, {"admitting": [(i,) for i in job_ids]})
    jobs = [Claiming(*row) for row in rows]
    parks: dict[uuid.UUID, Park] = {}
    for rule in active:
        through = [job for job in jobs if job.job_id not in parks]
        if not through:
            break
        for job_id, park in rule(db, through).items():
            parks.setdefault(job_id, park)
    return parks
