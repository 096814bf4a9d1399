"""/v1/schedules: creating, listing, changing, pausing, triggering and deleting schedules."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from dramatiq.brokers.stub import StubBroker
from falcon import testing
from sqlalchemy import func, select, text

from courier.settings import Settings
from courier.wsgi import app_for
from store import schedules, tokens
from store.cadence import Cadence
from store.db import make_sessionmaker
from store.models import AuditEntry, Job, Schedule, ScheduleRun
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

NIGHTLY = {"name": "nightly-directory", "type": "directory_sync", "cron": "0 3 * * *"}


def post(stack, path, body, headers):
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return stack.client.simulate_post(
        path, body=raw, headers={**headers, "Content-Type": "application/json"}
    )


def patch(stack, schedule_id, body, headers):
    return stack.client.simulate_patch(
        f"/v1/schedules/{schedule_id}",
        body=json.dumps(body),
        headers={**headers, "Content-Type": "application/json"},
    )


def create(stack, headers, **fields):
    response = post(stack, "/v1/schedules", {**NIGHTLY, **fields}, headers)
    assert response.status_code == 201, response.text
    return response.json


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def schedule_count(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Schedule))


def audit_actions(stack, schedule_id) -> list[tuple[str, str | None]]:
    with stack.sessions() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        return [
            (e.action, e.reason)
            for e in entries
            if e.details and e.details.get("schedule_id") == str(schedule_id)
        ]


@pytest.fixture
def acme(stack):
    return stack.token("acme")


@pytest.fixture
def operator(stack):
    return stack.token("ops", role="operator")


def test_creating_a_schedule_answers_201_with_the_contracts_schedule_object(stack, acme):
    response = post(
        stack,
        "/v1/schedules",
        {**NIGHTLY, "timezone": "Europe/Berlin", "payload": {"start_page": 2}},
        acme,
    )
    assert response.status_code == 201, response.text
    schedule = response.json
    assert response.headers["Location"] == f"/v1/schedules/{schedule['id']}"
    assert set(schedule) == {
        "id", "tenant", "name", "type", "entity_id", "payload", "priority", "max_attempts",
        "cron", "interval_s", "timezone", "jitter_s", "overlap", "missed", "paused",
        "paused_reason", "next_runs", "last_run", "skipped_runs", "created_at", "updated_at",
    }  # fmt: skip
    assert schedule["tenant"] == "acme" and schedule["payload"] == {"start_page": 2}
    assert (schedule["overlap"], schedule["missed"], schedule["paused"]) == ("skip", "once", False)
    assert schedule["max_attempts"] == stack.settings.max_attempts
    assert schedule["interval_s"] is None and schedule["jitter_s"] == 0
    assert schedule["last_run"] is None and schedule["skipped_runs"] == 0
    runs = [parse(t) for t in schedule["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs) and runs[0] > datetime.now(UTC)
    # 03:00 in Berlin is 01:00 or 02:00 UTC, depending on the season.
    assert all(t.hour in (1, 2) and t.minute == 0 for t in runs)
    assert stack.client.simulate_get(response.headers["Location"], headers=acme).json == schedule


def test_jitter_delays_each_run_by_less_than_jitter_s(stack, acme):
    plain = create(stack, acme, name="plain", interval_s=60, cron=None)
    spread = create(stack, acme, name="spread", interval_s=60, cron=None, jitter_s=30)
    for on_time, late in zip(plain["next_runs"], spread["next_runs"], strict=True):
        delay = parse(late) - parse(on_time)
        assert timedelta(0) <= delay < timedelta(seconds=30)
    assert plain["next_runs"] != spread["next_runs"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "every night"}, "cron"),
        ({"cron": "0 0 31 2 *"}, "cron"),  # never fires
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"cron": None, "interval_s": 0}, "interval_s"),
        ({"cron": None, "interval_s": -5}, "interval_s"),
        ({"interval_s": 900}, "cron"),  # both
        ({"cron": None}, "cron"),  # neither
        ({"jitter_s": 3601}, "jitter_s"),
        ({"jitter_s": -1}, "jitter_s"),
        ({"type": "no_such_type"}, "type"),
        ({"payload": {"colour": "red"}}, "payload"),
        ({"type": "customer_sync"}, "entity_id"),
        ({"priority": 10}, "priority"),
        ({"max_attempts": 21}, "max_attempts"),
        ({"overlap": "queue"}, "overlap"),
        ({"missed": "all"}, "missed"),
        ({"name": "has spaces"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(stack, acme, fields, named):
    response = post(stack, "/v1/schedules", {**NIGHTLY, **fields}, acme)
    assert response.status_code == 422, response.text
    assert response.json["title"] and named in response.json["description"]
    assert schedule_count(stack) == 0


def test_a_body_that_is_not_json_is_400(stack, acme):
    response = post(stack, "/v1/schedules", b"{nope", acme)
    assert response.status_code == 400 and response.json["title"] == "Malformed JSON"


def test_a_duplicate_name_is_409_and_another_tenant_may_use_the_name(stack, acme):
    create(stack, acme)
    again = post(stack, "/v1/schedules", NIGHTLY, acme)
    assert again.status_code == 409 and "name" in again.json["description"]
    create(stack, stack.token("globex"))
    assert schedule_count(stack) == 2


def race(stack, headers, name: str) -> list[int]:
    """Two creates of one name, released together; their statuses, sorted."""
    start = threading.Barrier(2)
    answers: list[int] = []

    def create_one() -> None:
        start.wait()
        body = {**NIGHTLY, "name": name}
        answers.append(post(stack, "/v1/schedules", body, headers).status_code)

    threads = [threading.Thread(target=create_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return sorted(answers)


def test_two_concurrent_creates_of_one_name_give_one_201_and_one_409(stack, acme):
    rounds = 8
    assert [race(stack, acme, f"race-{n}") for n in range(rounds)] == [[201, 409]] * rounds
    assert schedule_count(stack) == rounds


def test_the_unique_index_decides_between_writers_that_both_found_the_name_free(stack):
    new = schedules.NewSchedule(
        tenant="acme",
        name="contested",
        type="directory_sync",
        cadence=Cadence.checked(cron=None, interval_s=60),
        max_attempts=4,
    )
    outcome: list[BaseException | None] = []
    with stack.sessions.begin() as first:
        schedules.create(first, new)  # written, not yet committed: the second cannot see it

        def second() -> None:
            try:
                with stack.sessions.begin() as session:
                    schedules.create(session, new)
                outcome.append(None)
            except BaseException as e:
                outcome.append(e)

        thread = threading.Thread(target=second)
        thread.start()
        wait_for(lambda: waiting_on_a_lock(stack), timeout=20, what="the second insert to wait")
    thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], schedules.DuplicateScheduleName)
    assert schedule_count(stack) == 1


def waiting_on_a_lock(stack) -> bool:
    with stack.engine.connect() as db:
        return bool(
            db.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar()
        )


def test_an_operator_names_the_tenant_and_a_client_only_its_own(stack, acme, operator):
    made = create(stack, operator, tenant="globex")
    assert made["tenant"] == "globex"
    unnamed = post(stack, "/v1/schedules", {**NIGHTLY, "name": "other"}, operator)
    assert unnamed.status_code == 422 and "tenant" in unnamed.json["description"]
    theirs = post(stack, "/v1/schedules", {**NIGHTLY, "tenant": "globex"}, acme)
    assert theirs.status_code == 403
    assert create(stack, acme, tenant="acme")["tenant"] == "acme"


def test_another_tenants_schedule_is_indistinguishable_from_a_missing_one(stack, acme):
    globex = stack.token("globex")
    schedule_id = create(stack, acme)["id"]
    missing = "01900000-0000-7000-8000-000000000000"
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"priority": 3}),
        ("DELETE", "", None),
        ("POST", "/trigger", None),
    ]:
        answers = [
            stack.client.simulate_request(
                method,
                f"/v1/schedules/{sid}{suffix}",
                headers={**globex, "Content-Type": "application/json"},
                body=None if body is None else json.dumps(body),
            )
            for sid in (schedule_id, missing)
        ]
        assert [a.status_code for a in answers] == [404, 404], (method, suffix)
        assert answers[0].json == answers[1].json
    mine = stack.client.simulate_get(f"/v1/schedules/{schedule_id}", headers=acme).json
    assert mine["priority"] == 0
    assert stack.client.simulate_get("/v1/schedules", headers=globex).json["items"] == []


def test_the_list_filters_by_type_and_paused_and_pages_newest_first(stack, acme, operator):
    ids = [create(stack, acme, name=f"s{n}", paused=n % 2 == 1)["id"] for n in range(5)]
    create(stack, acme, name="records", type="customer_sync", entity_id="c_1")
    globex = create(stack, stack.token("globex"), name="theirs")["id"]

    def listed(query, headers=acme):
        answer = stack.client.simulate_get("/v1/schedules", query_string=query, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json

    assert [s["id"] for s in listed("type=directory_sync")["items"]] == ids[::-1]
    assert [s["id"] for s in listed("type=directory_sync&paused=true")["items"]] == [
        ids[3],
        ids[1],
    ]
    assert all(not s["paused"] for s in listed("paused=false")["items"])
    seen, cursor = [], None
    while True:
        page = listed(f"type=directory_sync&limit=2{f'&cursor={cursor}' if cursor else ''}")
        seen += [s["id"] for s in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == ids[::-1]
    assert {s["tenant"] for s in listed("", operator)["items"]} == {"acme", "globex"}
    assert [s["id"] for s in listed("tenant=globex", operator)["items"]] == [globex]
    forbidden = stack.client.simulate_get(
        "/v1/schedules", query_string="tenant=globex", headers=acme
    )
    assert forbidden.status_code == 403
    for bad in ("limit=501", "limit=0", "paused=maybe", "cursor=nope", "colour=red"):
        answer = stack.client.simulate_get("/v1/schedules", query_string=bad, headers=acme)
        assert answer.status_code == 422, bad


def test_changing_the_cadence_re_points_the_next_runs(stack, acme):
    schedule = create(stack, acme)
    changed = patch(stack, schedule["id"], {"interval_s": 600}, acme)
    assert changed.status_code == 200, changed.text
    now = datetime.now(UTC)
    assert changed.json["cron"] is None and changed.json["interval_s"] == 600
    runs = [parse(t) for t in changed.json["next_runs"]]
    assert runs != [parse(t) for t in schedule["next_runs"]]
    assert now - timedelta(seconds=5) < runs[0] <= now + timedelta(seconds=605)
    assert all(b - a == timedelta(seconds=600) for a, b in pairwise(runs))
    assert all(int(t.timestamp()) % 600 == 0 for t in runs)  # counted from the epoch
    with stack.sessions() as session:
        row = session.get_one(Schedule, uuid.UUID(schedule["id"]))
        assert row.next_occurrence == runs[0]
    back = patch(stack, schedule["id"], {"cron": "30 4 * * *", "timezone": "Asia/Tokyo"}, acme)
    assert back.status_code == 200, back.text
    assert back.json["interval_s"] is None
    assert all(
        parse(t).astimezone(ZoneInfo("Asia/Tokyo")).strftime("%H:%M") == "04:30"
        for t in back.json["next_runs"]
    )
    assert parse(back.json["updated_at"]) > parse(schedule["updated_at"])


def test_a_patch_changes_other_fields_without_moving_the_next_runs(stack, acme):
    schedule = create(stack, acme)
    changed = patch(
        stack, schedule["id"], {"priority": 7, "name": "renamed", "overlap": "allow"}, acme
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json["priority"], changed.json["name"], changed.json["overlap"]) == (
        7,
        "renamed",
        "allow",
    )
    assert changed.json["next_runs"] == schedule["next_runs"]
    [(action, _)] = [a for a in audit_actions(stack, schedule["id"]) if a[0] != "schedule.create"]
    assert action == "schedule.update"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"cron": "not cron"}, "cron"),
        ({"timezone": "Nowhere/Land"}, "timezone"),
        ({"interval_s": 0}, "interval_s"),
        ({"cron": "0 4 * * *", "interval_s": 60}, "cron"),
        ({"cron": None}, "cron"),
        ({"jitter_s": 4000}, "jitter_s"),
        ({"type": "no_such_type"}, "type"),
        ({"payload": {"colour": "red"}}, "payload"),
        ({"name": None}, "name"),
        ({"id": "01900000-0000-7000-8000-000000000000"}, "id"),
        ({"tenant": "globex"}, "tenant"),
    ],
)
def test_a_bad_patch_is_422_naming_the_field_and_changes_nothing(stack, acme, body, named):
    schedule = create(stack, acme)
    response = patch(stack, schedule["id"], body, acme)
    assert response.status_code == 422, response.text
    assert named in response.json["description"]
    after = stack.client.simulate_get(f"/v1/schedules/{schedule['id']}", headers=acme).json
    assert after == schedule


def test_renaming_to_a_name_in_use_is_409(stack, acme):
    create(stack, acme, name="first")
    second = create(stack, acme, name="second")
    response = patch(stack, second["id"], {"name": "first"}, acme)
    assert response.status_code == 409


def test_pausing_empties_next_runs_and_resuming_starts_after_now(stack, acme):
    schedule = create(stack, acme, cron=None, interval_s=3600)
    paused = patch(stack, schedule["id"], {"paused": True}, acme)
    assert paused.status_code == 200 and paused.json["paused"] is True
    assert paused.json["next_runs"] == []
    assert patch(stack, schedule["id"], {"paused": True}, acme).json == paused.json
    # Left pointing at an occurrence long gone, as after a long pause.
    with stack.sessions.begin() as session:
        row = session.get_one(Schedule, uuid.UUID(schedule["id"]))
        row.next_occurrence = row.next_fire_at = datetime(2020, 1, 1, tzinfo=UTC)
    resumed = patch(stack, schedule["id"], {"paused": False}, acme)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json["paused"] is False and resumed.json["paused_reason"] is None
    first = parse(resumed.json["next_runs"][0])
    assert (
        datetime.now(UTC) - timedelta(seconds=5) < first <= datetime.now(UTC) + timedelta(hours=1)
    )
    assert [a for a, _ in audit_actions(stack, schedule["id"])] == [
        "schedule.create",
        "schedule.pause",
        "schedule.resume",
    ]


def test_a_schedule_courier_paused_itself_says_why_until_it_is_resumed(stack, acme):
    schedule = create(stack, acme)
    with stack.sessions.begin() as session:
        row = schedules.get(session, uuid.UUID(schedule["id"]), tenant=None)
        assert schedules.pause(
            session, row, actor="scheduler", paused_reason="job type directory_sync is gone"
        )
    shown = stack.client.simulate_get(f"/v1/schedules/{schedule['id']}", headers=acme).json
    assert shown["paused"] is True and shown["next_runs"] == []
    assert shown["paused_reason"] == "job type directory_sync is gone"
    assert audit_actions(stack, schedule["id"])[-1] == (
        "schedule.pause",
        "job type directory_sync is gone",
    )
    resumed = patch(stack, schedule["id"], {"paused": False}, acme).json
    assert resumed["paused_reason"] is None and len(resumed["next_runs"]) == 5


def test_resuming_a_schedule_whose_type_is_gone_is_422_but_pausing_it_works(stack, acme):
    schedule = create(stack, acme, paused=True)
    with stack.sessions.begin() as session:
        session.get_one(Schedule, uuid.UUID(schedule["id"])).type = "retired_type"
    resumed = patch(stack, schedule["id"], {"paused": False}, acme)
    assert resumed.status_code == 422 and "type" in resumed.json["description"]
    renamed = patch(stack, schedule["id"], {"name": "kept", "paused": True}, acme)
    assert renamed.status_code == 200 and renamed.json["name"] == "kept"
    trigger = post(stack, f"/v1/schedules/{schedule['id']}/trigger", "", acme)
    assert trigger.status_code == 422 and "retired_type" in trigger.json["description"]


def test_a_schedule_created_paused_has_no_next_runs(stack, acme):
    assert create(stack, acme, paused=True)["next_runs"] == []


def test_triggering_creates_a_job_now_published_and_linked_to_the_schedule(stack, acme):
    schedule = create(stack, acme, name="records", type="customer_sync", entity_id="c_7")
    response = post(stack, f"/v1/schedules/{schedule['id']}/trigger", {"reason": "now"}, acme)
    assert response.status_code == 202, response.text
    job = response.json
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert (job["type"], job["entity_id"], job["status"]) == ("customer_sync", "c_7", "queued")
    # Every Job answer carries its version's ETag, the same a read of the job gives.
    read = stack.client.simulate_get(f"/v1/jobs/{job['id']}", headers=acme)
    assert response.headers.get("ETag") == read.headers["ETag"]
    stored = stack.job(job["id"])
    assert str(stored.schedule_id) == schedule["id"]
    assert stored.scheduled_for is not None
    assert abs(stored.scheduled_for - datetime.now(UTC)) < timedelta(seconds=30)
    with stack.sessions() as session:
        [run] = session.scalars(select(ScheduleRun)).all()
        assert (run.outcome, str(run.job_id)) == ("triggered", job["id"])
    after = stack.client.simulate_get(f"/v1/schedules/{schedule['id']}", headers=acme).json
    assert after["last_run"]["job_id"] == job["id"]
    assert after["last_run"]["status"] == "queued"
    assert after["next_runs"] == schedule["next_runs"]  # outside the cadence
    assert stack.message_counts()["sync"] == 1
    assert ("schedule.trigger", "now") in audit_actions(stack, schedule["id"])
    with stack.sessions() as session:
        [entry] = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "schedule.trigger")
        ).all()
        assert str(entry.job_id) == job["id"] and entry.tenant == "acme"


def test_triggering_while_the_entity_has_an_active_job_is_409_with_its_id(stack, acme):
    schedule = create(stack, acme, name="records", type="customer_sync", entity_id="c_7")
    existing = stack.submit(type="customer_sync", entity_id="c_7", headers=acme)
    response = post(stack, f"/v1/schedules/{schedule['id']}/trigger", "", acme)
    assert response.status_code == 409, response.text
    assert response.json["existing_job_id"] == existing
    with stack.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ScheduleRun)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_deleting_answers_204_and_keeps_the_jobs_it_created(stack, acme):
    schedule = create(stack, acme)
    job = post(stack, f"/v1/schedules/{schedule['id']}/trigger", "", acme).json
    deleted = stack.client.simulate_delete(f"/v1/schedules/{schedule['id']}", headers=acme)
    assert deleted.status_code == 204
    gone = stack.client.simulate_get(f"/v1/schedules/{schedule['id']}", headers=acme)
    assert gone.status_code == 404
    assert str(stack.job(job["id"]).schedule_id) == schedule["id"]
    assert (
        stack.client.simulate_delete(f"/v1/schedules/{schedule['id']}", headers=acme).status_code
        == 404
    )


def test_every_change_is_audited_with_who_and_which_schedule(stack, acme):
    schedule = create(stack, acme)
    patch(stack, schedule["id"], {"priority": 1}, acme)
    patch(stack, schedule["id"], {"paused": True}, acme)
    patch(stack, schedule["id"], {"paused": False}, acme)
    post(stack, f"/v1/schedules/{schedule['id']}/trigger", "", acme)
    stack.client.simulate_delete(f"/v1/schedules/{schedule['id']}", headers=acme)
    with stack.sessions() as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == [
        "schedule.create",
        "schedule.update",
        "schedule.pause",
        "schedule.resume",
        "schedule.trigger",
        "schedule.delete",
    ]
    for entry in entries:
        assert entry.actor.startswith("client:acme:") and entry.tenant == "acme"
        assert entry.details["schedule_id"] == schedule["id"]
        assert entry.details["name"] == "nightly-directory"
    assert entries[1].details["changed"] == ["priority"]


def test_the_openapi_document_describes_the_schedule_endpoints(stack):
    document = stack.client.simulate_get("/openapi.json").json
    paths = document["paths"]
    assert set(paths["/v1/schedules"]) == {"get", "post"}
    assert set(paths["/v1/schedules/{schedule_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/v1/schedules/{schedule_id}/trigger"]) == {"post"}
    schemas = document["components"]["schemas"]
    assert set(schemas["ScheduleOut"]["properties"]) >= {"next_runs", "last_run", "paused_reason"}
    assert "directory_sync" in schemas["ScheduleRequest"]["properties"]["type"]["enum"]
    assert "201" in paths["/v1/schedules"]["post"]["responses"]


def test_schedules_work_the_same_on_the_embedded_sqlite_store(sqlite_engine):
    broker = StubBroker()
    broker.declare_queue("sync")
    settings = Settings(database_url=str(sqlite_engine.url), broker_url="memory://")
    client = testing.TestClient(
        app_for(settings, broker=broker, sessions=make_sessionmaker(sqlite_engine))
    )
    with make_sessionmaker(sqlite_engine).begin() as session:
        headers = {
            "Authorization": f"Bearer {tokens.create(session, tenant='acme', role='client')}"
        }
    json_headers = {**headers, "Content-Type": "application/json"}
    made = client.simulate_post("/v1/schedules", body=json.dumps(NIGHTLY), headers=json_headers)
    assert made.status_code == 201, made.text
    path = made.headers["Location"]
    twice = client.simulate_post("/v1/schedules", body=json.dumps(NIGHTLY), headers=json_headers)
    assert twice.status_code == 409
    changed = client.simulate_patch(path, body='{"interval_s": 60}', headers=json_headers)
    assert changed.status_code == 200 and changed.json["next_runs"] != made.json["next_runs"]
    triggered = client.simulate_post(f"{path}/trigger", headers=headers)
    assert triggered.status_code == 202, triggered.text
    assert (
        client.simulate_get(path, headers=headers).json["last_run"]["job_id"]
        == (triggered.json["id"])
    )
    assert broker.queues["sync"].qsize() == 1
    assert client.simulate_delete(path, headers=headers).status_code == 204
    assert client.simulate_get("/v1/schedules", headers=headers).json["items"] == []
