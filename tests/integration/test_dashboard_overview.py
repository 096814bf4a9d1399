"""The dashboard's overview (counts, the last hour's throughput plot, queues, dead letters by
error type), its workers page (running attempts by host and process), and the API explorer."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, insert

from store import tokens
from store.db import make_sessionmaker
from store.models import ATTEMPTS
from store.types import utcnow
from tests.support.dashboard import page, secret, session_of
from tests.support.processes import free_port
from tests.support.records import insert_jobs
from tests.support.stack import build, embedded_client

pytestmark = pytest.mark.integration


def operator_session(stack) -> str:
    return session_of(stack, secret(stack.token("ops", "operator")))


def points(html: str) -> dict[tuple[str, str], int]:
    """The plotted points: (outcome, minute) -> count."""
    found = re.findall(
        r'<circle class="point"[^>]*data-outcome="(\w+)" data-minute="([\d:]+)" data-count="(\d+)"',
        html,
    )
    return {(outcome, minute): int(count) for outcome, minute, count in found}


def finished(engine: Engine, count: int, *, status: str, ago: timedelta, **columns) -> datetime:
    """`count` jobs that ended `ago`; returns when."""
    at = utcnow() - ago
    insert_jobs(
        engine, count, at=at - timedelta(seconds=5), status=status, finished_at=at, **columns
    )
    return at


def running(engine: Engine, *, worker: str, lease_s: float = 60, **columns) -> uuid.UUID:
    """A job in its first attempt, run by `worker`, whose lease ends in `lease_s`."""
    now = utcnow()
    [job_id] = insert_jobs(
        engine,
        1,
        status="running",
        attempts=1,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=lease_s),
        **columns,
    )
    with engine.begin() as conn:
        conn.execute(
            insert(ATTEMPTS),
            {
                "job_id": job_id,
                "number": 1,
                "status": "running",
                "started_at": now - timedelta(seconds=30),
                "worker": worker,
            },
        )
    return job_id


def test_logging_in_lands_on_the_overview(stack):
    response = stack.client.simulate_get(
        "/ui", cookies={"courier_session": operator_session(stack)}
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/ui/overview")


def test_the_overview_counts_jobs_by_status_and_plots_the_last_hours_finished_jobs(stack, engine):
    insert_jobs(engine, 4)  # queued
    three = finished(engine, 3, status="succeeded", ago=timedelta(minutes=10))
    two = finished(engine, 2, status="dead", ago=timedelta(minutes=5), error_type="Timeout")
    one = finished(engine, 1, status="cancelled", ago=timedelta(minutes=5))
    finished(engine, 7, status="succeeded", ago=timedelta(hours=2))  # before the plot's hour
    html = page(stack, "/ui/overview", operator_session(stack)).text

    counts = dict(re.findall(r'<a class="count (\w+)" href="[^"]+"><b>(\d+)</b>', html))
    assert counts == {
        "queued": "4",
        "running": "0",
        "retrying": "0",
        "succeeded": "10",
        "failed": "0",
        "dead": "2",
        "cancelled": "1",
    }
    assert points(html) == {
        ("succeeded", three.strftime("%H:%M")): 3,
        ("dead", two.strftime("%H:%M")): 2,
        ("cancelled", one.strftime("%H:%M")): 1,
    }
    assert html.count("<polyline") == 4  # one line per outcome, failed flat at zero
    assert "(6 in all)" in html


def test_plotted_points_are_scaled_to_the_busiest_minute(stack, engine):
    finished(engine, 5, status="succeeded", ago=timedelta(minutes=3))
    finished(engine, 1, status="failed", ago=timedelta(minutes=3))
    html = page(stack, "/ui/overview", operator_session(stack)).text
    ys = {o: float(y) for y, o in re.findall(r'cy="([\d.]+)" r="3" data-outcome="(\w+)"', html)}
    bottom, top = 194, 10  # the plot area of a 220 px high chart
    # The scale tops at 5: five is at the top, one a fifth of the way up.
    assert ys["succeeded"] == top
    assert ys["failed"] == pytest.approx(bottom - (bottom - top) / 5, abs=0.1)


def test_a_live_overview_reloads_itself_without_a_script(stack):
    cookie = operator_session(stack)
    still = page(stack, "/ui/overview", cookie).text
    assert 'http-equiv="refresh"' not in still and 'href="/ui/overview?live=1"' in still
    live = page(stack, "/ui/overview?live=1", cookie).text
    assert '<meta http-equiv="refresh" content="5">' in live and "<script" not in live


def test_the_overview_breaks_dead_letters_down_by_error_type_with_links(stack, engine):
    finished(engine, 3, status="dead", ago=timedelta(days=3), error_type="UpstreamUnavailable")
    finished(engine, 1, status="dead", ago=timedelta(minutes=1), error_type="Bad Input & more")
    finished(engine, 1, status="dead", ago=timedelta(days=1), error_type="Gone")
    insert_jobs(engine, 1, status="dead", error_type="Replayed", replayed_by=uuid.uuid4())
    html = page(stack, "/ui/overview", operator_session(stack)).text
    table = html[html.index('<table class="errors">') :]
    rows = re.findall(r'<a href="([^"]+)">([^<]+)</a></td><td>(\d+)</td>', table)
    assert rows == [
        ("/ui/dead-letters?error_type=UpstreamUnavailable", "UpstreamUnavailable", "3"),
        ("/ui/dead-letters?error_type=Bad+Input+%26+more", "Bad Input &amp; more", "1"),
        ("/ui/dead-letters?error_type=Gone", "Gone", "1"),
    ]
    assert "Replayed" not in table  # replayed dead jobs are no longer dead letters


def test_the_overview_shows_queue_depths_and_how_long_the_oldest_ready_job_has_waited(
    stack, engine
):
    now = utcnow()
    insert_jobs(engine, 1, at=now - timedelta(minutes=7))
    insert_jobs(engine, 1, at=now - timedelta(minutes=2))
    # Waiting for its run_at, so not ready; older still.
    insert_jobs(engine, 1, at=now - timedelta(hours=1), next_attempt_at=now + timedelta(hours=1))
    html = page(stack, "/ui/overview", operator_session(stack)).text
    row = re.search(r"<tr>\s*<td>sync</td>(.*?)</tr>", html, re.S).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[:4] == ["0", "0", "0", "0"]  # nothing was published to the broker
    assert re.fullmatch(r"7 min \d+ s", cells[4])


def test_queue_depths_read_unknown_when_the_management_api_is_down(settings, engine, sessions):
    blind = build(
        settings.replace(rabbitmq_api_url=f"http://127.0.0.1:{free_port()}"), engine, sessions
    )
    try:
        response = page(blind, "/ui/overview", operator_session(blind))
        assert response.status_code == 200
        row = re.search(r"<tr>\s*<td>sync</td>(.*?)</tr>", response.text, re.S).group(1)
        assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[:4] == ["unknown"] * 4
        assert "management API did not answer" in response.text
    finally:
        blind.api_broker.close()


def test_the_workers_page_lists_running_attempts_by_host_and_process(stack, engine):
    a = running(engine, worker="host-a:4242", tenant="acme", type="customer_sync")
    b = running(engine, worker="host-a:77", tenant="beta", type="invoice_sync")
    c = running(engine, worker="host-b:9", lease_s=-10)  # its worker stopped renewing
    insert_jobs(engine, 2)  # queued: no attempt
    html = page(stack, "/ui/workers", operator_session(stack)).text

    assert re.findall(r"<h2>([\w-]+) <span", html) == ["host-a", "host-b"]
    assert re.findall(r'<h3 class="process">([^ ]+) ', html) == [
        "host-a:77",
        "host-a:4242",
        "host-b:9",
    ]
    for job_id in (a, b, c):
        assert f'href="/ui/jobs/{job_id}"' in html
    section_a = html[html.index("host-a:4242") : html.index("host-b:9")]
    assert str(a) in section_a and "customer_sync" in section_a and "acme" in section_a
    assert "#1" in section_a and re.search(r"<td>3\d s</td>", section_a)
    assert html.count("(expired)") == 1 and html.index("(expired)") > html.index(str(c))


def test_the_workers_page_says_when_nothing_runs(stack):
    html = page(stack, "/ui/workers", operator_session(stack)).text
    assert "No attempt is running." in html


def test_the_new_pages_need_a_login_and_escape_every_value(stack, engine):
    for path in ("/ui/overview", "/ui/workers"):
        response = stack.client.simulate_get(path)
        assert response.status_code == 303 and response.headers["Location"].endswith("/ui/login")
    finished(engine, 1, status="dead", ago=timedelta(minutes=1), error_type="<script>x()</script>")
    running(engine, worker="<img src=x onerror=alert(1)>:1", tenant="<b>t</b>")
    cookie = operator_session(stack)
    for path in ("/ui/overview", "/ui/workers"):
        response = page(stack, path, cookie)
        assert response.status_code == 200
        assert "<script>x()" not in response.text and "<img src=x" not in response.text
        assert "<b>t</b>" not in response.text
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "&lt;script&gt;x()&lt;/script&gt;" in page(stack, "/ui/overview", cookie).text
    assert "&lt;img src=x onerror=alert(1)&gt;:1" in page(stack, "/ui/workers", cookie).text


def test_the_overview_works_on_the_embedded_store(sqlite_engine):
    stack = SimpleNamespace(client=embedded_client(sqlite_engine))
    with make_sessionmaker(sqlite_engine).begin() as session:
        token = tokens.create(session, tenant="ops", role="operator")
    at = finished(sqlite_engine, 2, status="succeeded", ago=timedelta(minutes=4))
    running(sqlite_engine, worker="laptop:123")
    cookie = session_of(stack, token)
    overview = page(stack, "/ui/overview", cookie)
    assert overview.status_code == 200
    assert points(overview.text) == {("succeeded", at.strftime("%H:%M")): 2}
    workers = page(stack, "/ui/workers", cookie)
    assert workers.status_code == 200 and "laptop:123" in workers.text


def test_the_api_explorer_loads_swagger_ui_from_here(stack):
    response = stack.client.simulate_get("/docs")
    assert response.status_code == 200
    scripts = re.findall(r'<script src="([^"]+)"', response.text)
    assert scripts == ["/docs/assets/swagger-ui-bundle.js", "/ui/static/explorer.js"]
    assert 'data-document="/openapi.json"' in response.text
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "unsafe" not in policy
    for path in [*scripts, "/docs/assets/swagger-ui.css"]:
        asset = stack.client.simulate_get(path)
        assert asset.status_code == 200 and len(asset.content) > 200, path
    bundle = stack.client.simulate_get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["Content-Type"] == "text/javascript"
    assert "SwaggerUIBundle" in bundle.text
    assert stack.client.simulate_get("/docs/assets/index.html").status_code == 404
    assert stack.client.simulate_get("/docs/assets/..%2Fcore.py").status_code == 404


def test_the_openapi_document_lists_no_dashboard_or_explorer_route(stack):
    paths = stack.client.simulate_get("/openapi.json").json["paths"]
    assert not [p for p in paths if p.startswith(("/ui", "/docs"))]
    assert "/v1/jobs" in paths
