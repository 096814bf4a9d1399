"""Tenant isolation: another tenant's job is indistinguishable from a missing one."""

from __future__ import annotations

import pytest

from tests.support.times import LATER

pytestmark = pytest.mark.integration


@pytest.fixture
def two_tenants(stack):
    acme, globex = stack.token("acme"), stack.token("globex")
    job_id = stack.submit(type="customer_sync", entity_id="c_1", run_at=LATER, headers=acme)
    return acme, globex, job_id


def test_another_tenant_cannot_read_the_job(stack, two_tenants):
    acme, globex, job_id = two_tenants
    assert stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=acme).status_code == 200
    theirs = stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=globex)
    missing = stack.client.simulate_get(
        "/v1/jobs/01900000-0000-7000-8000-000000000000", headers=globex
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json == missing.json


@pytest.mark.parametrize("suffix", ["/attempts"])
def test_another_tenant_cannot_read_attempts(stack, two_tenants, suffix):
    _, globex, job_id = two_tenants
    assert (
        stack.client.simulate_get(f"/v1/jobs/{job_id}{suffix}", headers=globex).status_code == 404
    )


def test_another_tenant_cannot_cancel_or_replay(stack, two_tenants):
    acme, globex, job_id = two_tenants
    assert (
        stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=globex).status_code == 404
    )
    assert (
        stack.client.simulate_post(f"/v1/jobs/{job_id}/replay", headers=globex).status_code == 404
    )
    assert stack.job(job_id).status == "queued"
    assert (
        stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=acme).json["status"]
        == "cancelled"
    )


def test_listing_shows_only_the_callers_jobs(stack, two_tenants):
    acme, globex, job_id = two_tenants
    stack.submit(type="customer_sync", entity_id="c_1", run_at=LATER, headers=globex)
    assert [j["id"] for j in stack.client.simulate_get("/v1/jobs", headers=acme).json["items"]] == [
        job_id
    ]
    theirs = stack.client.simulate_get("/v1/jobs", headers=globex).json["items"]
    assert len(theirs) == 1 and theirs[0]["tenant"] == "globex"
    forbidden = stack.client.simulate_get("/v1/jobs", query_string="tenant=acme", headers=globex)
    assert forbidden.status_code == 403


def test_the_same_entity_in_two_tenants_is_not_a_duplicate(stack, two_tenants):
    _, globex, _ = two_tenants
    stack.submit(type="customer_sync", entity_id="c_1", headers=globex)  # 202, not a duplicate


def test_an_operator_sees_every_tenant_and_may_filter_by_one(stack, two_tenants):
    _, globex, job_id = two_tenants
    stack.submit(type="invoice_sync", entity_id="i_1", run_at=LATER, headers=globex)
    operator = stack.token("ops", role="operator")
    assert stack.client.simulate_get(f"/v1/jobs/{job_id}", headers=operator).status_code == 200
    everything = stack.client.simulate_get("/v1/jobs", headers=operator).json["items"]
    assert {j["tenant"] for j in everything} == {"acme", "globex"}
    only = stack.client.simulate_get("/v1/jobs", query_string="tenant=acme", headers=operator).json[
        "items"
    ]
    assert [j["id"] for j in only] == [job_id]


def test_a_client_may_not_use_the_dead_letter_endpoints(stack, two_tenants):
    acme, _, _ = two_tenants
    assert stack.client.simulate_get("/v1/dead-letters", headers=acme).status_code == 403
    assert (
        stack.client.simulate_post("/v1/dead-letters/replay", json={}, headers=acme).status_code
        == 403
    )


def test_a_revoked_token_stops_working(stack):
    from store import tokens

    with stack.sessions.begin() as session:
        secret = tokens.create(session, tenant="acme")
    headers = {"Authorization": f"Bearer {secret}"}
    assert stack.client.simulate_get("/v1/jobs", headers=headers).status_code == 200
    with stack.sessions.begin() as session:
        assert tokens.revoke(session, secret)
    assert stack.client.simulate_get("/v1/jobs", headers=headers).status_code == 401
