"""Chunked request bodies under the real `courier api` (gunicorn de-chunks them)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from store.db import make_engine, make_sessionmaker
from tests.support.records import add_dead, add_job

pytestmark = pytest.mark.e2e


def in_chunks(body: object, size: int = 7) -> Iterator[bytes]:
    """The JSON body as an iterator: httpx sends it with Transfer-Encoding: chunked."""
    raw = json.dumps(body).encode()
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def post_chunked(http, path, body, headers, size=7):
    return http.post(
        path,
        content=in_chunks(body, size),
        headers={**headers, "Content-Type": "application/json"},
    )


def test_chunked_bodies_are_read_whole_under_gunicorn(deployment, database_url):
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    dead = add_dead(sessions, 3)
    directory = add_job(sessions, entity_id="c_dir", type="directory_sync")
    engine.dispose()
    deployment.start_api()
    client, operator = deployment.token(), deployment.token("ops", "operator")
    with deployment.http() as http:
        submitted = post_chunked(
            http, "/v1/jobs", {"type": "customer_sync", "entity_id": "c_9"}, client
        )
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["entity_id"] == "c_9"

        bulk = post_chunked(http, "/v1/dead-letters/replay", {"job_ids": [str(dead[0])]}, operator)
        assert bulk.status_code == 202, bulk.text
        assert [r["job_id"] for r in bulk.json()["replayed"]] == [str(dead[0])]

        single = post_chunked(
            http, f"/v1/jobs/{directory}/replay", {"payload": {"start_page": 3}}, operator
        )
        assert single.status_code == 202, single.text
        assert single.json()["payload"] == {"start_page": 3}
    assert deployment.count("replay_of IS NOT NULL") == 2


def test_a_chunked_body_over_64_kib_gets_413_under_gunicorn(deployment):
    deployment.start_api()
    body = {"type": "customer_sync", "payload": {"blob": "x" * 70_000}}
    with deployment.http() as http:
        response = post_chunked(http, "/v1/jobs", body, deployment.token(), size=8192)
    assert response.status_code == 413, response.text
    assert response.json()["title"] == "Payload Too Large"
    assert deployment.count() == 0
