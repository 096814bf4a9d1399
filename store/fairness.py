"""Each tenant's share of a queue in the broker, and which held-back jobs the relay sends next.

A tenant keeps at most about `share` messages waiting in each broker queue; what it submits
beyond that stays in the outbox (unpublished, due) until the broker drains. The relay tops
every tenant up to its share, round-robin, so one tenant's backlog never stands between
another tenant's new jobs and the workers: they queue behind at most a share of it.

Every read here is bounded by an index range: the tenants with unpublished jobs are found
by a loose index scan of `ix_jobs_due_by_tenant` (one probe per tenant), a tenant's
messages in the broker are counted up to the share over `ix_jobs_in_broker_by_tenant`, and
its due jobs are read oldest first from the same index.
"""

from __future__ import annotations

import random
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, func, select, text

from store import states
from store.models import JOBS

J = JOBS.c

#: Messages a tenant may have waiting in one queue before its further jobs are held back.
DEFAULT_SHARE = 500

_UNPUBLISHED = "published_at IS NULL AND " + states.in_sql(states.CLAIMABLE)

# A loose index scan: each step finds the next key after the last one with one index probe,
# so the cost is one probe per queue (tenant), not one row per unpublished job.
_QUEUES = text(
    f"""
    WITH RECURSIVE found(queue) AS (
        SELECT min(queue) FROM jobs WHERE {_UNPUBLISHED}
        UNION ALL
        SELECT (SELECT min(j.queue) FROM jobs AS j WHERE {_UNPUBLISHED} AND j.queue > found.queue)
        FROM found WHERE found.queue IS NOT NULL
    )
    SELECT queue FROM found WHERE queue IS NOT NULL
    """
)
_TENANTS = text(
    f"""
    WITH RECURSIVE found(tenant) AS (
        SELECT min(tenant) FROM jobs WHERE queue = :queue AND {_UNPUBLISHED}
        UNION ALL
        SELECT (
            SELECT min(j.tenant) FROM jobs AS j
            WHERE j.queue = :queue AND {_UNPUBLISHED} AND j.tenant > found.tenant
        )
        FROM found WHERE found.tenant IS NOT NULL
    )
    SELECT tenant FROM found WHERE tenant IS NOT NULL
    """
)

_IN_BROKER = (
    select(func.count())
    .select_from(
        select(J.id)
        .where(
            J.queue == bindparam("p_queue"),
            J.tenant == bindparam("p_tenant"),
            states.waiting_in_broker(J),
        )
        .limit(bindparam("p_cap"))
        .subquery()
    )
    .scalar_subquery()
)
_IN_BROKER_QUERY = select(_IN_BROKER)


def in_broker(db: Connection, queue: str, tenant: str, *, cap: int) -> int:
    """How many of the tenant's jobs wait in the queue's broker queue, counted up to `cap`."""
    params = {"p_queue": queue, "p_tenant": tenant, "p_cap": cap}
    return int(db.execute(_IN_BROKER_QUERY, params).scalar_one())


class Backlog(NamedTuple):
    """A queue and tenant with unpublished jobs (due or not)."""

    queue: str
    tenant: str


def backlogs(db: Connection) -> list[Backlog]:
    """Every queue and tenant with unpublished jobs, in a new random order each call.

    The order is shuffled so that when a round cannot serve every tenant, the same ones are
    not always the ones left for the next.
    """
    found = [
        Backlog(queue, tenant)
        for queue in db.execute(_QUEUES).scalars().all()
        for tenant in db.execute(_TENANTS, {"queue": queue}).scalars().all()
    ]
    random.shuffle(found)
    return found
