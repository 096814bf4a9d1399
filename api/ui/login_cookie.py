"""Dashboard login: a server-side session named by a strict cookie, and CSRF tokens.

Every form carries a token derived from a secret cookie the page's scripts cannot read
and other sites' requests do not carry (HttpOnly, SameSite=Strict): the session's cookie
once logged in, a pre-session cookie on the login form itself (see docs/http-api.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

import falcon
from sqlalchemy.orm import Session, sessionmaker

from store import dashboard_sessions, tokens

COOKIE = "courier_session"
# Double-submit token of the login form, before there is a session to derive one from.
LOGIN_COOKIE = "courier_login"
LOGIN_PATH = "/ui/login"


class LoginRequired(Exception):
    """The page needs an operator logged in."""


def login(
    resp: falcon.Response, sessions: sessionmaker[Session], who: tokens.Principal, *, secure: bool
) -> None:
    """Start a session for this operator; the cookie holds its secret, never the token."""
    with sessions.begin() as session:
        secret = dashboard_sessions.start(session, who.token_id)
    _set(resp, COOKIE, secret, path="/ui", secure=secure, max_age=dashboard_sessions.LIFETIME_S)
    resp.unset_cookie(LOGIN_COOKIE, path=LOGIN_PATH)


def logout(req: falcon.Request, resp: falcon.Response, sessions: sessionmaker[Session]) -> None:
    """End the session for good (a copy of the cookie is worthless) and forget the cookie."""
    secret = req.cookies.get(COOKIE)
    if secret:
        with sessions.begin() as session:
            dashboard_sessions.end(session, secret)
    resp.unset_cookie(COOKIE, path="/ui")


def operator(req: falcon.Request, sessions: sessionmaker[Session]) -> tokens.Principal:
    """The logged-in operator, or LoginRequired."""
    secret = req.cookies.get(COOKIE)
    if not secret:
        raise LoginRequired
    with sessions() as session:
        who = dashboard_sessions.operator(session, secret)
    if who is None or not who.is_operator:
        raise LoginRequired
    return who


def login_form_token(req: falcon.Request, resp: falcon.Response, *, renew: bool = False) -> str:
    """The login form's CSRF token, setting its pre-session cookie when there is none yet."""
    secret = None if renew else req.cookies.get(LOGIN_COOKIE)
    if not secret:
        secret = secrets.token_urlsafe(32)
        _set(resp, LOGIN_COOKIE, secret, path=LOGIN_PATH, secure=is_secure_origin(req))
    return _derive(secret)


def csrf_token(req: falcon.Request) -> str:
    """The token the session's pages put in their forms."""
    return _derive(req.cookies.get(COOKIE, ""))


def check_csrf(req: falcon.Request, form: dict[str, object], *, cookie: str = COOKIE) -> None:
    """Refuse a state-changing form that did not come from our own page."""
    origin = req.get_header("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != req.host + _port_suffix(req):
        raise falcon.HTTPForbidden(title="Forbidden", description="cross-site form submission")
    secret = req.cookies.get(cookie)
    sent = form.get("csrf")
    if not secret or not isinstance(sent, str) or not hmac.compare_digest(sent, _derive(secret)):
        raise falcon.HTTPForbidden(title="Forbidden", description="missing or invalid CSRF token")


def is_secure_origin(req: falcon.Request) -> bool:
    """Whether browsers accept a Secure cookie here (HTTPS, or a loopback host)."""
    return req.forwarded_scheme == "https" or req.host in ("localhost", "127.0.0.1", "[::1]")


def _derive(secret: str) -> str:
    return hmac.new(secret.encode(), b"courier-csrf", hashlib.sha256).hexdigest()


def _set(
    resp: falcon.Response, name: str, value: str, *, path: str, secure: bool, max_age: int = 3600
) -> None:
    resp.set_cookie(
        name,
        value,
        path=path,
        http_only=True,
        secure=secure,
        same_site="Strict",
        max_age=max_age,
    )


def _port_suffix(req: falcon.Request) -> str:
    default = 443 if req.scheme == "https" else 80
    return "" if req.port == default else f":{req.port}"
