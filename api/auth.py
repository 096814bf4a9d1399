"""Bearer-token authentication and the roles it grants."""

from __future__ import annotations

from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Problem
from store import tokens


class Authenticate:
    """Falcon middleware: every resource not marked `public` needs a live bearer token."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any
    ) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("send Authorization: Bearer <token>")
        with self._sessions() as session:
            principal = tokens.authenticate(session, token.strip())
        if principal is None:
            raise unauthorized("the token is unknown or revoked")
        req.context.principal = principal


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
