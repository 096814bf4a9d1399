"""Driver errors become store errors at one boundary: a database that refuses writes for now
is unavailable, like one that cannot be reached, and a session it refused is not reused."""

from __future__ import annotations

import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import text

from delivery import relay
from delivery.outbox import Outbox
from store import errors
from store.types import utcnow
from tests.support import services
from tests.support.records import add_queued

pytestmark = pytest.mark.integration


def test_a_write_refused_as_read_only_is_unavailable_and_its_session_is_dropped(engine):
    with engine.connect() as db:
        # As on a primary demoted to a standby: the session itself stays read-only.
        db.execute(text("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"))
        db.commit()  # the transactions after this one are read-only
        with pytest.raises(errors.DatabaseUnavailable, match="read-only"):
            db.execute(text("UPDATE jobs SET attempts = attempts"))
        assert db.invalidated
    with engine.begin() as db:  # a new session, which takes writes
        db.execute(text("UPDATE jobs SET attempts = attempts"))


def test_a_relay_whose_marks_would_be_refused_publishes_nothing(engine, sessions):
    """A relay that published what it cannot mark would publish it again every round."""
    add_queued(sessions, type="customer_sync", entity_id="c_1", run_at=utcnow())  # due now
    broker = StubBroker(middleware=[])
    broker.declare_queue("sync")
    with engine.begin() as db:
        name = db.scalar(text("SELECT current_database()"))
        db.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    engine.dispose()  # new sessions, which are read-only
    try:
        for _ in range(3):
            with pytest.raises(errors.DatabaseUnavailable, match="read-only"):
                relay.publish_due(engine, Outbox(broker, engine), limit=10)
        assert broker.queues["sync"].qsize() == 0
    finally:
        with services.admin() as admin:  # a session of another database, not read-only
            admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        engine.dispose()
    assert relay.publish_due(engine, Outbox(broker, engine), limit=10) == 1
