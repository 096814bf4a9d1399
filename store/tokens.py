"""API tokens: created once, shown once, stored as a SHA-256 digest, revocable, may expire."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Row,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from store.models import API_TOKENS, ROLES
from store.sql import now, now_plus

PREFIX = "ck_"

# How stale `last_used_at` may get: requests within it write nothing.
LAST_USE_RESOLUTION_S = 60

_T = API_TOKENS.c


def live() -> ColumnElement[bool]:
    """A token that may authenticate: not revoked, not expired (by the database's clock)."""
    return and_(_T.revoked_at.is_(None), or_(_T.expires_at.is_(None), _T.expires_at > now()))


def _stale() -> ColumnElement[bool]:
    return or_(_T.last_used_at.is_(None), _T.last_used_at < now_plus(-LAST_USE_RESOLUTION_S))


# The columns a Principal is made of, in its field order.
PRINCIPAL_COLUMNS = (_T.id, _T.tenant, _T.role, _T.name)

# Every API request runs this: built once, a Core statement (no ORM entity to load). It also
# says whether the last use is stale, so that only then a second statement records it.
_LIVE = select(*PRINCIPAL_COLUMNS, _stale().label("stale")).where(
    _T.token_hash == bindparam("p_hash"), live()
)
_TOUCH = update(API_TOKENS).where(_T.id == bindparam("p_id"), _stale()).values(last_used_at=now())


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant a token belongs to and its role."""

    token_id: uuid.UUID
    tenant: str
    role: str
    name: str | None

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def label(self) -> str:
        """How the audit log names this caller."""
        return f"{self.role}:{self.tenant}:{self.name or self.token_id}"


def digest(token: str) -> str:
    """The stored form of a token (tokens are random, so a plain hash is enough)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session,
    *,
    tenant: str,
    role: str = "client",
    name: str | None = None,
    expires_in_s: float | None = None,
) -> str:
    """Create a token and return its secret, which is not stored anywhere."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not tenant or len(tenant) > 64:
        raise ValueError("tenant must be 1 to 64 characters")
    if expires_in_s is not None and expires_in_s <= 0:
        raise ValueError("the expiry must lie in the future")
    secret = PREFIX + secrets.token_urlsafe(32)
    session.execute(
        insert(API_TOKENS).values(
            token_hash=digest(secret),
            tenant=tenant,
            role=role,
            name=name,
            created_at=now(),
            expires_at=None if expires_in_s is None else now_plus(expires_in_s),
        )
    )
    return secret


def authenticate(db: Session | Connection, token: str) -> Principal | None:
    """The principal of a live token, or None; records its last use once a minute at most.

    Asked on every request, never cached, so a revocation or an expiry takes effect at once.
    """
    row = db.execute(_LIVE, {"p_hash": digest(token)}).first()
    if row is None:
        return None
    if row.stale:
        db.execute(_TOUCH, {"p_id": row.id})
    return Principal(*row[: len(PRINCIPAL_COLUMNS)])


def listing(session: Session, *, tenant: str | None = None) -> Sequence[Row[Any]]:
    """Every token (never its secret), oldest first; `tenant` narrows it to one tenant."""
    query = select(
        *PRINCIPAL_COLUMNS,
        _T.created_at,
        _T.last_used_at,
        _T.expires_at,
        _T.revoked_at,
        (_T.expires_at <= now()).label("expired"),
    ).order_by(_T.created_at, _T.id)
    if tenant is not None:
        query = query.where(_T.tenant == tenant)
    return session.execute(query).all()


def revoke(session: Session, token_or_id: str) -> bool:
    """Revoke by secret or by id; False if there was nothing live to revoke."""
    condition = _T.token_hash == digest(token_or_id)
    with contextlib.suppress(ValueError):
        condition = or_(condition, _T.id == uuid.UUID(token_or_id))
    # An UPDATE's result is a CursorResult (with a rowcount); Session.execute says Result.
    result = cast(
        CursorResult[*tuple[Any, ...]],
        session.execute(
            update(API_TOKENS).where(condition, _T.revoked_at.is_(None)).values(revoked_at=now())
        ),
    )
    return bool(result.rowcount)
