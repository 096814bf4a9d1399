"""When a schedule's occurrences fall: cron in wall-clock time across DST, intervals, jitter."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import takewhile

import pytest

from store.cadence import Cadence, CadenceError

SCHEDULE = uuid.UUID("0190a7c2-0000-7000-8000-000000000001")
OTHER = uuid.UUID("0190a7c2-0000-7000-8000-000000000002")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def until(end: datetime, occurrences: Iterator[datetime]) -> Iterator[datetime]:
    return takewhile(lambda o: o < end, occurrences)


BERLIN_0230 = Cadence.checked(cron="30 2 * * *", interval_s=None, timezone="Europe/Berlin")


def test_a_daily_0230_in_berlin_fires_at_0300_cest_once_on_the_spring_forward_day():
    # 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    day = list(until(utc(2026, 3, 30, 12), BERLIN_0230.occurrences_after(utc(2026, 3, 28, 12))))
    # 03:00 CEST that day, then 02:30 CEST the next.
    assert day == [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_a_daily_0230_in_berlin_fires_once_at_the_first_0230_on_the_fall_back_day():
    # 2026-10-25: clocks fall back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    day = list(until(utc(2026, 10, 26), BERLIN_0230.occurrences_after(utc(2026, 10, 24, 12))))
    assert day == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST; not again at 02:30 CET (01:30 UTC)


def test_a_daily_0230_in_berlin_is_0130_utc_in_winter_and_0030_utc_in_summer():
    assert BERLIN_0230.after(utc(2026, 1, 10)) == utc(2026, 1, 10, 1, 30)
    assert BERLIN_0230.after(utc(2026, 7, 10)) == utc(2026, 7, 10, 0, 30)


def test_intervals_are_aligned_to_the_epoch_whenever_asked():
    every_15_min = Cadence.checked(cron=None, interval_s=900, timezone="Europe/Berlin")
    assert every_15_min.after(utc(2026, 5, 1, 10, 7, 3)) == utc(2026, 5, 1, 10, 15)
    assert every_15_min.after(utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 10, 30)  # strictly after
    odd = Cadence.checked(cron=None, interval_s=7)
    t = odd.after(utc(2026, 5, 1))
    assert (t - utc(1970, 1, 1)).total_seconds() % 7 == 0
    assert t - utc(2026, 5, 1) <= timedelta(seconds=7)


def test_jitter_is_stable_per_schedule_and_occurrence_and_within_its_range():
    cadence = Cadence.checked(cron="0 3 * * *", interval_s=None, jitter_s=600)
    occurrences = [cadence.after(utc(2026, 1, d)) for d in range(1, 31)]
    jitters = [cadence.jitter(SCHEDULE, o) for o in occurrences]
    assert jitters == [cadence.jitter(SCHEDULE, o) for o in occurrences]  # stable
    assert all(timedelta(0) <= j < timedelta(seconds=600) for j in jitters)
    assert len(set(jitters)) > 25  # spread, not one offset for all
    others = [cadence.jitter(OTHER, o) for o in occurrences]
    assert others != jitters
    assert cadence.fire_at(SCHEDULE, occurrences[0]) == occurrences[0] + jitters[0]


def test_no_jitter_means_firing_at_the_occurrence():
    cadence = Cadence.checked(cron=None, interval_s=60)
    o = cadence.after(utc(2026, 1, 1))
    assert cadence.jitter(SCHEDULE, o) == timedelta(0)
    assert cadence.fire_at(SCHEDULE, o) == o


def test_next_runs_start_at_the_given_occurrence_and_apply_jitter_in_order():
    plain = Cadence.checked(cron=None, interval_s=60)
    first = utc(2026, 1, 1, 12)
    assert plain.next_runs(SCHEDULE, first, 3) == [first + timedelta(minutes=i) for i in range(3)]
    jittered = Cadence.checked(cron=None, interval_s=1, jitter_s=3600)
    runs = jittered.next_runs(SCHEDULE, first, 20)
    assert len(runs) == 20
    assert runs == sorted(runs)  # an occurrence never fires before an earlier one
    assert runs[0] == jittered.fire_at(SCHEDULE, first)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": None, "interval_s": None}, "cron"),
        ({"cron": "0 3 * * *", "interval_s": 60}, "cron"),
        ({"cron": None, "interval_s": 0}, "interval_s"),
        ({"cron": None, "interval_s": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": None, "interval_s": 60, "jitter_s": -1}, "jitter_s"),
        ({"cron": None, "interval_s": 60, "jitter_s": 3601}, "jitter_s"),
        ({"cron": "0 3 * *", "interval_s": None}, "cron"),
        ({"cron": "61 3 * * *", "interval_s": None}, "cron"),
        ({"cron": "0 0 30 2 *", "interval_s": None}, "cron"),  # 30 February never comes
    ],
)
def test_a_cadence_that_cannot_be_used_names_the_field_at_fault(fields, field):
    with pytest.raises(CadenceError) as raised:
        Cadence.checked(**fields)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


@pytest.mark.parametrize("name", ["localtime", "posixrules", "Factory", "posix/Europe/Paris"])
def test_a_host_dependent_zone_name_is_refused_as_no_iana_timezone(name):
    # tzdata lists `localtime` on Debian (the host's /etc/localtime), whatever that zone is.
    with pytest.raises(CadenceError) as raised:
        Cadence.checked(cron="0 3 * * *", interval_s=None, timezone=name)
    assert str(raised.value) == f"timezone: unknown IANA timezone {name!r}"
    paris = Cadence.checked(cron="0 3 * * *", interval_s=None, timezone="Europe/Paris")
    assert paris.timezone == "Europe/Paris"
