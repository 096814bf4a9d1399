"""Tenant quotas: how many active jobs (queued, running, retrying) a tenant has, up to a bound.

The count reads the tenant's active rows of `ix_jobs_tenant_status_id` and stops at the
bound, so it costs at most the quota however many jobs the tenant has, and callers that
count often keep an estimate instead (`api.estimates`).
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from store import states
from store.models import JOBS
from store.sql import one_of

J = JOBS.c

#: COURIER_TENANT_MAX_ACTIVE's default.
DEFAULT_MAX_ACTIVE = 100_000

_ACTIVE = select(func.count()).select_from(
    select(J.id)
    .where(J.tenant == bindparam("p_tenant"), one_of(J.status, states.ACTIVE))
    .limit(bindparam("p_up_to"))
    .subquery()
)


def active_jobs(db: Session | Connection, tenant: str, *, up_to: int) -> int:
    """The tenant's active jobs, counted up to `up_to`."""
    return int(db.execute(_ACTIVE, {"p_tenant": tenant, "p_up_to": up_to}).scalar_one())


def over_quota(
    db: Session | Connection, tenant: str, extra: int = 1, *, max_active: int = DEFAULT_MAX_ACTIVE
) -> bool:
    """Whether `extra` more active jobs would give the tenant more than `max_active`."""
    return active_jobs(db, tenant, up_to=max_active) + extra > max_active
