"""Turns: one process at a time, with no transaction open while it has the turn."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from store import turns
from store.db import make_engine

pytestmark = pytest.mark.integration


def test_one_process_has_the_turn_outside_any_transaction_until_it_ends(engine, settings):
    other_process = make_engine(settings.database_url)
    try:
        with turns.turn(engine, "relay") as mine:
            assert mine is not None
            backend = mine.scalar(text("SELECT pg_backend_pid()"))
            mine.commit()
            with turns.turn(other_process, "relay") as theirs:
                assert theirs is None
                with other_process.connect() as look:
                    state = look.scalar(
                        text("SELECT state FROM pg_stat_activity WHERE pid = :pid"),
                        {"pid": backend},
                    )
                assert state == "idle"
        with turns.turn(other_process, "relay") as theirs:
            assert theirs is not None
    finally:
        other_process.dispose()


def test_every_turn_is_its_own_on_sqlite(sqlite_engine):
    with turns.turn(sqlite_engine, "relay") as first, turns.turn(sqlite_engine, "relay") as again:
        assert first is not None and again is not None
