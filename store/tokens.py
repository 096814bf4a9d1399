"""API tokens: created once, shown once, stored as a SHA-256 digest, revocable."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, bindparam, or_, select, update
from sqlalchemy.orm import Session

from store.models import ROLES, ApiToken
from store.types import utcnow

PREFIX = "ck_"

_T = ApiToken.__table__.c
# Every API request runs this: built once, a Core statement (no ORM entity to load).
_LIVE = select(_T.id, _T.tenant, _T.role, _T.name).where(
    _T.token_hash == bindparam("p_hash"), _T.revoked_at.is_(None)
)


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


def create(session: Session, *, tenant: str, role: str = "client", name: str | None = None) -> str:
    """Create a token and return its secret, which is not stored anywhere."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not tenant or len(tenant) > 64:
        raise ValueError("tenant must be 1 to 64 characters")
    secret = PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            token_hash=digest(secret), tenant=tenant, role=role, name=name, created_at=utcnow()
        )
    )
    return secret


def authenticate(db: Session | Connection, token: str) -> Principal | None:
    """The principal of a live token, or None.

    Asked on every request, never cached, so a revocation takes effect at once.
    """
    row = db.execute(_LIVE, {"p_hash": digest(token)}).first()
    return None if row is None else Principal(*row)


def revoke(session: Session, token_or_id: str) -> bool:
    """Revoke by secret or by id; False if there was nothing live to revoke."""
    condition = ApiToken.token_hash == digest(token_or_id)
    with contextlib.suppress(ValueError):
        condition = or_(condition, ApiToken.id == uuid.UUID(token_or_id))
    # An UPDATE's result is a CursorResult (with a rowcount); Session.execute says Result.
    result = cast(
        CursorResult[*tuple[Any, ...]],
        session.execute(
            update(ApiToken)
            .where(condition, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        ),
    )
    return bool(result.rowcount)
