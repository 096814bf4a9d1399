"""A job's own reads and writes while the database does not answer (an outage, a failover):
a lost progress report costs the attempt nothing, and a checkpoint waits for an answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine

from middleware.current_job import RunningJob
from middleware.errors import LeaseLost
from store import checkpoints
from store.db import make_engine
from store.errors import DatabaseUnavailable
from store.transitions import Claim
from tests.support.processes import free_port


@pytest.fixture
def job() -> Iterator[RunningJob]:
    # Nothing listens on the port: every connection is refused, as during a failover.
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/courier")
    claim = Claim(
        *(uuid.uuid4(), 1, 4, "acme", "directory_sync", None, {}, "corr-1", 60),
        datetime.now(UTC),
    )
    yield RunningJob(claim, engine=engine, progress_interval_s=0)
    engine.dispose()


def test_a_progress_report_the_database_does_not_take_is_kept_for_the_finish(job, caplog):
    job.report_progress(1, 10, "page 1")
    job.report_progress(2, 10, "page 2")
    assert "progress not written" in caplog.text
    # The latest report is still there to be written: the finish tries it (and says so).
    with pytest.raises(DatabaseUnavailable):
        job.flush_progress()


def test_a_checkpoint_waits_for_the_database_to_answer_whether_the_attempt_still_owns_the_job(
    job, caplog, monkeypatch
):
    # Two connections are refused for real; the third finds the database back, with the job
    # reaped meanwhile: the attempt must stop before it writes anything more.
    engine = _AnswersAfterTwoRefusals(job._engine)
    monkeypatch.setattr(job, "_engine", engine)
    monkeypatch.setattr(
        checkpoints,
        "standing",
        lambda *_: checkpoints.Standing(owned=False, cancel_requested=False),
    )
    with pytest.raises(LeaseLost):
        job.checkpoint()
    assert len(engine.tries) == 3
    assert caplog.text.count("checkpoint waits for the database") == 2
    first, second, third = engine.tries
    assert third - second > second - first > 0.2  # backing off between questions


class _AnswersAfterTwoRefusals:
    """The job's engine for two connections (refused), then one that connects (SQLite)."""

    def __init__(self, refused) -> None:
        self._refused, self.tries = refused, []
        self._answering = create_engine("sqlite://")

    def connect(self):
        self.tries.append(time.monotonic())
        return (self._refused if len(self.tries) <= 2 else self._answering).connect()
