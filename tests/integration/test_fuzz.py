"""The API fuzzed from its own OpenAPI document: no 5xx, and every answer matches the schema."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from tests.support.times import LATER

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25
# No 5xx, answers as documented, invalid input refused. (Schemathesis's "schema-valid data is
# accepted" check is left out: a valid body can rightly meet 409s and idempotency 422s.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


def test_the_api_answers_generated_requests_within_its_schema(stack):
    operator = stack.token("ops", "operator")
    for i in range(3):  # some real rows, so generated requests also meet existing jobs
        stack.client.simulate_post(
            "/v1/jobs",
            json={"type": "customer_sync", "entity_id": f"c_{i}", "run_at": LATER},
            headers=operator,
        )
    # NUL characters are refused with 422 (the database cannot store them); the document
    # does not spell that out for free-form payloads, so none are generated.
    # A body past 64 KiB is refused with 413, which is as much a rejection as a 4xx.
    config = schemathesis.Config.from_dict(
        {
            "generation": {"allow-x00": False},
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422]
                }
            },
        }
    )
    schema = schemathesis.openapi.from_wsgi("/openapi.json", stack.client.app, config=config)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for operation, mode in itertools.product(operations, GenerationMode):
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(headers=_credentials(case, operator), checks=CHECKS)

        fuzz()


def _credentials(case, operator: dict[str, str]) -> dict[str, str]:
    """A real operator token, except where the case was generated to break its headers: a
    real token would undo that mutation (a missing Authorization header) and turn an
    expected 401 into a 200."""
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if headers is not None and headers.mode is GenerationMode.NEGATIVE:
        return {}
    return operator


def _has_inputs(operation) -> bool:
    definition = operation.definition.raw
    return "requestBody" in definition or any(
        p["in"] == "query" for p in definition.get("parameters", [])
    )
