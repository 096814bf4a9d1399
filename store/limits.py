"""Concurrency limits: at most n running attempts share a key, across every worker and host.

A limit names a key: a job type's entity (`directory_sync:entity=1`), its tenant
(`customer_sync:tenant=20`), the type as a whole (`customer_sync:upstream=5`), or an
upstream for every type that calls it (`upstream:crm=10`). The rule counts the running jobs
sharing each key of the jobs being claimed, and holds back those that would exceed it.

Counting is race-free across processes: the claim first takes a transaction-scoped
advisory lock per key (sorted, so two claims never wait for each other in a cycle), so two
claims of one key count one after the other, each seeing the other's committed claim. A
running job whose lease has expired holds no slot: its worker vanished, and the reaper
will end its attempt. SQLite serves one process, which needs no lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, String, column, func, literal_column, select, text

from store.admission import Claiming, Park
from store.models import JOBS
from store.sql import Batch, now

#: The kinds of key a job type's limit may name.
KINDS = ("entity", "tenant", "upstream")


@dataclass(frozen=True)
class Limit:
    """At most `n` running attempts share this limit's key.

    `kind` is entity, tenant or upstream. With `type` set, the limit is that job type's:
    per entity, per tenant, or (upstream) over all its running jobs. With `type` None, it is
    `upstream`'s: over the running jobs of every type that calls it.
    """

    kind: str
    n: int
    type: str | None = None
    upstream: str | None = None

    @property
    def waiting_for(self) -> str:
        """What a job held back by this limit waits for (the Job object's `waiting_for`)."""
        return self.kind if self.type is not None else f"upstream:{self.upstream}"


_RUNNING = JOBS.alias("running")


def _counts(name: str, *keys: str) -> tuple[Batch, Any]:
    """A batch of key values and the statement counting the running jobs that share each.

    One correlated count per batch row, answered by the partial indexes of running jobs
    (`ix_jobs_running_type_entity` / `_tenant`); the status is written as the indexes'
    predicate is, so that the planner matches them.
    """
    batch = Batch(name, *(column(k, String) for k in keys))
    r = _RUNNING.c
    running = (
        select(func.count())
        .where(
            r.status == literal_column("'running'"),
            *(r[k] == batch.c[k] for k in keys),
            r.lease_expires_at > now(),
        )
        .scalar_subquery()
    )
    return batch, select(*batch.c, running.label("n")).select_from(batch)


_BY_ENTITY, _COUNT_BY_ENTITY = _counts("by_entity", "type", "entity_id")
_BY_TENANT, _COUNT_BY_TENANT = _counts("by_tenant", "type", "tenant")
_BY_TYPE, _COUNT_BY_TYPE = _counts("by_type", "type")
# Sorted in the subquery, so every claim takes the locks in the same order.
_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
    " FROM (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k) AS sorted"
)

# A key is (limit, value): the value of the job's entity or tenant, or None for a limit
# over whole types.
_Key = tuple[Limit, str | None]


class LimitsRule:
    """The admission rule of a set of limits (`store.admission.Rule`)."""

    def __init__(self, limits: Sequence[Limit], upstreams_of: Mapping[str, Sequence[str]]):
        self.limits = tuple(limits)
        self._of_type: dict[str, list[Limit]] = {}
        for limit in self.limits:
            limited = (
                [limit.type]
                if limit.type is not None
                else [t for t, names in upstreams_of.items() if limit.upstream in names]
            )
            for job_type in limited:
                self._of_type.setdefault(job_type, []).append(limit)
        self._types_of = {
            limit: frozenset(t for t, ls in self._of_type.items() if limit in ls)
            for limit in self.limits
        }
        #: The job types some limit applies to: other batches cost no statement.
        self.types = frozenset(self._of_type)

    def __call__(self, db: Connection, jobs: Sequence[Claiming]) -> dict[uuid.UUID, Park]:
        """Of `jobs` (oldest first), those that would exceed a limit; the rest fit, counted
        together with the running jobs."""
        keys_of = {job.job_id: self._keys(job) for job in jobs}
        keys = {key for ks in keys_of.values() for key in ks}
        if not keys:
            return {}
        if db.dialect.name == "postgresql":
            db.execute(_LOCK, {"keys": sorted({_lock_name(key) for key in keys})})
        running = self._running(db, keys)
        parks: dict[uuid.UUID, Park] = {}
        for job in jobs:
            full = next((k for k in keys_of[job.job_id] if running[k] >= k[0].n), None)
            if full is not None:
                parks[job.job_id] = Park(full[0].waiting_for)
                continue
            for key in keys_of[job.job_id]:
                running[key] += 1  # admitted in this batch: it takes the slot too
        return parks

    def _keys(self, job: Claiming) -> list[_Key]:
        keys: list[_Key] = []
        for limit in self._of_type.get(job.type, ()):
            if limit.type is None or limit.kind == "upstream":
                keys.append((limit, None))
            elif limit.kind == "tenant":
                keys.append((limit, job.tenant))
            elif job.entity_id is not None:  # a job without an entity shares no entity's slot
                keys.append((limit, job.entity_id))
        return keys

    def _running(self, db: Connection, keys: Iterable[_Key]) -> dict[_Key, int]:
        """The running attempts holding each key's slots now."""
        entities: set[tuple[str, str | None]] = set()
        tenants: set[tuple[str, str | None]] = set()
        whole: set[str] = set()
        for limit, value in keys:
            if limit.type is not None and limit.kind == "entity":
                entities.add((limit.type, value))
            elif limit.type is not None and limit.kind == "tenant":
                tenants.add((limit.type, value))
            else:
                whole.update(self._types_of[limit])
        by_entity = _run(db, _COUNT_BY_ENTITY, "by_entity", entities)
        by_tenant = _run(db, _COUNT_BY_TENANT, "by_tenant", tenants)
        by_type = _run(db, _COUNT_BY_TYPE, "by_type", {(t,) for t in whole})
        counts: dict[_Key, int] = {}
        for key in keys:
            limit, value = key
            if limit.type is not None and limit.kind == "entity":
                counts[key] = by_entity[(limit.type, value)]
            elif limit.type is not None and limit.kind == "tenant":
                counts[key] = by_tenant[(limit.type, value)]
            else:
                counts[key] = sum(by_type[(t,)] for t in self._types_of[limit])
        return counts


def _run(db: Connection, statement: Any, name: str, rows: set[Any]) -> dict[Any, int]:
    if not rows:
        return {}
    found = db.execute(statement, {name: sorted(rows)})
    return {tuple(row[:-1]): int(row[-1]) for row in found}


def _lock_name(key: _Key) -> str:
    limit, value = key
    scope = limit.type if limit.type is not None else f"upstream:{limit.upstream}"
    return f"limit:{scope}:{limit.kind}:{value or ''}"


def limits_rule(limits: Sequence[Limit], upstreams_of: Mapping[str, Sequence[str]]) -> LimitsRule:
    """The rule enforcing `limits`; `upstreams_of` maps each job type to the upstreams it
    calls (for `upstream:<name>` limits)."""
    return LimitsRule(limits, upstreams_of)
