"""The dashboard's schedules: the list and a schedule's page, pausing, resuming and triggering
from them, the links between jobs and their schedules, and `courier dev`'s demo schedule."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select

from api import serialize
from courier import dev
from store import schedules
from store.cadence import Cadence
from store.db import make_engine, make_sessionmaker
from store.models import AuditEntry, Job, Schedule, ScheduleRun
from tests.support.dashboard import csrf_of, page, post_form, secret, session_of
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


def add_schedule(stack, name="nightly-directory", *, tenant="acme", **fields) -> uuid.UUID:
    """A schedule stored as the API stores one; a cron at 03:00 in Berlin unless told."""
    cadence = fields.pop("cadence", None) or Cadence.checked(
        cron="0 3 * * *",
        interval_s=None,
        timezone="Europe/Berlin",
        jitter_s=fields.pop("jitter_s", 0),
    )
    new = schedules.NewSchedule(
        tenant=tenant,
        name=name,
        type=fields.pop("type", "directory_sync"),
        cadence=cadence,
        max_attempts=fields.pop("max_attempts", 4),
        **fields,
    )
    with stack.sessions.begin() as session:
        return schedules.create(session, new).id


def add_run(stack, schedule_id: uuid.UUID, scheduled_for: datetime) -> uuid.UUID:
    """The job of one occurrence, as the scheduler adds it."""
    with stack.sessions.begin() as session:
        schedule = schedules.get(session, schedule_id, tenant=None)
        return schedules.add_job(
            session,
            schedule,
            scheduled_for=scheduled_for,
            outcome="created",
            queue="sync",
            timeout_s=60,
        ).id


def schedule_row(stack, schedule_id: uuid.UUID) -> Schedule:
    with stack.sessions() as session:
        return session.get_one(Schedule, schedule_id)


def audit_actions(stack) -> list[tuple[str, str, str | None, dict | None]]:
    with stack.sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        return [(e.action, e.actor, e.reason, e.details) for e in rows]


@pytest.fixture
def operator(stack) -> str:
    """A logged-in operator's session cookie."""
    return session_of(stack, secret(stack.token("ops", "operator")))


def test_the_schedules_page_lists_every_tenants_schedules_with_next_and_last_run(stack, operator):
    nightly = add_schedule(stack, "nightly-directory", jitter_s=300)
    frequent = add_schedule(
        stack,
        "frequent-sync",
        tenant="globex",
        cadence=Cadence.checked(cron=None, interval_s=900),
        entity_id="c_1",
        type="customer_sync",
    )
    ran_for = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    job_id = add_run(stack, frequent, ran_for)

    listing = page(stack, "/ui/schedules", operator)
    assert listing.status_code == 200
    html = listing.text
    assert 'href="/ui/schedules"' in html  # the navigation link
    rows = re.findall(r"<tr>\s*<td><a href=\"/ui/schedules/(.*?)</tr>", html, re.S)
    assert [r.split('"')[0] for r in rows] == [str(frequent), str(nightly)]  # newest first
    frequent_row, nightly_row = rows
    assert "globex" in frequent_row and "customer_sync" in frequent_row
    assert "every 900 s" in frequent_row and "UTC" in frequent_row
    assert f'href="/ui/jobs/{job_id}"' in frequent_row and 'class="status queued"' in frequent_row
    assert serialize.timestamp(ran_for) in frequent_row
    assert "0 3 * * *" in nightly_row and "Europe/Berlin" in nightly_row
    assert "up to 300 s" in nightly_row
    with stack.sessions() as session:
        first = schedules.next_runs(schedules.get(session, nightly, tenant=None), 1)[0]
    assert serialize.timestamp(first.replace(microsecond=0)) in nightly_row
    assert "—" in nightly_row  # never ran


def test_the_schedule_page_shows_its_next_five_runs_and_its_jobs_newest_first(stack, operator):
    schedule_id = add_schedule(stack, entity_id="dir_1")
    start = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    job_ids = []
    for day in range(3):
        job_ids.append(add_run(stack, schedule_id, start + timedelta(days=day)))
        with stack.sessions.begin() as session:  # the job ended: the next one may start
            session.get_one(Job, job_ids[-1]).status = "succeeded"

    detail = page(stack, f"/ui/schedules/{schedule_id}", operator)
    assert detail.status_code == 200
    html = detail.text
    with stack.sessions() as session:
        expected = schedules.next_runs(schedules.get(session, schedule_id, tenant=None), 5)
    runs = re.search(r'<ol class="next-runs">(.*?)</ol>', html, re.S).group(1)
    assert re.findall(r"<li>(\S+) ", runs) == [
        serialize.timestamp(t.replace(microsecond=0)) for t in expected
    ]
    assert "CET" in runs  # and in the wall-clock time the cron is read in
    table = html[html.index("Recent jobs") :]
    linked = re.findall(r'href="/ui/jobs/([0-9a-f-]+)"', table)
    assert linked == [str(j) for j in reversed(job_ids)]
    assert f'href="/ui/jobs/{job_ids[-1]}"><span class="status succeeded">' in html  # last run
    assert 'action="/ui/schedules/' in html and "Pause schedule" in html
    assert "Trigger now" in html


def test_an_unknown_schedule_is_404(stack, operator):
    missing = page(stack, f"/ui/schedules/{uuid.uuid4()}", operator)
    assert missing.status_code == 404
    assert missing.json["description"] == "no such schedule"


def test_schedule_pages_need_a_login(stack):
    schedule_id = add_schedule(stack)
    for path in ("/ui/schedules", f"/ui/schedules/{schedule_id}"):
        response = stack.client.simulate_get(path)
        assert response.status_code == 303 and response.headers["Location"].endswith("/ui/login")


def test_a_hostile_schedule_name_is_escaped(stack, operator):
    hostile = "<script>alert(1)</script>"
    schedule_id = add_schedule(stack, hostile, payload={"note": "<img src=x onerror=alert(2)>"})
    for path in ("/ui/schedules", f"/ui/schedules/{schedule_id}"):
        html = page(stack, path, operator).text
        assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<img src=x" not in html
    job_id = add_run(stack, schedule_id, datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
    html = page(stack, f"/ui/jobs/{job_id}", operator).text
    assert hostile not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_schedules_page_filters_by_tenant_type_and_paused(stack, operator):
    add_schedule(stack, "acme-directory", tenant="acme")
    add_schedule(stack, "globex-directory", tenant="globex", paused=True)
    add_schedule(
        stack,
        "globex-customer",
        tenant="globex",
        type="customer_sync",
        entity_id="c_1",
        cadence=Cadence.checked(cron=None, interval_s=60),
    )

    def names(query: str) -> list[str]:
        html = page(stack, f"/ui/schedules{query}", operator).text
        return re.findall(r'<td><a href="/ui/schedules/[0-9a-f-]+">([^<]+)</a></td>', html)

    assert names("?tenant=globex") == ["globex-customer", "globex-directory"]
    assert names("?tenant=globex&type=directory_sync") == ["globex-directory"]
    assert names("?paused=yes") == ["globex-directory"]
    assert names("?paused=no") == ["globex-customer", "acme-directory"]
    assert names("?paused=maybe") == names("")  # an unknown value filters nothing
    assert names("?tenant=initech") == []
    assert 'value="globex" ' not in page(stack, "/ui/schedules", operator).text
    assert 'value="globex"' in page(stack, "/ui/schedules?tenant=globex", operator).text


def test_pausing_and_resuming_need_the_csrf_token_and_are_audited(stack, operator):
    schedule_id = add_schedule(stack)
    path = f"/ui/schedules/{schedule_id}"
    assert post_form(stack, f"{path}/pause", operator, reason="x").status_code == 403
    forged = post_form(stack, f"{path}/pause", operator, reason="x", csrf="0" * 64)
    assert forged.status_code == 403
    assert schedule_row(stack, schedule_id).paused is False and audit_actions(stack) == []

    csrf = csrf_of(page(stack, path, operator).text)
    paused = post_form(stack, f"{path}/pause", operator, reason="CRM+migration", csrf=csrf)
    assert paused.status_code == 303 and paused.headers["Location"].endswith(path)
    row = schedule_row(stack, schedule_id)
    assert row.paused is True and row.paused_reason is None
    html = page(stack, path, operator).text
    assert "Resume schedule" in html and "None while paused." in html

    before = row.next_occurrence
    resumed = post_form(stack, f"{path}/resume", operator, reason="done", csrf=csrf)
    assert resumed.status_code == 303
    row = schedule_row(stack, schedule_id)
    assert row.paused is False and row.next_occurrence >= before
    assert post_form(stack, f"{path}/resume", operator, csrf=csrf).status_code == 303  # no-op
    details = {"schedule_id": str(schedule_id), "name": "nightly-directory"}
    assert audit_actions(stack) == [
        ("schedule.pause", "operator:ops:test operator", "CRM migration", details),
        ("schedule.resume", "operator:ops:test operator", "done", details),
    ]
    assert "schedule.pause" in page(stack, "/ui/audit", operator).text


def test_trigger_now_creates_and_publishes_a_job_of_the_schedule_audited(stack, operator):
    schedule_id = add_schedule(
        stack, type="bug_for_test", max_attempts=1, paused=True
    )  # a paused schedule can still be run by hand
    path = f"/ui/schedules/{schedule_id}"
    assert post_form(stack, f"{path}/trigger", operator, reason="x").status_code == 403
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0

    csrf = csrf_of(page(stack, path, operator).text)
    triggered = post_form(stack, f"{path}/trigger", operator, reason="catch+up", csrf=csrf)
    assert triggered.status_code == 303
    job_id = uuid.UUID(triggered.headers["Location"].rsplit("/", 1)[1])
    job = stack.job(job_id)
    assert job.schedule_id == schedule_id and job.scheduled_for is not None
    with stack.sessions() as session:
        run = session.get_one(ScheduleRun, (schedule_id, job.scheduled_for))
        assert run.outcome == "triggered" and run.job_id == job_id
    assert audit_actions(stack) == [
        (
            "schedule.trigger",
            "operator:ops:test operator",
            "catch up",
            {"schedule_id": str(schedule_id), "name": "nightly-directory"},
        )
    ]
    stack.start_worker(threads=1)  # it was published: a worker runs it (and it fails, a bug)
    wait_for(lambda: stack.job(job_id).status == "dead", timeout=30, what="the job to run")
    assert f'href="/ui/jobs/{job_id}"' in page(stack, path, operator).text


def test_trigger_now_is_refused_while_the_entitys_job_is_active(stack, operator):
    schedule_id = add_schedule(stack, entity_id="dir_1")
    active = add_run(stack, schedule_id, datetime(2026, 1, 5, 2, 0, tzinfo=UTC))
    path = f"/ui/schedules/{schedule_id}"
    csrf = csrf_of(page(stack, path, operator).text)
    refused = post_form(stack, f"{path}/trigger", operator, reason="again", csrf=csrf)
    assert refused.status_code == 409
    assert "Not triggered" in refused.text and str(active) in refused.text
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ScheduleRun)) == 1
        assert session.scalar(select(func.count()).select_from(Job)) == 1
    assert schedule_row(stack, schedule_id).last_job_id == active
    assert audit_actions(stack) == []


def test_trigger_now_is_refused_for_a_job_type_no_worker_knows(stack, operator):
    schedule_id = add_schedule(stack, type="retired_type")
    path = f"/ui/schedules/{schedule_id}"
    csrf = csrf_of(page(stack, path, operator).text)
    refused = post_form(stack, f"{path}/trigger", operator, reason="try", csrf=csrf)
    assert refused.status_code == 409
    assert "no worker knows the job type &#39;retired_type&#39;" in refused.text
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ScheduleRun)) == 0
    assert audit_actions(stack) == []


def test_a_schedule_courier_paused_itself_says_why_until_resumed(stack, operator):
    schedule_id = add_schedule(stack, type="retired_type")
    why = "its job type retired_type is no longer deployed"
    with stack.sessions.begin() as session:
        row = session.get_one(Schedule, schedule_id)
        row.paused, row.paused_reason = True, why
    assert why in page(stack, "/ui/schedules", operator).text
    path = f"/ui/schedules/{schedule_id}"
    html = page(stack, path, operator).text
    assert f'Paused because</dt><dd class="error">{why}' in html
    resumed = post_form(stack, f"{path}/resume", operator, reason="redeployed", csrf=csrf_of(html))
    assert resumed.status_code == 303
    row = schedule_row(stack, schedule_id)
    assert row.paused is False and row.paused_reason is None
    assert why not in page(stack, "/ui/schedules", operator).text


def test_a_job_and_its_schedule_link_to_each_other(stack, operator):
    schedule_id = add_schedule(stack, "nightly-directory")
    scheduled_for = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    job_id = add_run(stack, schedule_id, scheduled_for)

    job_page = page(stack, f"/ui/jobs/{job_id}", operator).text
    link = f'<a href="/ui/schedules/{schedule_id}" class="schedule">nightly-directory</a>'
    assert f"{link} for {serialize.timestamp(scheduled_for)}" in job_page
    assert f'href="/ui/jobs/{job_id}"' in page(stack, f"/ui/schedules/{schedule_id}", operator).text
    jobs_page = page(stack, "/ui/jobs", operator).text
    assert f'href="/ui/schedules/{schedule_id}" class="schedule"' in jobs_page

    with stack.sessions.begin() as session:
        session.execute(delete(Schedule).where(Schedule.id == schedule_id))
    job_page = page(stack, f"/ui/jobs/{job_id}", operator).text
    assert f"<code>{schedule_id}</code> (deleted)" in job_page
    assert f'href="/ui/schedules/{schedule_id}"' not in job_page


def test_a_job_without_a_schedule_says_nothing_of_one(stack, operator):
    job_id = stack.submit(type="customer_sync", entity_id="c_1")
    job_page = page(stack, f"/ui/jobs/{job_id}", operator).text
    assert "Scheduled by" not in job_page and "/ui/schedules/" not in job_page


def test_courier_dev_creates_its_paused_demo_schedule_on_the_first_start_only(settings, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'courier-dev.db'}")
    sessions = make_sessionmaker(engine)

    def demo_schedules() -> list[Schedule]:
        with sessions() as session:
            return list(session.scalars(select(Schedule)).all())

    try:
        dev.prepare(engine, settings)
        dev.prepare(engine, settings)  # a restart
        (demo,) = demo_schedules()
        assert (demo.tenant, demo.name, demo.type) == (
            "demo",
            "demo-directory-sync",
            "directory_sync",
        )
        assert (demo.cron, demo.timezone, demo.jitter_s) == ("0 3 * * *", "Europe/Berlin", 300)
        assert demo.paused is True
        with sessions.begin() as session:  # the user deletes it: it stays deleted
            session.execute(delete(Schedule))
        dev.prepare(engine, settings)
        assert demo_schedules() == []
    finally:
        engine.dispose()
