"""Dashboard logins are server-side sessions: the cookie names one, logout and the token's
revocation or expiry end it, and the login form itself is CSRF-protected and size-capped."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from store import tokens
from store.db import make_sessionmaker
from tests.support.dashboard import (
    FORM,
    csrf_of,
    log_in,
    login_form,
    page,
    post_form,
    secret,
    session_of,
)
from tests.support.stack import embedded_client
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def operator_token(stack):
    return secret(stack.token("ops", "operator"))


def sql(stack, statement, **params):
    with stack.engine.begin() as db:
        return db.execute(text(statement), params)


def logged_in(stack, cookie):
    return page(stack, "/ui/jobs", cookie).status_code == 200


def test_the_cookie_names_a_server_side_session_not_the_token(stack):
    token = operator_token(stack)
    cookie = session_of(stack, token)
    assert token not in cookie and len(cookie) >= 40
    row = sql(
        stack,
        "SELECT t.token_hash, extract(epoch FROM s.expires_at - s.created_at) AS lifetime"
        " FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id"
        " WHERE s.id_hash = :h AND s.ended_at IS NULL",
        h=hashlib.sha256(cookie.encode()).hexdigest(),
    ).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.lifetime == 12 * 3600
    assert logged_in(stack, cookie)


def test_logout_ends_the_session_for_every_copy_of_the_cookie(stack):
    token = operator_token(stack)
    cookie, other = session_of(stack, token), session_of(stack, token)
    csrf = csrf_of(page(stack, "/ui/jobs", cookie).text)
    done = post_form(stack, "/ui/logout", cookie, csrf=csrf)
    assert done.status_code == 303 and done.headers["Location"].endswith("/ui/login")
    assert not logged_in(stack, cookie)  # a stolen copy is worthless now
    assert logged_in(stack, other)  # the operator's other logins carry on


def test_a_session_dies_when_its_token_is_revoked_or_expires(stack):
    revoked, expired = operator_token(stack), operator_token(stack)
    cookies = {t: session_of(stack, t) for t in (revoked, expired)}
    assert all(logged_in(stack, c) for c in cookies.values())
    sql(
        stack,
        "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = :h",
        h=hashlib.sha256(revoked.encode()).hexdigest(),
    )
    sql(
        stack,
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = :h",
        h=hashlib.sha256(expired.encode()).hexdigest(),
    )
    assert not any(logged_in(stack, c) for c in cookies.values())


def test_a_session_expires_by_the_database_clock(stack):
    cookie = session_of(stack, operator_token(stack))
    sql(stack, "UPDATE dashboard_sessions SET expires_at = now() - interval '1 second'")
    response = page(stack, "/ui/jobs", cookie)
    assert response.status_code == 303 and response.headers["Location"].endswith("/ui/login")


def test_csrf_tokens_derive_from_the_session(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_1", run_at=LATER)
    token = operator_token(stack)
    first, second = session_of(stack, token), session_of(stack, token)
    first_csrf = csrf_of(page(stack, "/ui/jobs", first).text)
    assert first_csrf != csrf_of(page(stack, "/ui/jobs", second).text)
    crossed = post_form(stack, f"/ui/jobs/{job_id}/cancel", second, csrf=first_csrf)
    assert crossed.status_code == 403 and stack.job(job_id).status == "queued"


def test_the_login_form_is_csrf_protected(stack):
    token = operator_token(stack)
    without = stack.client.simulate_post("/ui/login", body=f"token={token}", headers=FORM)
    cookie, csrf = login_form(stack)
    forged = stack.client.simulate_post(
        "/ui/login",
        body=f"token={token}&csrf={'0' * 64}",
        cookies={"courier_login": cookie},
        headers=FORM,
    )
    cross_site = log_in(stack, token, Origin="https://evil.example")
    for refused in (without, forged, cross_site):
        assert refused.status_code == 403 and "courier_session" not in refused.cookies
        assert "log in again" in refused.text
    # The refusal renders a fresh form that does work.
    retry = stack.client.simulate_post(
        "/ui/login",
        body=f"token={token}&csrf={csrf_of(without.text)}",
        cookies={"courier_login": without.cookies["courier_login"].value},
        headers=FORM,
    )
    assert retry.status_code == 303 and "courier_session" in retry.cookies
    assert csrf == csrf_of(
        stack.client.simulate_get("/ui/login", cookies={"courier_login": cookie}).text
    )


def test_a_login_form_over_64_kib_is_refused_with_413(stack):
    cookie, csrf = login_form(stack)
    body = f"csrf={csrf}&token={operator_token(stack)}&pad={'x' * 64 * 1024}"
    response = stack.client.simulate_post(
        "/ui/login", body=body, cookies={"courier_login": cookie}, headers=FORM
    )
    assert response.status_code == 413
    assert response.json["title"] == "Payload Too Large"


def test_sessions_work_the_same_on_the_embedded_store(sqlite_engine):
    """`courier dev` keeps its sessions in SQLite: log in, use a page, log out."""
    stack = SimpleNamespace(client=embedded_client(sqlite_engine))
    with make_sessionmaker(sqlite_engine).begin() as session:
        token = tokens.create(session, tenant="ops", role="operator")
    cookie = session_of(stack, token)
    assert logged_in(stack, cookie)
    csrf = csrf_of(page(stack, "/ui/jobs", cookie).text)
    assert post_form(stack, "/ui/logout", cookie, csrf=csrf).status_code == 303
    assert not logged_in(stack, cookie)
