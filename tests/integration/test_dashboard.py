"""The dashboard over HTTP: login, escaping, CSRF, and the operator's actions."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.dashboard import csrf_of, log_in, page, post_form, secret, session_of
from tests.support.records import add_job
from tests.support.times import LATER

pytestmark = pytest.mark.integration


def test_an_operator_logs_in_with_a_strict_http_only_cookie(stack):
    token = secret(stack.token("ops", "operator"))
    response = log_in(stack, token)
    assert response.status_code == 303 and response.headers["Location"].endswith("/ui/overview")
    cookie = response.cookies["courier_session"]
    assert cookie.http_only and cookie.same_site.lower() == "strict"
    assert cookie.path == "/ui"
    assert page(stack, "/ui/jobs", cookie.value).status_code == 200


def test_a_client_token_cannot_log_in(stack):
    response = log_in(stack, secret(stack.token("acme")))
    assert response.status_code == 403 and "courier_session" not in response.cookies
    assert "Client tokens cannot log in" in response.text


def test_pages_need_a_login(stack):
    for path in ("/ui/jobs", "/ui/dead-letters", "/ui/audit"):
        response = stack.client.simulate_get(path)
        assert response.status_code == 303 and response.headers["Location"].endswith("/ui/login")
    for raw_token in (secret(stack.token("acme")), secret(stack.token("ops", "operator"))):
        assert page(stack, "/ui/jobs", raw_token).status_code == 303


def test_every_value_is_escaped(stack):
    job_id = stack.submit(
        type="bug_for_test",  # a type whose payload may hold any field
        entity_id="<script>alert(1)</script>",
        run_at=LATER,
        payload={"note": "<img src=x onerror=alert(2)>"},
    )
    cookie = session_of(stack, secret(stack.token("ops", "operator")))
    listing = page(stack, "/ui/jobs", cookie).text
    assert (
        "<script>alert(1)</script>" not in listing
        and "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    )
    detail = page(stack, f"/ui/jobs/{job_id}", cookie)
    assert detail.status_code == 200
    assert "<img src=x" not in detail.text and "&lt;img src=x" in detail.text
    assert detail.headers["X-Frame-Options"] == "DENY"


def test_state_changing_forms_need_the_csrf_token(stack):
    job_id = stack.submit(type="customer_sync", entity_id="c_1", run_at=LATER)
    cookie = session_of(stack, secret(stack.token("ops", "operator")))
    forged = post_form(stack, f"/ui/jobs/{job_id}/cancel", cookie, reason="x")
    assert forged.status_code == 403
    wrong = post_form(stack, f"/ui/jobs/{job_id}/cancel", cookie, reason="x", csrf="0" * 64)
    assert wrong.status_code == 403
    assert stack.job(job_id).status == "queued"
    token = csrf_of(page(stack, f"/ui/jobs/{job_id}", cookie).text)
    done = post_form(stack, f"/ui/jobs/{job_id}/cancel", cookie, reason="from+ui", csrf=token)
    assert done.status_code == 303
    assert stack.job(job_id).status == "cancelled"
    audit = page(stack, "/ui/audit", cookie).text
    assert "cancel" in audit and "from ui" in audit


def test_filters_and_paging_on_the_job_list(stack):
    for i in range(60):
        stack.submit(type="customer_sync", entity_id=f"c_{i}", run_at=LATER)
    cookie = session_of(stack, secret(stack.token("ops", "operator")))
    first = page(stack, "/ui/jobs?tenant=acme&status=queued", cookie).text
    assert first.count('href="/ui/jobs/') == 50
    older = re.search(r'href="(/ui/jobs\?[^"]+cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = page(stack, older, cookie).text
    assert second.count('href="/ui/jobs/') == 10
    assert page(stack, "/ui/jobs?entity_id=c_7", cookie).text.count('href="/ui/jobs/') == 1


def test_a_replay_from_the_dashboard_checks_its_payload_as_the_api_does(stack):
    old = add_job(stack.sessions, entity_id="c_dir", type="directory_sync")
    cookie = session_of(stack, secret(stack.token("ops", "operator")))
    token = csrf_of(page(stack, f"/ui/jobs/{old}", cookie).text)

    def replay(payload: str) -> Any:
        return post_form(
            stack, f"/ui/jobs/{old}/replay", cookie, csrf=token, payload=quote(payload)
        )

    refused = replay('{"bogus": 1}')
    assert refused.status_code == 422 and "bogus" in refused.json["description"]
    deep = replay('{"a": ' + "[" * 8000 + "]" * 8000 + "}")
    assert deep.status_code == 400 and "not valid JSON" in deep.json["description"]
    assert replay('{"a": "\\u0000"}').status_code == 422
    assert stack.job(old).replayed_by is None

    done = replay('{"start_page": 3}')
    assert done.status_code == 303, done.text
    new = done.headers["Location"].rsplit("/", 1)[1]
    assert stack.job(new).payload == {"start_page": 3}
    assert str(stack.job(old).replayed_by) == new
