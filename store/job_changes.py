"""Announcements of changed jobs on PostgreSQL's LISTEN/NOTIFY, for the API's waiters.

A change is announced in the transaction that makes it, so listeners hear of it when it
commits and never before. Every NOTIFY takes a database-wide lock at commit, so the ids a
statement changed go out in as few notifications as their payload limit allows. The
transitions the workers make for every job announce their jobs within their own statement
(`announcing`); anything else calls `announce`. SQLite has no NOTIFY: there the
announcement is a no-op and the API polls instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, cast, func, literal, select

#: The channel API processes LISTEN on.
CHANNEL = "courier_jobs"

#: PostgreSQL refuses payloads of 8000 bytes or more; an id and its comma take 37.
IDS_PER_NOTICE = 7999 // 37

# Driver SQL: a worker announces once per batch, and SQLAlchemy's compiling and binding of a
# text() cost as much as the round trip.
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', p) FROM unnest(%(payloads)s::text[]) AS p"


def announce(db: Connection, job_ids: Iterable[uuid.UUID]) -> None:
    """Tell listeners, when this transaction commits, that these jobs changed."""
    if db.dialect.name != "postgresql":
        return
    ids = sorted({str(job_id) for job_id in job_ids})
    if not ids:
        return
    payloads = [",".join(ids[i : i + IDS_PER_NOTICE]) for i in range(0, len(ids), IDS_PER_NOTICE)]
    db.exec_driver_sql(_NOTIFY, {"payloads": payloads})


def announcing(changed: Any) -> ColumnElement[bool]:
    """A condition true of every row, whose one evaluation on PostgreSQL announces the ids
    of `changed` (a table or CTE with an `id` column, each id once, as a statement's
    RETURNING has them) in notifications like `announce`'s.

    In the WHERE of a statement that changes jobs, it saves the announcement's own round
    trip: PostgreSQL evaluates the uncorrelated subquery once, before the first row.
    """
    numbered = select(
        changed.c.id, ((func.row_number().over() - 1) // IDS_PER_NOTICE).label("notice")
    ).subquery("numbered")
    notices = (
        select(func.string_agg(cast(numbered.c.id, Text), literal(",")).label("ids"))
        .group_by(numbered.c.notice)
        .subquery("notices")
    )
    sent = select(func.count(func.pg_notify(literal(CHANNEL), notices.c.ids)))
    return sent.scalar_subquery() >= 0


def changed_ids(payload: str) -> set[uuid.UUID]:
    """The job ids of one notification's payload (anything unreadable is left out)."""
    ids = set()
    for part in payload.split(","):
        try:
            ids.add(uuid.UUID(part))
        except ValueError:
            continue
    return ids
