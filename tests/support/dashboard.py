"""Driving the dashboard through falcon's TestClient: the login form, pages and forms."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from falcon import testing

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def secret(headers: Mapping[str, str]) -> str:
    """The token in Authorization headers."""
    return headers["Authorization"].split()[1]


def csrf_of(html: str) -> str:
    """The CSRF token in a page's form."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def login_form(stack: Any) -> tuple[str, str]:
    """The login page's pre-session cookie and the CSRF token of its form."""
    response = stack.client.simulate_get("/ui/login")
    return response.cookies["courier_login"].value, csrf_of(response.text)


def log_in(stack: Any, token: str, **headers: str) -> testing.Result:
    """Post the login form as a browser would, after loading it."""
    cookie, csrf = login_form(stack)
    return stack.client.simulate_post(
        "/ui/login",
        body=f"token={token}&csrf={csrf}",
        cookies={"courier_login": cookie},
        headers={**FORM, **headers},
    )


def session_of(stack: Any, token: str) -> str:
    """A logged-in session's cookie value."""
    response = log_in(stack, token)
    assert response.status_code == 303, response.text
    return response.cookies["courier_session"].value


def page(stack: Any, path: str, cookie: str) -> testing.Result:
    """GET a dashboard page with a session cookie."""
    return stack.client.simulate_get(path, cookies={"courier_session": cookie})


def post_form(stack: Any, path: str, cookie: str, **fields: str) -> testing.Result:
    """POST a dashboard form with a session cookie."""
    body = "&".join(f"{k}={v}" for k, v in fields.items())
    return stack.client.simulate_post(
        path, body=body, cookies={"courier_session": cookie}, headers=FORM
    )
