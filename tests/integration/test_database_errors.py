"""Driver errors become store errors at one boundary: a database that refuses writes for now
is unavailable, like one that cannot be reached, and a session it refused is not reused."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from store import errors

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
