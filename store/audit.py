"""The append-only audit log of operator and client actions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from store.ids import new_id
from store.models import AUDIT_LOG, AuditEntry
from store.types import utcnow


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    job_id: uuid.UUID | None = None,
    tenant: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry; it is committed with the action it describes."""
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor,
            action=action,
            job_id=job_id,
            tenant=tenant,
            reason=reason,
            details=details,
        )
    )


def record_many(
    session: Session,
    *,
    actor: str,
    action: str,
    reason: str | None,
    entries: Sequence[tuple[uuid.UUID, str | None, dict[str, Any] | None]],
) -> None:
    """Append one entry per (job id, tenant, details), with one statement for all of them."""
    if entries:
        at = utcnow()
        session.connection().execute(
            insert(AUDIT_LOG),
            [
                {
                    "id": new_id(),
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "job_id": job_id,
                    "tenant": tenant,
                    "reason": reason,
                    "details": details,
                }
                for job_id, tenant, details in entries
            ],
        )


def entries(
    session: Session, *, job_id: uuid.UUID | None = None, limit: int = 100
) -> Sequence[AuditEntry]:
    """The newest entries first, optionally for one job."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if job_id is not None:
        query = query.where(AuditEntry.job_id == job_id)
    return session.scalars(query).all()
