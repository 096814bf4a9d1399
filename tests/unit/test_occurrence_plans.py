"""Which of a schedule's occurrences are due, missed or still to come, at a given time."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from store.cadence import Cadence
from store.occurrences import MAX_CRON_STEPS, MISSED_AFTER_S, Plan, plan_due

SCHEDULE = uuid.UUID("0190a7c2-0000-7000-8000-00000000000a")
NOW = datetime(2026, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def one_by_one(cadence: Cadence, first: datetime, missed: str, now: datetime) -> Plan:
    """The plan made the slow way: every occurrence visited, in order."""
    occurrences = cadence.occurrences_after(first - timedelta(microseconds=1))
    run, missed_ones = [], []
    fires = first
    for occurrence in occurrences:
        fires = max(cadence.fire_at(SCHEDULE, occurrence), fires)
        if fires > now:
            break
        if now - fires > timedelta(seconds=MISSED_AFTER_S):
            missed_ones.append(occurrence)
        else:
            run.append(occurrence)
    if missed == "once":
        return Plan(missed_ones[-1:] + run, 0, occurrence, fires)
    return Plan(run, len(missed_ones), occurrence, fires)


@pytest.mark.parametrize("missed", ["skip", "once"])
@pytest.mark.parametrize(
    ("interval_s", "jitter_s", "downtime"),
    [
        (1, 0, timedelta(hours=3)),
        (7, 0, timedelta(days=2)),
        (7, 100, timedelta(days=2)),
        (60, 3600, timedelta(days=1)),
        (3600, 0, timedelta(minutes=30)),
    ],
)
def test_counting_missed_interval_occurrences_agrees_with_visiting_each(
    interval_s, jitter_s, downtime, missed
):
    cadence = Cadence.checked(cron=None, interval_s=interval_s, jitter_s=jitter_s)
    first = cadence.after(NOW - downtime)
    assert plan_due(cadence, SCHEDULE, first=first, missed=missed, now=NOW) == one_by_one(
        cadence, first, missed, NOW
    )


@pytest.mark.parametrize("missed", ["skip", "once"])
def test_counting_missed_cron_occurrences_agrees_with_visiting_each(missed):
    cadence = Cadence.checked(cron="*/5 * * * *", interval_s=None, jitter_s=120)
    first = cadence.after(NOW - timedelta(days=3))
    assert plan_due(cadence, SCHEDULE, first=first, missed=missed, now=NOW) == one_by_one(
        cadence, first, missed, NOW
    )


def test_occurrences_less_than_a_minute_late_all_run_and_the_next_is_the_first_not_due():
    cadence = Cadence.checked(cron=None, interval_s=10)
    first = datetime(2026, 6, 1, 11, 59, 20, tzinfo=UTC)
    plan = plan_due(cadence, SCHEDULE, first=first, missed="skip", now=NOW)
    assert plan.run == [first + timedelta(seconds=10 * i) for i in range(5)]
    assert plan.missed_skipped == 0
    assert plan.next_occurrence == plan.next_fire_at == datetime(2026, 6, 1, 12, 0, 10, tzinfo=UTC)


def test_a_year_of_downtime_of_a_one_second_interval_is_planned_at_once():
    cadence = Cadence.checked(cron=None, interval_s=1)
    first = cadence.after(NOW - timedelta(days=365))
    began = time.perf_counter()
    skip = plan_due(cadence, SCHEDULE, first=first, missed="skip", now=NOW)
    once = plan_due(cadence, SCHEDULE, first=first, missed="once", now=NOW)
    assert time.perf_counter() - began < 1
    assert len(skip.run) == MISSED_AFTER_S  # 11:59:01 ... 12:00:00: at most a minute late
    assert skip.missed_skipped + len(skip.run) == 365 * 86400
    assert once.run == [skip.run[0] - timedelta(seconds=1), *skip.run]
    assert once.missed_skipped == 0


def test_a_cron_downtime_beyond_the_cap_still_runs_the_latest_missed_occurrence():
    cadence = Cadence.checked(cron="* * * * *", interval_s=None)
    first = cadence.after(NOW - timedelta(minutes=MAX_CRON_STEPS + 5000))
    plan = plan_due(cadence, SCHEDULE, first=first, missed="once", now=NOW)
    latest_missed = datetime(2026, 6, 1, 11, 59, tzinfo=UTC)  # 60.25 s late
    assert plan.run == [latest_missed, latest_missed + timedelta(minutes=1)]
    assert plan.next_occurrence == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)
    skip = plan_due(cadence, SCHEDULE, first=first, missed="skip", now=NOW)
    assert skip.missed_skipped >= MAX_CRON_STEPS


def test_an_occurrence_whose_jitter_is_still_ahead_is_not_due():
    cadence = Cadence.checked(cron=None, interval_s=3600, jitter_s=3600)
    occurrence = datetime(2026, 6, 1, 12, tzinfo=UTC)
    fires = cadence.fire_at(SCHEDULE, occurrence)
    before = plan_due(
        cadence, SCHEDULE, first=occurrence, missed="once", now=fires - timedelta(seconds=1)
    )
    at = plan_due(cadence, SCHEDULE, first=occurrence, missed="once", now=fires)
    assert before.run == [] and (before.next_occurrence, before.next_fire_at) == (occurrence, fires)
    assert at.run == [occurrence] and at.next_occurrence == occurrence + timedelta(hours=1)
