"""Dashboard logins: a random secret in the browser's cookie, its SHA-256 here, revocable.

A session is alive while it has not ended (logout), has not expired, and its operator
token is still live (not revoked, not expired): revoking the token ends every session
made with it. Every time is the database's clock.
"""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import bindparam, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from store import tokens
from store.models import SESSIONS
from store.sql import now, now_plus

LIFETIME_S = 12 * 3600

_S = SESSIONS.c
_T = tokens.API_TOKENS.c

_ALIVE = (
    select(*tokens.PRINCIPAL_COLUMNS)
    .join_from(SESSIONS, tokens.API_TOKENS, _S.token_id == _T.id)
    .where(
        _S.id_hash == bindparam("p_hash"),
        _S.ended_at.is_(None),
        _S.expires_at > now(),
        tokens.live(),
    )
)


def start(session: Session, token_id: uuid.UUID, *, lifetime_s: float = LIFETIME_S) -> str:
    """A new session for this token; returns the secret for the cookie (stored only hashed).

    The token's ended and expired sessions are deleted on the way, so the table stays small.
    """
    session.execute(
        delete(SESSIONS).where(
            _S.token_id == token_id, or_(_S.ended_at.is_not(None), _S.expires_at <= now())
        )
    )
    secret = secrets.token_urlsafe(32)
    session.execute(
        insert(SESSIONS).values(
            id_hash=tokens.digest(secret),
            token_id=token_id,
            created_at=now(),
            expires_at=now_plus(lifetime_s),
        )
    )
    return secret


def operator(session: Session, secret: str) -> tokens.Principal | None:
    """Who is logged in with this secret, or None if the session is not alive."""
    row = session.execute(_ALIVE, {"p_hash": tokens.digest(secret)}).first()
    return None if row is None else tokens.Principal(*row)


def end(session: Session, secret: str) -> None:
    """Log out: the session cannot be used again, whoever holds its cookie."""
    session.execute(
        update(SESSIONS)
        .where(_S.id_hash == tokens.digest(secret), _S.ended_at.is_(None))
        .values(ended_at=now())
    )
