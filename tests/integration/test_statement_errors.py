"""A statement the database refuses is logged and answered without the values it carried:
payloads hold customer data, which belongs in the job store, not in logs or error answers."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from store import errors
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

SECRET = "iban-DE89370400440532013000"

log = logging.getLogger(__name__)


def test_a_failing_statements_error_and_its_logged_traceback_hold_no_parameters(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ProgrammingError) as raised, engine.connect() as conn:
        conn.execute(text("INSERT INTO no_such_table VALUES (:payload)"), {"payload": SECRET})
    log.exception("statement failed", exc_info=raised.value)

    assert "no_such_table" in str(raised.value)  # the statement is still named
    assert SECRET not in str(raised.value)
    assert SECRET not in caplog.text


def test_a_value_the_database_refuses_is_reported_without_the_value(engine: Engine) -> None:
    with pytest.raises(errors.InvalidValue) as raised, engine.connect() as conn:
        conn.execute(text("SELECT CAST(:payload AS integer)"), {"payload": SECRET})

    assert SECRET not in str(raised.value)
    assert "InvalidTextRepresentation" in str(raised.value)  # still says what went wrong


def test_a_job_the_database_refuses_leaves_its_payload_out_of_the_answer_and_the_log(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # A constraint the API knows nothing of: PostgreSQL refuses the row and, left to itself,
    # its message quotes the failing row, payload included.
    with stack.engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE jobs ADD CONSTRAINT no_iban CHECK (payload->>'iban' IS NULL)")
        )
    job = {"type": "bug_for_test", "entity_id": "c_1", "payload": {"iban": SECRET}}

    status, body = stack.post("/v1/jobs", job, stack.token())

    assert status == 500, body
    assert "no_iban" in caplog.text  # the failure is logged, naming the constraint
    assert SECRET not in body
    assert SECRET not in caplog.text
