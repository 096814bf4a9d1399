"""Turns: one process at a time, with no transaction open while it has the turn."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import text

from store import turns
from store.db import make_engine
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

IDLE_LIMITS = ("idle_session_timeout", "idle_in_transaction_session_timeout")


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


@pytest.mark.parametrize("inside_a_transaction", [False, True], ids=["between", "inside"])
def test_a_turn_held_by_a_frozen_process_passes_on_after_its_idle_limit(
    engine, settings, monkeypatch, inside_a_transaction
):
    monkeypatch.setattr(turns, "IDLE_LIMIT_S", 0.5)
    other_process = make_engine(settings.database_url)
    frozen = turns.turn(engine, "relay")
    try:
        held = frozen.__enter__()  # and then nothing more, as a process stopped by SIGSTOP
        assert held is not None
        if inside_a_transaction:  # as the relay reading its due jobs
            held.begin()
            held.execute(text("SELECT 1"))
        with turns.turn(other_process, "relay") as theirs:
            assert theirs is None
        wait_for(lambda: _has_turn(other_process), timeout=10, what="the turn to pass on")
    finally:
        other_process.dispose()
        with contextlib.suppress(Exception):
            frozen.__exit__(None, None, None)


def test_a_turn_given_back_leaves_its_session_without_the_idle_limit(settings):
    one_session = make_engine(settings.database_url, pool_size=1)
    try:
        with turns.turn(one_session, "relay") as mine:
            backend = mine.scalar(text("SELECT pg_backend_pid()"))
            for limit in IDLE_LIMITS:
                assert mine.scalar(text(f"SHOW {limit}")) == "10s"
        with one_session.connect() as again:
            assert again.scalar(text("SELECT pg_backend_pid()")) == backend
            for limit in IDLE_LIMITS:
                assert again.scalar(text(f"SHOW {limit}")) == "0"
    finally:
        one_session.dispose()


def _has_turn(engine) -> bool:
    with turns.turn(engine, "relay") as db:
        return db is not None


def test_every_turn_is_its_own_on_sqlite(sqlite_engine):
    with turns.turn(sqlite_engine, "relay") as first, turns.turn(sqlite_engine, "relay") as again:
        assert first is not None and again is not None
