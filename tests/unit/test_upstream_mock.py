from __future__ import annotations

import time
from collections.abc import Iterator

import falcon.testing
import httpx
import pytest

from actors.upstream import UpstreamClient
from courier import upstream_mock
from middleware import errors
from tests.support.upstream import ScriptableUpstream


@pytest.fixture(scope="module")
def running() -> Iterator[ScriptableUpstream]:
    """One mock on a free port for the module."""
    upstream = ScriptableUpstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture
def upstream(running: ScriptableUpstream) -> ScriptableUpstream:
    """The mock with no scripts and no calls."""
    running.reset()
    return running


@pytest.fixture
def http(upstream: ScriptableUpstream) -> Iterator[httpx.Client]:
    """A plain HTTP client pointed at the mock."""
    with httpx.Client(base_url=upstream.url, timeout=5) as client:
        yield client


def test_the_mock_listens_on_the_free_port_it_was_given(upstream):
    assert upstream.url.startswith("http://127.0.0.1:")
    assert not upstream.url.endswith(":0")
    assert upstream.crm_url == f"{upstream.url}/crm"
    assert upstream.billing_url == f"{upstream.url}/billing"


def test_a_customer_is_made_up_deterministically_from_its_id(http):
    first = http.get("/crm/customers/c_1")
    assert first.status_code == 200
    assert first.json() == http.get("/crm/customers/c_1").json()
    assert first.json()["id"] == "c_1"
    assert {"name", "email"} <= first.json().keys()
    assert http.get("/crm/customers/c_2").json()["email"] != first.json()["email"]


def test_an_invoice_has_an_amount_in_euros(http):
    invoice = http.get("/crm/invoices/i_1").json()
    assert invoice["id"] == "i_1"
    assert isinstance(invoice["amount_cents"], int)
    assert invoice["currency"] == "EUR"


@pytest.mark.parametrize("collection", ["customers", "invoices"])
def test_ids_starting_with_missing_are_not_found(http, collection):
    response = http.get(f"/crm/{collection}/missing_7")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


@pytest.mark.parametrize("collection", ["customers", "invoices"])
def test_billing_accepts_every_put_with_200(http, collection):
    response = http.put(f"/billing/{collection}/c_1", json={"id": "c_1"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_the_directory_pages_through_every_customer_once(http):
    pages, page = [], 1
    while page is not None:
        listing = http.get("/crm/customers", params={"page": page}).json()
        pages.append(listing)
        page = listing["next_page"]
    assert [len(p["items"]) for p in pages] == [10, 10, 5]
    assert {p["total"] for p in pages} == {25}
    ids = [item["id"] for p in pages for item in p["items"]]
    assert len(set(ids)) == 25


def test_the_directory_starts_at_page_one(http):
    assert http.get("/crm/customers").json() == http.get("/crm/customers?page=1").json()


def test_the_directory_size_and_page_size_are_configurable():
    client = falcon.testing.TestClient(upstream_mock.create_app(page_size=3, directory_size=7))
    last = client.simulate_get("/crm/customers", params={"page": 3}).json
    assert len(last["items"]) == 1
    assert last["next_page"] is None
    assert last["total"] == 7


def test_scripted_answers_are_served_in_order_then_the_demo_resumes(upstream, http):
    upstream.script(
        "GET",
        "/crm/customers/c_1",
        {"status": 503, "body": {"error": "down"}},
        {"status": 429, "headers": {"Retry-After": "1"}},
    )
    first, second, third = (http.get("/crm/customers/c_1") for _ in range(3))
    assert (first.status_code, first.json()) == (503, {"error": "down"})
    assert (second.status_code, second.headers["Retry-After"]) == (429, "1")
    assert (third.status_code, third.json()["id"]) == (200, "c_1")


def test_a_script_only_answers_its_own_method_and_path(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 500})
    assert http.get("/crm/customers/c_2").status_code == 200
    assert http.put("/billing/customers/c_1", json={}).status_code == 200
    assert http.get("/crm/customers/c_1").status_code == 500


def test_repeat_last_keeps_serving_the_final_answer(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 502}, {"status": 503}, repeat_last=True)
    assert [http.get("/crm/customers/c_1").status_code for _ in range(4)] == [502, 503, 503, 503]


def test_a_path_ending_in_a_star_matches_its_prefix(upstream, http):
    upstream.script("PUT", "/billing/customers/*", {"status": 409}, repeat_last=True)
    assert http.put("/billing/customers/a", json={}).status_code == 409
    assert http.put("/billing/customers/b", json={}).status_code == 409
    assert http.put("/billing/invoices/a", json={}).status_code == 200


def test_an_exact_script_wins_over_a_prefix_until_it_runs_out(upstream, http):
    upstream.script("GET", "/crm/*", {"status": 500}, repeat_last=True)
    upstream.script("GET", "/crm/customers/c_1", {"status": 404})
    assert http.get("/crm/customers/c_1").status_code == 404
    assert http.get("/crm/customers/c_1").status_code == 500


def test_scripting_a_path_again_replaces_its_queue(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 500}, {"status": 500})
    upstream.script("GET", "/crm/customers/c_1", {"status": 410})
    assert http.get("/crm/customers/c_1").status_code == 410
    assert http.get("/crm/customers/c_1").status_code == 200


def test_a_string_body_is_sent_verbatim(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 200, "body": "<html>oops"})
    assert http.get("/crm/customers/c_1").text == "<html>oops"


def test_a_scripted_delay_holds_the_answer_back(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 200, "delay_s": 0.3})
    started = time.monotonic()
    assert http.get("/crm/customers/c_1").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_a_delay_longer_than_the_client_timeout_times_the_client_out(upstream):
    upstream.script("GET", "/crm/customers/c_1", {"delay_s": 0.5})
    client = UpstreamClient(upstream.crm_url, name="CRM", timeout_s=0.1, max_backoff_ms=1000)
    try:
        with pytest.raises(errors.UpstreamUnavailable, match="timeout calling CRM"):
            client.get_json("/customers/c_1", correlation_id="corr")
    finally:
        client.close()


def test_the_client_maps_scripted_answers_from_the_mock(upstream):
    upstream.script("GET", "/crm/customers/c_1", {"status": 429, "headers": {"Retry-After": "2"}})
    client = UpstreamClient(upstream.crm_url, name="CRM", timeout_s=5, max_backoff_ms=60_000)
    try:
        with pytest.raises(errors.UpstreamRateLimited) as caught:
            client.get_json("/customers/c_1", correlation_id="corr")
        assert caught.value.retry_after_ms == 2000
        assert client.get_json("/customers/c_1", correlation_id="corr")["id"] == "c_1"
    finally:
        client.close()


def test_calls_are_recorded_in_order_with_their_headers_query_and_body(upstream, http):
    http.get("/crm/customers?page=2", headers={"X-Correlation-ID": "corr-1"})
    http.put(
        "/billing/customers/c_1",
        json={"id": "c_1"},
        headers={"X-Correlation-ID": "corr-1", "Idempotency-Key": "job-1", "X-Other": "no"},
    )
    first, second = upstream.calls()
    assert (first["method"], first["path"], first["query"]) == ("GET", "/crm/customers", "page=2")
    assert first["headers"] == {"X-Correlation-ID": "corr-1"}
    assert first["body"] is None
    assert (second["method"], second["path"]) == ("PUT", "/billing/customers/c_1")
    assert second["headers"] == {"X-Correlation-ID": "corr-1", "Idempotency-Key": "job-1"}
    assert second["body"] == {"id": "c_1"}
    assert first["at"] <= second["at"]


def test_each_call_records_the_status_it_was_answered_with(upstream, http):
    upstream.script("GET", "/crm/customers/c_*", {"status": 503}, repeat_last=True)
    http.get("/crm/customers/c_1")
    upstream.script("GET", "/crm/customers/c_*")  # back to the demo's answers
    http.get("/crm/customers/c_1")
    http.get("/crm/customers/missing_1")
    assert [c["status"] for c in upstream.calls()] == [503, 200, 404]


def test_calls_can_be_filtered_by_exact_path_and_by_method(upstream, http):
    http.get("/crm/customers/c_1")
    http.get("/crm/customers/c_10")
    http.put("/billing/customers/c_1", json={})
    assert [c["path"] for c in upstream.calls(path="/crm/customers/c_1")] == ["/crm/customers/c_1"]
    assert [c["method"] for c in upstream.calls(method="put")] == ["PUT"]
    assert upstream.calls(path="/billing/customers/c_1", method="GET") == []


def test_control_calls_are_not_recorded(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 500})
    upstream.calls()
    assert upstream.calls() == []


def test_reset_forgets_scripts_and_calls(upstream, http):
    upstream.script("GET", "/crm/customers/c_1", {"status": 500}, repeat_last=True)
    http.get("/crm/customers/c_1")
    upstream.reset()
    assert upstream.calls() == []
    assert http.get("/crm/customers/c_1").status_code == 200


def test_a_second_helper_can_attach_to_a_running_mock(upstream, http):
    attached = ScriptableUpstream.attach(upstream.url + "/")
    try:
        attached.script("GET", "/crm/customers/c_1", {"status": 403})
        assert http.get("/crm/customers/c_1").status_code == 403
        assert len(upstream.calls(path="/crm/customers/c_1")) == 1
    finally:
        attached.stop()
    assert http.get("/crm/customers/c_2").status_code == 200


def test_the_in_process_server_exposes_its_recorder():
    server = upstream_mock.start(port=0)
    try:
        with httpx.Client(base_url=server.url) as client:
            client.get("/crm/invoices/i_1", headers={"X-Correlation-ID": "corr"})
        assert server.port != 0
        assert [c["path"] for c in server.state.calls] == ["/crm/invoices/i_1"]
    finally:
        server.stop()


def test_a_script_without_method_or_path_is_a_bad_request(http):
    assert http.post("/_mock/script", json={"responses": []}).status_code == 400
