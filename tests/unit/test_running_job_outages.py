"""A job's own reads and writes while the database does not answer (an outage, a failover):
they cost the attempt nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from middleware.current_job import RunningJob
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


def test_a_checkpoint_the_database_does_not_answer_sees_no_cancel(job, caplog):
    job.checkpoint()
    assert "cancel not checked" in caplog.text
