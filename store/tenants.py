"""Tenants' webhook secrets: made on first use, replaced by a rotation (audited)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as insert_skipping_conflicts
from sqlalchemy.orm import Session

from store import audit
from store.models import TENANTS
from store.sql import now

PREFIX = "whsec_"

T = TENANTS.c

# Whoever asks first makes the secret; a concurrent first use keeps the one that won.
_CREATE = (
    insert_skipping_conflicts(TENANTS)
    .values(created_at=now())
    .on_conflict_do_nothing(index_elements=["name"])
)
_SECRETS = select(T.name, T.webhook_secret).where(T.name.in_(bindparam("p_names", expanding=True)))
_ROTATE = (
    update(TENANTS)
    .where(T.name == bindparam("p_name"))
    .values(webhook_secret=bindparam("p_secret"), rotated_at=now())
)


def _new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def webhook_secrets(db: Session | Connection, names: Iterable[str]) -> dict[str, str]:
    """The webhook secret of each tenant named, made for those that have none yet."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    found = dict(db.execute(_SECRETS, {"p_names": wanted}).all())
    missing = [name for name in wanted if name not in found]
    if missing:
        db.execute(_CREATE, [{"name": n, "webhook_secret": _new_secret()} for n in missing])
        found.update(db.execute(_SECRETS, {"p_names": missing}).all())
    return found


def webhook_secret(db: Session | Connection, name: str) -> str:
    """The tenant's webhook secret, made on first use."""
    return webhook_secrets(db, [name])[name]


def rotate(session: Session, name: str, *, actor: str, reason: str | None = None) -> str:
    """Replace the tenant's webhook secret with a new one and audit it; returns the new one.

    Deliveries sent from now on, retries of earlier ones included, are signed with it.
    """
    webhook_secret(session, name)
    secret = _new_secret()
    session.execute(_ROTATE, {"p_name": name, "p_secret": secret})
    audit.record(session, actor=actor, action="rotate_webhook_secret", tenant=name, reason=reason)
    return secret
