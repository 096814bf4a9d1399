"""Bad input gets a clear error in the contract's shape, never a 500, and stores nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from store.models import Job
from tests.support.records import add_dead, add_job

pytestmark = pytest.mark.integration


def post(stack, body, headers, path="/v1/jobs", **kw):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return stack.client.simulate_post(
        path, body=raw, headers={**headers, "Content-Type": "application/json"}, **kw
    )


def job_count(stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def assert_problem(response, status):
    assert response.status_code == status, response.text
    body = response.json
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["description"], str) and body["description"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"type": "customer_sync", "entity_id": "c_1", "colour": "red"}, 422),
        ({"type": "no_such_type"}, 422),
        ({"entity_id": "c_1"}, 422),
        ({"type": "customer_sync", "priority": 10}, 422),
        ({"type": "customer_sync", "priority": -1}, 422),
        ({"type": "customer_sync", "priority": "5"}, 422),
        ({"type": "customer_sync", "max_attempts": 0}, 422),
        ({"type": "customer_sync", "max_attempts": 21}, 422),
        ({"type": "customer_sync", "timeout_s": 0}, 422),
        ({"type": "customer_sync", "run_at": "tomorrow"}, 422),
        ({"type": "customer_sync", "run_at": "2030-01-01T00:00:00"}, 422),  # no offset
        ({"type": "customer_sync", "run_at": 1900000000}, 422),
        ({"type": "customer_sync", "payload": [1, 2]}, 422),
        ({"type": "customer_sync", "entity_id": ""}, 422),
        ([{"type": "customer_sync"}], 422),
        ("{not json", 400),
        ("", 400),
    ],
)
def test_an_invalid_job_request_is_rejected_and_nothing_is_stored(stack, body, status):
    response = post(stack, body, stack.token())
    assert_problem(response, status)
    assert job_count(stack) == 0


def test_a_validation_error_names_the_field(stack):
    response = post(stack, {"type": "customer_sync", "priority": 99}, stack.token())
    assert response.status_code == 422
    assert any(e["field"] == "priority" for e in response.json["errors"])


def test_a_body_over_64_kib_gets_413(stack):
    body = {"type": "customer_sync", "entity_id": "c_1", "payload": {"blob": "x" * 70_000}}
    assert_problem(post(stack, body, stack.token()), 413)
    assert job_count(stack) == 0


def chunked(stack, path, body, headers, *, server_dechunks=True):
    """POST `body` as a WSGI server presents a chunked request: without a Content-Length, and
    (gunicorn) with the stream de-chunked and ended at the body's end."""
    environ = {"CONTENT_LENGTH": ""}
    if server_dechunks:
        environ["wsgi.input_terminated"] = True
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return stack.client.simulate_post(
        path,
        body=raw,
        headers={**headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        extras=environ,
    )


def test_a_chunked_job_request_is_read_whole(stack):
    response = chunked(
        stack, "/v1/jobs", {"type": "customer_sync", "entity_id": "c_9"}, stack.token()
    )
    assert response.status_code == 202, response.text
    assert response.json["entity_id"] == "c_9"


def test_a_chunked_bulk_replay_replays_only_the_job_it_names(stack):
    acme = add_dead(stack.sessions, 2)
    globex = add_dead(stack.sessions, 2, tenant="globex")
    response = chunked(
        stack,
        "/v1/dead-letters/replay",
        {"job_ids": [str(acme[0])]},
        stack.token("ops", "operator"),
    )
    assert response.status_code == 202, response.text
    assert [r["job_id"] for r in response.json["replayed"]] == [str(acme[0])]
    assert all(stack.job(j).replayed_by is None for j in [acme[1], *globex])


def test_any_tenant_a_token_can_name_is_a_tenant_operators_can_name(stack):
    # Tokens take any 1 to 64 characters as their tenant; the operators' filters and
    # schedules must reach every such tenant.
    spaced = "Acme Corp"
    dead = add_dead(stack.sessions, 2, tenant=spaced)
    operator = stack.token("ops", "operator")
    replayed = stack.client.simulate_post(
        "/v1/dead-letters/replay", json={"tenant": spaced}, headers=operator
    )
    assert replayed.status_code == 202, replayed.text
    assert sorted(r["job_id"] for r in replayed.json["replayed"]) == sorted(map(str, dead))
    schedule = {"tenant": spaced, "name": "nightly", "type": "directory_sync", "interval_s": 3600}
    created = stack.client.simulate_post("/v1/schedules", json=schedule, headers=operator)
    assert created.status_code == 201, created.text
    assert created.json["tenant"] == spaced
    too_long = stack.client.simulate_post(
        "/v1/dead-letters/replay", json={"tenant": "t" * 65}, headers=operator
    )
    assert_problem(too_long, 422)


def test_a_chunked_single_replay_keeps_its_payload_override(stack):
    old = add_job(stack.sessions, entity_id="c_dir", type="directory_sync")
    response = chunked(
        stack,
        f"/v1/jobs/{old}/replay",
        {"payload": {"start_page": 3}, "reason": "resume"},
        stack.token("ops", "operator"),
    )
    assert response.status_code == 202, response.text
    assert response.json["payload"] == {"start_page": 3}
    assert stack.job(response.json["id"]).payload == {"start_page": 3}


def test_a_chunked_body_over_64_kib_gets_413(stack):
    body = {"type": "customer_sync", "payload": {"blob": "x" * 70_000}}
    assert_problem(chunked(stack, "/v1/jobs", body, stack.token()), 413)
    assert job_count(stack) == 0


def test_a_chunked_body_the_server_does_not_decode_gets_411(stack):
    # A server that hands the chunk framing through: refused, never read as empty.
    body = {"type": "customer_sync", "entity_id": "c_1"}
    response = chunked(stack, "/v1/jobs", body, stack.token(), server_dechunks=False)
    assert_problem(response, 411)
    assert job_count(stack) == 0


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=ten",
        "status=sleeping",
        "colour=red",
    ],
)
def test_invalid_list_parameters_get_422(stack, query):
    assert_problem(
        stack.client.simulate_get("/v1/jobs", query_string=query, headers=stack.token()), 422
    )


def test_a_bad_cursor_gets_422(stack):
    response = stack.client.simulate_get(
        "/v1/jobs", query_string="cursor=zzz", headers=stack.token()
    )
    assert_problem(response, 422)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}]
)
def test_requests_without_a_live_token_get_401(stack, headers):
    response = stack.client.simulate_get("/v1/jobs", headers=headers)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_malformed_job_id_is_a_404(stack):
    assert_problem(stack.client.simulate_get("/v1/jobs/not-a-uuid", headers=stack.token()), 404)


def test_an_unknown_path_is_a_404_in_the_same_shape(stack):
    assert_problem(stack.client.simulate_get("/v2/nothing", headers=stack.token()), 404)


def test_a_method_a_path_lacks_is_a_405_in_the_same_shape(stack):
    response = stack.client.simulate_delete("/v1/jobs", headers=stack.token())
    assert_problem(response, 405)
    assert response.json["title"] == "Method Not Allowed"


def test_health_and_readiness_need_no_token(stack):
    assert stack.client.simulate_get("/healthz").status_code == 200
    ready = stack.client.simulate_get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json["checks"] == {"database": "ok", "broker": "ok"}


def test_the_request_id_is_returned_and_becomes_the_correlation_id(stack):
    response = post(
        stack,
        {"type": "customer_sync", "entity_id": "c_1"},
        {**stack.token(), "X-Request-ID": "req-42"},
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-42"
    assert response.json["correlation_id"] == "req-42"
    generated = stack.client.simulate_get("/healthz").headers["X-Request-ID"]
    assert len(generated) >= 16


def test_a_batch_validates_each_job_on_its_own(stack):
    body = {
        "jobs": [
            {"type": "customer_sync", "entity_id": "c_1"},
            {"type": "nope"},
            {"type": "customer_sync", "entity_id": "c_1"},
            {"type": "customer_sync", "entity_id": "c_2", "extra": 1},
            {"type": "invoice_sync", "entity_id": "i_1"},
        ]
    }
    response = post(stack, body, stack.token(), path="/v1/jobs/batch")
    assert response.status_code == 207, response.text
    statuses = [item["status"] for item in response.json["items"]]
    assert statuses == [202, 422, 409, 422, 202]
    assert response.json["items"][2]["existing_job_id"] == response.json["items"][0]["job"]["id"]
    assert job_count(stack) == 2


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_must_hold_1_to_1000_jobs(stack, size):
    body = {"jobs": [{"type": "customer_sync", "entity_id": f"c_{i}"} for i in range(size)]}
    response = post(stack, body, stack.token(), path="/v1/jobs/batch")
    assert response.status_code in (413, 422)
    assert job_count(stack) == 0


@pytest.mark.parametrize(
    ("method", "path", "with_token"),
    [
        ("GET", "/v1/jobs", True),
        ("GET", "/v1/jobs", False),  # 401
        ("POST", "/v1/jobs", True),  # 400: no body
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000", True),  # 404
        ("GET", "/v2/nothing", True),  # no such route
        ("GET", "/healthz", False),
        ("GET", "/metrics", False),
        ("GET", "/openapi.json", False),
        ("GET", "/ui/login", False),
        ("GET", "/ui/jobs", False),  # redirect to the login
        ("GET", "/ui/static/courier.css", False),
    ],
)
def test_every_answer_is_marked_not_to_be_stored_or_sniffed(stack, method, path, with_token):
    response = stack.client.simulate_request(
        method, path, headers=stack.token() if with_token else {}
    )
    assert response.headers.get("Cache-Control") == "no-store", (response.status, response.headers)
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
