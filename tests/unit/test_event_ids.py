"""Event ids of a job's event stream: derived from the record, ordered, resumable."""

from __future__ import annotations

import pytest

from api.job_events import EventId, events
from api.versions import Version


def job(status, attempts, progress=None):
    return {"id": "j", "status": status, "attempts": attempts, "progress": progress}


def attempt(number, status):
    return {"number": number, "status": status}


def test_an_id_reads_back_as_it_was_sent():
    for text in ("0.5.queued", "3.6", "2.3.a1b2c3d4"):
        assert str(EventId.parse(text)) == text


@pytest.mark.parametrize("text", ["", "1", "1.7", "a.1", "1.3.Tag", "1.3.", "1234567.1"])
def test_anything_else_is_not_an_id(text):
    with pytest.raises(ValueError):
        EventId.parse(text)


def test_a_later_stage_or_another_report_of_the_same_stage_comes_after():
    last = EventId.parse("2.3.aaaa")
    assert EventId.parse("2.4").after(last)
    assert EventId.parse("2.3.bbbb").after(last)
    assert EventId.parse("3.1").after(last)
    assert not EventId.parse("2.3.aaaa").after(last)
    assert not EventId.parse("2.2").after(last)
    assert not EventId.parse("1.6").after(last)


def test_a_version_shows_its_attempts_then_its_status_then_its_progress():
    version = Version.of(
        job("running", 2, {"current": 3, "total": 9, "message": None}),
        [attempt(1, "failed"), attempt(2, "running")],
    )
    shown = [
        (str(e.id).rsplit(".", 1)[0] if e.name == "progress" else str(e.id), e.name)
        for e in events(version)
    ]
    assert shown == [("1.4", "attempt"), ("2.1", "attempt"), ("2.2", "status"), ("2.3", "progress")]


def test_waiting_statuses_are_told_apart_and_a_terminal_one_ends_the_attempt():
    assert [str(e.id) for e in events(Version.of(job("retrying", 1), []))] == ["1.5.retrying"]
    assert [str(e.id) for e in events(Version.of(job("queued", 0), []))] == ["0.5.queued"]
    assert [str(e.id) for e in events(Version.of(job("dead", 4), []))] == ["4.6"]
