from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from actors.upstream import UpstreamClient, segment
from middleware import errors

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def make_client() -> Iterator[Callable[..., UpstreamClient]]:
    """Build clients over a fake transport; every one is closed after the test."""
    clients: list[UpstreamClient] = []

    def make(handler: Handler, *, max_backoff_ms: int = 60_000) -> UpstreamClient:
        client = UpstreamClient(
            "http://upstream.test/crm/",
            name="CRM",
            timeout_s=1,
            max_backoff_ms=max_backoff_ms,
            transport=httpx.MockTransport(handler),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def answer(status: int, body: str = "", headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx.Response(status, text=body, headers=headers)


def raising(exc_type: type[httpx.RequestError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


def recording(seen: list[httpx.Request], status: int = 200, body: object = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"id": "c_1"})

    return handler


def test_a_2xx_get_returns_the_decoded_json(make_client):
    client = make_client(answer(200, '{"id": "c_1", "name": "Ada"}'))
    assert client.get_json("/customers/c_1", correlation_id="corr") == {"id": "c_1", "name": "Ada"}


@pytest.mark.parametrize("status", [200, 201, 204])
def test_a_2xx_put_returns_its_status(make_client, status):
    client = make_client(answer(status))
    assert client.put_json("/customers/c_1", {}, correlation_id="c", idempotency_key="k") == status


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, errors.UpstreamUnavailable),
        (502, errors.UpstreamUnavailable),
        (503, errors.UpstreamUnavailable),
        (504, errors.UpstreamUnavailable),
        (501, errors.UpstreamUnavailable),
        (505, errors.UpstreamUnavailable),
        (429, errors.UpstreamRateLimited),
        (404, errors.UpstreamNotFound),
        (410, errors.UpstreamNotFound),
        (401, errors.UpstreamForbidden),
        (403, errors.UpstreamForbidden),
        (400, errors.UpstreamRejected),
        (409, errors.UpstreamRejected),
        (422, errors.UpstreamRejected),
        (405, errors.UpstreamRejected),
        (418, errors.UpstreamRejected),
        (301, errors.UpstreamRejected),
        (304, errors.UpstreamRejected),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_each_non_2xx_status_maps_to_its_error(make_client, method, status, error):
    client = make_client(answer(status, '{"why": "no"}'))
    with pytest.raises(error) as caught:
        if method == "GET":
            client.get_json("/customers/c_1", correlation_id="corr")
        else:
            client.put_json("/customers/c_1", {}, correlation_id="corr", idempotency_key="k")
    assert type(caught.value) is error
    assert str(caught.value) == f'{status} from CRM {method} /customers/c_1: {{"why": "no"}}'


def test_an_error_message_carries_at_most_200_characters_of_the_body(make_client):
    client = make_client(answer(500, "x" * 5000))
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        client.get_json("/customers/c_1", correlation_id="corr")
    assert str(caught.value).startswith("500 from CRM GET /customers/c_1: xxx")
    assert len(str(caught.value)) < len("500 from CRM GET /customers/c_1: ") + 201


def test_an_error_without_a_body_says_only_the_status_and_the_call(make_client):
    client = make_client(answer(503))
    with pytest.raises(errors.UpstreamUnavailable, match=r"^503 from CRM GET /customers/c_1$"):
        client.get_json("/customers/c_1", correlation_id="corr")


def test_redirects_are_not_followed(make_client):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://elsewhere.test/"})

    with pytest.raises(errors.UpstreamRejected, match="302 from CRM"):
        make_client(handler).get_json("/customers/c_1", correlation_id="corr")
    assert len(seen) == 1


def rate_limited_after(make_client, retry_after: str | None, max_backoff_ms: int = 60_000):
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    client = make_client(answer(429, headers=headers), max_backoff_ms=max_backoff_ms)
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        client.get_json("/customers/c_1", correlation_id="corr")
    return caught.value.retry_after_ms


def test_retry_after_in_seconds_becomes_milliseconds(make_client):
    assert rate_limited_after(make_client, "3") == 3000


def test_retry_after_is_capped_at_the_maximum_backoff(make_client):
    assert rate_limited_after(make_client, "3600", max_backoff_ms=5000) == 5000


def test_retry_after_as_an_http_date_counts_from_now(make_client):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28_000 <= rate_limited_after(make_client, when) <= 30_000


def test_retry_after_as_an_http_date_is_capped_too(make_client):
    when = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    assert rate_limited_after(make_client, when, max_backoff_ms=5000) == 5000


def test_retry_after_in_the_past_means_no_wait(make_client):
    assert rate_limited_after(make_client, "Wed, 21 Oct 2015 07:28:00 GMT") == 0


@pytest.mark.parametrize("value", [None, "", "soon", "-1", "inf", "nan", "1e3"])
def test_a_missing_or_unparseable_retry_after_is_none(make_client, value):
    assert rate_limited_after(make_client, value) is None


@pytest.mark.parametrize(
    ("exc_type", "message"),
    [
        (httpx.ConnectTimeout, "timeout calling CRM GET /customers/c_1"),
        (httpx.ReadTimeout, "timeout calling CRM GET /customers/c_1"),
        (httpx.ConnectError, "cannot reach CRM GET /customers/c_1: ConnectError"),
        (httpx.RemoteProtocolError, "cannot reach CRM GET /customers/c_1: RemoteProtocolError"),
    ],
)
def test_transport_failures_are_unavailable_and_hide_the_driver_error(
    make_client, exc_type, message
):
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        make_client(raising(exc_type)).get_json("/customers/c_1", correlation_id="corr")
    assert str(caught.value) == message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_put_that_times_out_is_unavailable(make_client):
    client = make_client(raising(httpx.WriteTimeout))
    with pytest.raises(errors.UpstreamUnavailable, match="timeout calling CRM PUT"):
        client.put_json("/customers/c_1", {}, correlation_id="corr", idempotency_key="k")


@pytest.mark.parametrize("body", ["<html>oops</html>", "", '{"id": '])
def test_a_2xx_get_with_a_body_that_is_not_json_is_unavailable(make_client, body):
    client = make_client(answer(200, body))
    with pytest.raises(errors.UpstreamUnavailable, match=r"^malformed response from CRM GET"):
        client.get_json("/customers/c_1", correlation_id="corr")


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "null", "3"])
def test_a_record_that_is_not_a_json_object_is_unavailable_and_names_its_upstream(
    make_client, body
):
    client = make_client(answer(200, body))
    with pytest.raises(errors.UpstreamUnavailable, match=r"not a JSON object$") as raised:
        client.get_object("/customers/c_1", correlation_id="corr")
    assert raised.value.upstream == "crm"
    assert make_client(answer(200, '{"id": "c_1"}')).get_object(
        "/customers/c_1", correlation_id="corr"
    ) == {"id": "c_1"}


def test_a_get_sends_the_correlation_id_and_no_idempotency_key(make_client):
    seen: list[httpx.Request] = []
    make_client(recording(seen)).get_json("/customers/c_1", correlation_id="corr-1")
    assert seen[0].method == "GET"
    assert seen[0].headers["X-Correlation-ID"] == "corr-1"
    assert "Idempotency-Key" not in seen[0].headers


def test_a_put_sends_the_correlation_id_the_idempotency_key_and_a_json_body(make_client):
    seen: list[httpx.Request] = []
    make_client(recording(seen)).put_json(
        "/customers/c_1", {"id": "c_1"}, correlation_id="corr-2", idempotency_key="job-9"
    )
    assert seen[0].method == "PUT"
    assert seen[0].headers["X-Correlation-ID"] == "corr-2"
    assert seen[0].headers["Idempotency-Key"] == "job-9"
    assert json.loads(seen[0].content) == {"id": "c_1"}


def test_paths_are_relative_to_the_base_url_and_keep_their_query(make_client):
    seen: list[httpx.Request] = []
    make_client(recording(seen)).get_json("/customers?page=2", correlation_id="corr")
    assert seen[0].url.raw_path == b"/crm/customers?page=2"


@pytest.mark.parametrize(
    ("entity_id", "quoted"),
    [
        ("c_1", "c_1"),
        ("a/b", "a%2Fb"),
        ("a b", "a%20b"),
        ("a?b#c", "a%3Fb%23c"),
        ("50%", "50%25"),
        ("ü", "%C3%BC"),
        (".", "%2E"),
        ("..", "%2E%2E"),
    ],
)
def test_an_entity_id_stays_inside_its_path_segment(make_client, entity_id, quoted):
    seen: list[httpx.Request] = []
    assert segment(entity_id) == quoted
    make_client(recording(seen)).get_json(f"/customers/{segment(entity_id)}", correlation_id="corr")
    assert seen[0].url.raw_path == f"/crm/customers/{quoted}".encode()


@pytest.mark.parametrize("path", ["/customers/..", "/customers/../../admin", "/./customers/."])
def test_dot_segments_cannot_climb_above_the_base_url(make_client, path):
    seen: list[httpx.Request] = []
    make_client(recording(seen)).get_json(path, correlation_id="corr")
    assert seen[0].url.raw_path.startswith(b"/crm/")
    assert b"/../" not in seen[0].url.raw_path + b"/"
    assert b"/./" not in seen[0].url.raw_path + b"/"


@pytest.mark.parametrize(
    "handler",
    [
        answer(503),
        answer(200, "not json"),
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused", request=request)),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
    ],
    ids=["5xx", "malformed", "unreachable", "timeout"],
)
def test_an_unavailable_upstream_is_named_for_its_circuit(make_client, handler):
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        make_client(handler).get_json("/customers/c_1", correlation_id="x")

    assert caught.value.upstream == "crm"


def test_a_rate_limit_names_its_upstream_with_the_delay_asked_for(make_client):
    client = make_client(answer(429, headers={"Retry-After": "7"}))

    with pytest.raises(errors.UpstreamRateLimited) as caught:
        client.put_json("/customers/c_1", {}, correlation_id="x", idempotency_key="k")

    assert (caught.value.upstream, caught.value.retry_after_ms) == ("crm", 7000)


def test_other_errors_name_no_upstream(make_client):
    with pytest.raises(errors.UpstreamNotFound) as caught:
        make_client(answer(404)).get_json("/customers/c_1", correlation_id="x")

    assert getattr(caught.value, "upstream", None) is None
