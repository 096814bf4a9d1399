"""Bearer-token authentication and the roles it grants."""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy import Connection, Engine

from api.errors import Problem
from store import tokens


class Authenticate:
    """Falcon middleware: every resource not marked `public` needs a live bearer token.

    The token is looked up on every request (a revocation or an expiry applies at once) on an
    autocommit connection: one round trip, no transaction (a second one, once a minute per
    token, records its last use). The connection then stays with the request
    as `req.context.db` (see `connection`) and goes back to the pool with the response.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any
    ) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("send Authorization: Bearer <token>")
        db = self._engine.connect()
        try:
            principal = tokens.authenticate(db, token.strip())
            # Ends the transaction SQLite opens even here, keeping the last use if it was
            # recorded: writes on other connections need not wait for this one, and the
            # request may begin its own on it.
            db.commit()
        except BaseException:
            db.close()
            raise
        if principal is None:
            db.close()
            raise unauthorized("the token is unknown, revoked or expired")
        req.context.principal = principal
        req.context.db = db

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        release(req)


def connection(req: falcon.Request) -> Connection:
    """The request's autocommit connection (set by Authenticate).

    Each statement commits on its own, so it suits a read, or a write that is one statement;
    wrap a write in `with db.begin()` all the same (SQLite takes its write lock there).
    """
    return req.context.db


def release(req: falcon.Request) -> None:
    """Give the request's connection back to the pool now, before a long wait."""
    db = getattr(req.context, "db", None)
    if db is not None:
        req.context.db = None
        db.close()


def unauthorized(description: str) -> Problem:
    """401 with a Bearer challenge."""
    return Problem(
        falcon.HTTP_401, "Unauthorized", description, headers={"WWW-Authenticate": "Bearer"}
    )


def principal(req: falcon.Request) -> tokens.Principal:
    """Who is calling (set by Authenticate)."""
    return req.context.principal


def require_operator(req: falcon.Request) -> tokens.Principal:
    """The caller, who must hold an operator token (403 otherwise)."""
    who = principal(req)
    if not who.is_operator:
        raise Problem(falcon.HTTP_403, "Forbidden", "this needs an operator token")
    return who


def scope(req: falcon.Request) -> str | None:
    """The tenant every query of this caller is keyed by (None: an operator sees all)."""
    who = principal(req)
    return None if who.is_operator else who.tenant


def listing_scope(req: falcon.Request, asked: str | None) -> str | None:
    """The tenant a listing is keyed by: the caller's own, or for an operator the `tenant=`
    filter it asked for (None: all); 403 for a client that asks for another tenant."""
    tenant = scope(req)
    if asked is None:
        return tenant
    if tenant is not None and asked != tenant:
        raise Problem(falcon.HTTP_403, "Forbidden", "the tenant filter is for operators")
    return asked
