"""Dashboard login: an operator token kept in a strict cookie, and CSRF tokens derived from it."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

import falcon
from sqlalchemy.orm import Session, sessionmaker

from store import tokens

COOKIE = "courier_session"


class LoginRequired(Exception):
    """The page needs an operator logged in."""


def login(resp: falcon.Response, token: str, *, secure: bool) -> None:
    """Keep the token in a cookie scripts cannot read and other sites cannot send."""
    resp.set_cookie(
        COOKIE,
        token,
        path="/ui",
        http_only=True,
        secure=secure,
        same_site="Strict",
        max_age=12 * 3600,
    )


def logout(resp: falcon.Response) -> None:
    """Forget the login."""
    resp.unset_cookie(COOKIE, path="/ui")


def operator(req: falcon.Request, sessions: sessionmaker[Session]) -> tokens.Principal:
    """The logged-in operator, or LoginRequired."""
    token = req.cookies.get(COOKIE)
    if not token:
        raise LoginRequired
    with sessions() as session:
        who = tokens.authenticate(session, token)
    if who is None or not who.is_operator:
        raise LoginRequired
    return who


def csrf_token(req: falcon.Request) -> str:
    """A token only a page served to this login can know (the cookie is secret and HttpOnly)."""
    secret = req.cookies.get(COOKIE, "")
    return hmac.new(secret.encode(), b"courier-csrf", hashlib.sha256).hexdigest()


def check_csrf(req: falcon.Request, form: dict[str, object]) -> None:
    """Refuse a state-changing form that did not come from our own page."""
    origin = req.get_header("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != req.host + _port_suffix(req):
        raise falcon.HTTPForbidden(title="Forbidden", description="cross-site form submission")
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(req)):
        raise falcon.HTTPForbidden(title="Forbidden", description="missing or invalid CSRF token")


def _port_suffix(req: falcon.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    return "" if req.port == default else f":{req.port}"


def is_secure_origin(req: falcon.Request) -> bool:
    """Whether browsers accept a Secure cookie here (HTTPS, or a loopback host)."""
    return req.forwarded_scheme == "https" or req.host in ("localhost", "127.0.0.1", "[::1]")
